package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/migrate"
)

func enrollCommand() *cli.Command {
	return &cli.Command{
		Name:  "enroll",
		Usage: "add a node to publisher.yaml (the line node init printed) and republish its certificates",
		Description: `Adds the line "certsync node init" printed on the node ("web3: age1…") under
nodes in publisher.yaml, and the node to each --certificate's list, keeping
every other byte of the file (comments, order, style). The new file must
load, signing key included, before it atomically replaces the old one (same
mode, owner and group). Then it reconciles those certificates as
"certsync republish NAME…" does: the node's consumer is created and each
certificate is sealed again to its nodes, the new one included.

It refuses a node name already under nodes, a recipient another node has, and
a certificate not under certificates (add a new certificate by hand). Run one
enroll at a time: a file changed meanwhile is refused, not overwritten.`,
		ArgsUsage: "'NAME: RECIPIENT'",
		Flags: []cli.Flag{
			configFlag(DefaultPublisherConfig),
			&cli.StringSliceFlag{Name: flagCertificate, Usage: "a certificate `NAME` the node gets (repeat for several)"},
			verboseFlag(),
		},
		Action: runEnroll,
	}
}

func runEnroll(c *cli.Context) error {
	if c.NArg() != 1 {
		return withHint(fmt.Errorf("enroll: want one argument, the line `certsync node init` printed, got %d", c.NArg()),
			"certsync enroll --certificate example.com 'web3: age1…'")
	}
	name, recipient, err := migrate.ParseNodeLine(c.Args().First())
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	certs, err := certificateNames(c, "the node gets")
	if err != nil {
		return err
	}
	path := configPath(c.String(flagConfig), DefaultPublisherConfig)
	old, err := readConfigFile(path)
	if err != nil {
		return err
	}
	if _, err := parsePublisherFile(old); err != nil {
		return fmt.Errorf("reading config %q: %w", path, err)
	}
	data, err := migrate.AddNode(old, name, recipient, certs)
	if err != nil {
		return fmt.Errorf("enrolling into %q: %w", path, err)
	}
	f, err := parsePublisherFile(data)
	if err != nil {
		return fmt.Errorf("enrolling into %q: the edited file would not load: %w", path, err)
	}
	cfg, err := withKey(path, f, crypto.LoadSigningKey, setSigningKey)
	if err != nil {
		return keyHint(err)
	}
	if err := migrate.ReplaceFile(path, data, old); err != nil {
		return err
	}
	p, progress, err := publisherWithProgress(c, cfg)
	if err != nil {
		return err
	}
	report, err := p.Republish(c.Context, certs)
	progress.finish(err)
	log := newLogger(c, false)
	for _, r := range report.Results {
		log.Info("republish_result", "name", r.Name, "action", r.Action, "seq", r.Sequence)
	}
	if err != nil {
		return withHint(fmt.Errorf("enroll: %q now lists node %q, but republishing failed: %w", path, name, err),
			"the file is kept; certsync republish (run by its timer) finishes the job once the cause is fixed")
	}
	return nil
}
