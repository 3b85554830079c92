package main

// Staged rollouts: `certsync rollout run|status|promote|pause|resume|abort`,
// `certsync rollback` and `certsync plan`. The work is the publisher's
// (publisher/rollout.go, plan.go, rollback.go); these only map flags and
// print.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/certsync/certsync/publisher"
)

const (
	flagInterval = "interval"
	flagOnce     = "once"
	flagTo       = "to"

	// defaultRolloutInterval is how often `rollout run` looks at the fleet.
	defaultRolloutInterval = 30 * time.Second
)

func rolloutCommand() *cli.Command {
	nameCommand := func(name, usage, desc string, act func(p *publisher.Publisher, ctx context.Context, name string) (*publisher.RolloutView, error)) *cli.Command {
		return &cli.Command{
			Name:        name,
			Usage:       usage,
			Description: desc,
			ArgsUsage:   "NAME",
			Flags:       []cli.Flag{configFlag(DefaultPublisherConfig), verboseFlag()},
			Action: func(c *cli.Context) error {
				if err := oneName(c, "rollout "+name); err != nil {
					return err
				}
				p, err := newPublisher(c)
				if err != nil {
					return err
				}
				v, err := act(p, c.Context, c.Args().First())
				if err != nil {
					return rolloutHint(err)
				}
				summaryLine(summaryWriter(c), v.Name, "%s", rolloutLine(v))
				return nil
			},
		}
	}
	return &cli.Command{
		Name:  "rollout",
		Usage: "staged rollouts: the controller, where each stands, and the operator's commands",
		Description: `A certificate with a rollout policy (rollout: in publisher.yaml) is staged on
every node at once and goes into service canaries first, then wave by wave,
each released by a record signed with the publisher's key once the wave
before has soaked; more failed nodes than max_failures halt it.
"rollout run" is the controller (certsync-rollout.service); the other
commands are the operator's. docs/OPERATIONS.md, "Rollouts", explains them.`,
		Subcommands: []*cli.Command{
			{
				Name:  "run",
				Usage: "the controller: advance every rollout from the nodes' status records, until stopped",
				Description: `Every --interval, reads each certificate's newest bundle, its rollout record
and its nodes' status records, and writes a new signed rollout record when
the rollout starts, a wave is released, it halts or it completes. Transient
NATS errors are logged and tried again at the next interval. --once does one
pass and exits (non-zero if it failed).`,
				ArgsUsage: " ",
				Flags: []cli.Flag{
					configFlag(DefaultPublisherConfig),
					&cli.DurationFlag{Name: flagInterval, Value: defaultRolloutInterval, Usage: "look at the fleet every `DURATION`"},
					&cli.BoolFlag{Name: flagOnce, Usage: "one pass, then exit"},
					verboseFlag(),
				},
				Action: runRolloutRun,
			},
			{
				Name:  "status",
				Usage: "where each rollout stands; exits 1 when one is halted",
				Description: `For each named certificate with a rollout policy (all of them when none is
named): the newest bundle's version, serial and fingerprint, the rollout's
state (pending, running, paused, halted, complete, aborted, or none when the
newest bundle is not held) and why, and per wave its nodes and how many
installed, verified, failed, are in flight and wait. --json prints an array
of objects (name, version, fingerprint, serial, hold, state, reason,
generation, wave, wave_started, updated, waves: [{wave, released, nodes:
[{node, outcome, why, verified}], installed, verified, failed, in_flight,
waiting}]).`,
				ArgsUsage: "[NAME...]",
				Flags: []cli.Flag{
					configFlag(DefaultPublisherConfig),
					jsonFlag(),
					verboseFlag(),
				},
				Action: runRolloutStatus,
			},
			nameCommand("promote", "release the next wave now, whatever the soak",
				`Releases the next wave of NAME's rollout at once (starting it when the
controller has not yet); after the last wave, completes it. A halted rollout
is resumed first ("rollout resume").`, (*publisher.Publisher).Promote),
			nameCommand("pause", "release no further wave until resumed",
				`Nodes already released go on installing; no further wave is released.`, (*publisher.Publisher).Pause),
			nameCommand("resume", "go on after a pause or a halt",
				`A paused or halted rollout runs again: a node whose install failed tries
again (the resume is a new generation of the rollout record), and each
wave's deadline starts again from now.`, (*publisher.Publisher).Resume),
			nameCommand("abort", "stop the rollout and put the previous certificate back on every node",
				`No further node installs the newest certificate; the previous one is
published again at once (no waves, with a new version, the aborted one
withdrawn), so every node that installed the aborted one goes back to it.
The previous certificate comes from certbot's archive, as for "rollback".`, (*publisher.Publisher).Abort),
		},
	}
}

