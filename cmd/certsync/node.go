package main

import (
	"context"
	"fmt"
	"maps"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/certsync/certsync/subscriber"
)

const flagTimeout = "timeout"

func nodeCommand() *cli.Command {
	return &cli.Command{
		Name:  "node",
		Usage: "the node side: receive, verify, decrypt and stage certificates",
		Subcommands: []*cli.Command{
			nodeInitCommand(),
			{
				Name:  "run",
				Usage: "the node daemon: receive bundles as they are published, stage them, install them on schedule, report status",
				Description: `Holds the node's durable consumer and processes every bundle as it arrives:
verifies the signature, decrypts, refuses downgrades and foreign names, skips
superseded versions, and stages the newest in stage_dir. Installs each
certificate when its schedule says (check, reload, verify, roll back on
failure), sleeping in between. Reconnects on its own. SIGTERM or SIGINT stops
it cleanly, never in the middle of an install.

A bundle this node's clock says is expired, or not valid until more than 24h
ahead, is held back and tried again with a growing delay (up to 5m), never
refused for good: once the clock is right it is staged. A certificate not
valid yet is installed at its not-before (at once if the installed one has
expired). Under expiry_deadline a failed install is tried again, 1m doubling
to 1h, until it installs or a newer bundle arrives.`,
				ArgsUsage: " ",
				Flags:     []cli.Flag{configFlag(DefaultNodeConfig), verboseFlag()},
				Action:    runNode,
			},
			{
				Name:  "sync",
				Usage: "one pass for cron: receive all that is pending, stage it, install what is due, exit",
				Description: `Receives every bundle pending for this node, stages the newest of each
certificate, installs what its schedule says is due, and exits. It exits
non-zero if any bundle for this node was refused or failed (held back by the
node's clock included: it comes back on a later run), if any install failed,
or if NATS could not be reached within --timeout. A certificate not valid
yet is staged and installed by the first run at or after its not-before; a
warning names that time.`,
				ArgsUsage: " ",
				Flags: []cli.Flag{
					configFlag(DefaultNodeConfig),
					&cli.DurationFlag{Name: flagTimeout, Value: time.Minute, Usage: "give up after `DURATION`"},
					verboseFlag(),
				},
				Action: syncNode,
			},
			{
				Name:  "install",
				Usage: "install what is staged now, whatever the schedule",
				Description: `Installs the staged bundle of each named certificate (all of the node's
when none is named) into its install_dir now, whatever its schedule (even
before the certificate's not-before, with a warning), and tries again a
version whose install failed before: swap, check, reload,
verify, and roll back on failure. It needs no NATS; it then reports the
status records if NATS answers within a few seconds, and only warns if not.
It exits non-zero if a name is unknown or any install failed.`,
				ArgsUsage: "[NAME…]",
				Flags:     []cli.Flag{configFlag(DefaultNodeConfig), verboseFlag()},
				Action:    installNode,
			},
		},
	}
}

// statusReportTimeout bounds how long node install tries to report status.
const statusReportTimeout = 5 * time.Second

func newNode(c *cli.Context, daemon bool) (*subscriber.Node, error) {
	n, _, err := newNodeWithCertificates(c, daemon)
	return n, err
}

// newNodeWithCertificates is newNode that also returns the names of the
// node's certificates, for node sync's summary lines.
func newNodeWithCertificates(c *cli.Context, daemon bool) (*subscriber.Node, []string, error) {
	cfg, err := loadNodeConfig(configPath(c.String(flagConfig), DefaultNodeConfig))
	if err != nil {
		return nil, nil, err
	}
	cfg.Version = version
	n, err := subscriber.New(*cfg, newLogger(c, daemon))
	return n, slices.Collect(maps.Keys(cfg.Certificates)), err
}

func runNode(c *cli.Context) error {
	if err := noArguments(c); err != nil {
		return err
	}
	n, err := newNode(c, true)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return n.Run(ctx)
}

func syncNode(c *cli.Context) error {
	if err := noArguments(c); err != nil {
		return err
	}
	if err := positiveDurations(c, flagTimeout); err != nil {
		return err
	}
	n, names, err := newNodeWithCertificates(c, false)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Context, c.Duration(flagTimeout))
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	report, err := n.Sync(ctx)
	if err != nil {
		return err
	}
	syncSummary(summaryWriter(c), names, report)
	if err := report.Err(); err != nil {
		return fmt.Errorf("node sync: %w", err)
	}
	return nil
}

func installNode(c *cli.Context) error {
	n, err := newNode(c, false)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	report, err := n.Install(ctx, c.Args().Slice()...)
	if err != nil {
		return fmt.Errorf("node install: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statusReportTimeout)
	defer cancel()
	if err := n.ReportStatus(sctx); err != nil {
		fmt.Fprintf(c.App.ErrWriter, "certsync: warning: status not reported: %v\n", err)
	}
	if err := report.Err(); err != nil {
		return fmt.Errorf("node install: %w", err)
	}
	return nil
}
