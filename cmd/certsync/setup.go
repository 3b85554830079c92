package main

import (
	"errors"

	"github.com/urfave/cli/v2"

	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/publisher"
)

const (
	flagCreds = "creds"

	// adminNKeyEnv and adminCredsEnv name the admin's credential for
	// setup, like --nkey and --creds.
	adminNKeyEnv  = "CERTSYNC_ADMIN_NKEY"
	adminCredsEnv = "CERTSYNC_ADMIN_CREDS"
)

func setupCommand() *cli.Command {
	return &cli.Command{
		Name:  "setup",
		Usage: "create or upgrade the CERTSYNC stream and the certsync-status bucket (with the admin credential)",
		Description: `Creates the stream CERTSYNC and the status bucket certsync-status with
certsync's settings, or upgrades existing ones: purges, message deletes and
roll-ups are refused from then on (the server never lets these protections be
turned off again), and history, replicas and duplicate window follow
publisher.yaml. A stream with sources, a mirror, republish, a subject
transform, message schedules or subject delete markers is refused, naming
them, and left as it is.

Under least privilege (certsync auth) the publisher may not create or update
either, so run this once with the admin's credential before the first
publish, and again after changing stream: in publisher.yaml:
  certsync setup --nkey /etc/certsync/nats-auth/admin.nk
--nkey or --creds replaces the credential of publisher.yaml's nats: block;
its URL and TLS settings are kept. On a server without permissions, publish
creates and upgrades them itself.`,
		ArgsUsage: " ",
		Flags: []cli.Flag{
			configFlag(DefaultPublisherConfig),
			&cli.StringFlag{Name: flagNKey, Usage: "the admin's nkey seed `FILE` (certsync auth's admin.nk)", EnvVars: []string{adminNKeyEnv}},
			&cli.StringFlag{Name: flagCreds, Usage: "the admin's JWT credentials `FILE`", EnvVars: []string{adminCredsEnv}},
			verboseFlag(),
		},
		Action: runSetup,
	}
}

func runSetup(c *cli.Context) error {
	if err := noArguments(c); err != nil {
		return err
	}
	if c.String(flagNKey) != "" && c.String(flagCreds) != "" {
		return errors.New("setup: --nkey and --creds exclude each other")
	}
	cfg, err := loadPublisherConfigWithoutKey(configPath(c.String(flagConfig), DefaultPublisherConfig))
	if err != nil {
		return err
	}
	if nk, creds := c.String(flagNKey), c.String(flagCreds); nk != "" || creds != "" {
		// The admin's credential in place of publisher.yaml's, and the
		// client's default inbox: the publisher's is for the publisher.
		cfg.NATS.NKey, cfg.NATS.Creds = nk, creds
		cfg.NATS.User, cfg.NATS.Password = "", ""
		cfg.NATS.InboxPrefix = wire.AdminInboxPrefix
	}
	p, err := publisher.New(*cfg, newLogger(c, false))
	if err != nil {
		return err
	}
	return setupHint(p.Setup(c.Context))
}

// setupHint adds the cure to a stream or bucket setup could not fix.
func setupHint(err error) error {
	switch {
	case errors.Is(err, publisher.ErrRefusedSettings):
		return withHint(err, "look at who added them (nats stream info NAME, as the admin): they can copy messages into the status bucket or out of the stream; remove them (nats stream edit NAME), then run certsync setup again")
	case errors.Is(err, publisher.ErrNotSetUp):
		return withHint(err, "only the admin may create and upgrade the stream and the bucket: certsync setup --nkey /etc/certsync/nats-auth/admin.nk")
	}
	return err
}