func runRolloutRun(c *cli.Context) error {
	if err := noArguments(c); err != nil {
		return err
	}
	if err := positiveDurations(c, flagInterval); err != nil {
		return err
	}
	cfg, err := loadPublisherConfig(configPath(c.String(flagConfig), DefaultPublisherConfig))
	if err != nil {
		return err
	}
	p, err := publisher.New(*cfg, newLogger(c, !c.Bool(flagOnce)))
	if err != nil {
		return err
	}
	if c.Bool(flagOnce) {
		changes, err := p.RolloutStep(c.Context)
		for _, ch := range changes {
			summaryLine(summaryWriter(c), ch.Name, "rollout %s: %s, wave %d, generation %d", ch.Event, ch.State, ch.Wave, ch.Generation)
		}
		if err != nil {
			return rolloutHint(err)
		}
		return nil
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return p.RolloutRun(ctx, c.Duration(flagInterval))
}

func runRolloutStatus(c *cli.Context) error {
	p, err := newPublisher(c)
	if err != nil {
		return err
	}
	views, err := p.Rollouts(c.Context, c.Args().Slice()...)
	if err != nil {
		return rolloutHint(err)
	}
	if c.Bool(flagJSON) {
		err = writeJSON(c.App.Writer, views)
	} else {
		err = printRollouts(c.App.Writer, views)
	}
	if err != nil {
		return fmt.Errorf("rollout status: writing: %w", err)
	}
	var halted []string
	for _, v := range views {
		if v.Halted() {
			halted = append(halted, v.Name+" ("+v.Reason+")")
		}
	}
	if len(halted) > 0 {
		fmt.Fprintf(c.App.ErrWriter, "certsync: error: rollout status: %d halted: %s\n", len(halted), strings.Join(halted, "; "))
		return exitStatus(1)
	}
	return nil
}

// rolloutLine says where a rollout stands in one line.
func rolloutLine(v *publisher.RolloutView) string {
	s := fmt.Sprintf("rollout %s", v.State)
	if v.Version != 0 {
		s += fmt.Sprintf(", version %d, serial %s, %s", v.Version, v.Serial, v.Fingerprint.Short(16))
	}
	if v.Generation != 0 {
		s += fmt.Sprintf(", wave %d, generation %d", v.Wave, v.Generation)
	}
	if v.Reason != "" {
		s += ": " + v.Reason
	}
	return s
}

// printRollouts writes each rollout, then a table of its waves.
func printRollouts(w io.Writer, views []publisher.RolloutView) error {
	for i, v := range views {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s: %s\n", v.Name, rolloutLine(&v))
		if len(v.Waves) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "WAVE\tRELEASED\tINSTALLED\tVERIFIED\tFAILED\tIN FLIGHT\tWAITING\tNODES")
		for _, wv := range v.Waves {
			var nodes []string
			for _, n := range wv.Nodes {
				text := n.Node + "=" + n.Outcome
				if n.Why != "" {
					text += " (" + n.Why + ")"
				}
				nodes = append(nodes, text)
			}
			wave := fmt.Sprint(wv.Wave)
			if wv.Wave == 0 {
				wave = "canary"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", wave, yesNo(wv.Released), wv.Installed, wv.Verified, wv.Failed, wv.InFlight, wv.Waiting, strings.Join(nodes, ", "))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// rolloutHint adds the cure to the errors an operator can act on.
func rolloutHint(err error) error {
	switch {
	case errors.Is(err, publisher.ErrNoPolicy):
		return withHint(err, "give the certificate a rollout: policy in publisher.yaml (docs/CONTRACT.md, Configuration)")
	case errors.Is(err, publisher.ErrNotSetUp):
		return withHint(err, "run certsync setup with the admin's credential once, so the stream holds the rollout records")
	}
	return publishHint(err)
}

func rollbackCommand() *cli.Command {
	return &cli.Command{
		Name:  "rollback",
		Usage: "put an earlier certificate back into service across the fleet, through its rollout policy",
		Description: `Publishes the previous certificate of NAME (or, with --to, the one with that
serial, lowercase hex as "inspect" shows it) again, from certbot's archive
(the lineage's cert.pem links into <lineages>/../archive/NAME/), with a new
version: nodes accept it although it is older, and refuse any replay of the
certificate it replaces, which is withdrawn: republish never puts it back.
With a rollout policy it goes through the canaries and waves; the next
renewal rolls out normally.`,
		ArgsUsage: "NAME",
		Flags: []cli.Flag{
			configFlag(DefaultPublisherConfig),
			&cli.StringFlag{Name: flagTo, Usage: "the archived certificate's `SERIAL` (default: the previous one)"},
			verboseFlag(),
		},
		Action: func(c *cli.Context) error {
			name, to, err := rollbackArgs(c)
			if err != nil {
				return err
			}
			p, progress, err := newPublisherWithProgress(c)
			if err != nil {
				return err
			}
			res, err := p.Rollback(c.Context, name, publisher.RollbackOptions{ToSerial: strings.ToLower(to)})
			progress.finish(err)
			if err != nil {
				return rolloutHint(err)
			}
			newLogger(c, false).Info("rollback_done", "name", res.Name, "action", res.Action, "seq", res.Sequence)
			publishSummary(summaryWriter(c), *res)
			return nil
		},
	}
}

func planCommand() *cli.Command {
	return &cli.Command{
		Name:  "plan",
		Usage: "what each node would do with the newest bundle; exits 1 when a node cannot take it",
		Description: `For each named certificate (all when none is named) and each of its nodes:
nothing (already installed), install now, install at TIME (its window), wait
for wave N (held for a rollout; 0 is the canaries), stage only (a manual
schedule), hold (its install of this version failed), or why it cannot take
it: not a recipient (sealed before it was added: run republish), stale (no
report for --stale-after), missing (never reported), halted (the rollout
halted). From the nodes' status records and the newest bundle's signed
header; it changes nothing. --json prints an array (certificate, node,
version, fingerprint, serial, hold, rollout, action, at, wave, can_take,
why).`,
		ArgsUsage: "[NAME...]",
		Flags: []cli.Flag{
			configFlag(DefaultPublisherConfig),
			jsonFlag(),
			staleAfterFlag(),
			verboseFlag(),
		},
		Action: runPlan,
	}
}

func runPlan(c *cli.Context) error {
	if err := positiveDurations(c, flagStaleAfter); err != nil {
		return err
	}
	p, err := newPublisher(c)
	if err != nil {
		return err
	}
	rows, err := p.Plan(c.Context, publisher.PlanOptions{StaleAfter: c.Duration(flagStaleAfter)}, c.Args().Slice()...)
	if err != nil {
		return rolloutHint(err)
	}
	if c.Bool(flagJSON) {
		err = writeJSON(c.App.Writer, rows)
	} else {
		tw := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "CERTIFICATE\tNODE\tSERIAL\tPLAN\tWHY")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Certificate, r.Node, dash(r.Serial), r.Text(), dash(r.Why))
		}
		err = tw.Flush()
	}
	if err != nil {
		return fmt.Errorf("plan: writing: %w", err)
	}
	var cannot []string
	for _, r := range rows {
		if !r.CanTake {
			cannot = append(cannot, r.Node+"/"+r.Certificate+" "+r.Text())
		}
	}
	if len(cannot) > 0 {
		fmt.Fprintf(c.App.ErrWriter, "certsync: error: plan: %d of %d cannot take the newest bundle: %s\n", len(cannot), len(rows), publisher.FirstNames(cannot, 5, "; "))
		return exitStatus(1)
	}
	return nil
}

// rollbackArgs returns rollback's certificate name and --to serial. The
// command line stops reading flags at the first argument, so --to written
// after the name, as `certsync rollback NAME --to SERIAL` (the way the
// docs and the publisher's hints write it), arrives as arguments: it is
// read here; any other flag after the name is refused by oneName.
func rollbackArgs(c *cli.Context) (name, to string, err error) {
	args, to := c.Args().Slice(), c.String(flagTo)
	after := ""
	switch {
	case len(args) == 3 && (args[1] == "--"+flagTo || args[1] == "-"+flagTo):
		after = args[2]
	case len(args) == 2 && (strings.HasPrefix(args[1], "--"+flagTo+"=") || strings.HasPrefix(args[1], "-"+flagTo+"=")):
		_, after, _ = strings.Cut(args[1], "=")
	}
	if after != "" {
		if c.IsSet(flagTo) {
			return "", "", errors.New("rollback: --to given twice")
		}
		args, to = args[:1], after
	}
	if len(args) != 1 || strings.HasPrefix(args[0], "-") {
		return "", "", oneName(c, "rollback")
	}
	return args[0], to, nil
}

// oneName checks that c has exactly one argument, a certificate name. The
// command line stops reading flags at the first argument, so a flag
// written after the name arrives as an argument: say where it goes.
func oneName(c *cli.Context, cmd string) error {
	for _, a := range c.Args().Slice()[min(1, c.NArg()):] {
		if strings.HasPrefix(a, "-") {
			return withHint(fmt.Errorf("%s: flag %q after the certificate name", cmd, a), "flags go before the name: certsync %s %s NAME", cmd, strings.Join(c.Args().Slice()[1:], " "))
		}
	}
	if c.NArg() != 1 {
		return fmt.Errorf("%s: want one certificate NAME, got %d arguments", cmd, c.NArg())
	}
	return nil
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
