package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/publisher"
)

const (
	flagForce   = "force"
	flagLineage = "lineage"
	flagName    = "name"
	flagCert    = "cert"
	flagKey     = "key"
	flagChain   = "chain"

	// lineageEnv is set by certbot for its deploy hooks.
	lineageEnv = "RENEWED_LINEAGE"
)

func publishCommand() *cli.Command {
	return &cli.Command{
		Name:  "publish",
		Usage: "sign, seal and publish a certificate to its nodes (certbot's --deploy-hook)",
		Description: `Reads a certbot lineage (--lineage, default $RENEWED_LINEAGE, which certbot
sets for its deploy hooks) or explicit PEM files (--cert, --key, --chain),
validates it, signs it, encrypts it to the nodes configured for it, and
publishes it. Publishing the same certificate to the same nodes again does
nothing. If NATS cannot be reached within the configured timeout, publish
fails, and "certsync republish" publishes it later.`,
		ArgsUsage: " ",
		Flags: []cli.Flag{
			configFlag(DefaultPublisherConfig),
			&cli.StringFlag{Name: flagLineage, Usage: "certbot lineage `DIR` (default $" + lineageEnv + ")"},
			&cli.StringFlag{Name: flagName, Usage: "certificate `NAME` (default: the lineage folder's name)"},
			&cli.StringFlag{Name: flagCert, Usage: "certificate PEM `FILE` (instead of a lineage)"},
			&cli.StringFlag{Name: flagKey, Usage: "private key PEM `FILE` (with --cert)"},
			&cli.StringFlag{Name: flagChain, Usage: "chain PEM `FILE` (with --cert; default: the certificates after the first in --cert)"},
			verboseFlag(),
		},
		Action: runPublish,
	}
}

func runPublish(c *cli.Context) error {
	if err := noArguments(c); err != nil {
		return err
	}
	b, err := readBundle(c)
	if err != nil {
		return err
	}
	p, progress, err := newPublisherWithProgress(c)
	if err != nil {
		return err
	}
	res, err := p.Publish(c.Context, b)
	progress.finish(err)
	if err != nil {
		return publishHint(err)
	}
	newLogger(c, false).Info("publish_done", "name", res.Name, "action", res.Action, "seq", res.Sequence)
	publishSummary(summaryWriter(c), *res)
	return nil
}

// readBundle reads the bundle to publish from a lineage or explicit files,
// refusing a mix of both.
func readBundle(c *cli.Context) (*crypto.Bundle, error) {
	explicit := c.String(flagCert) != "" || c.String(flagKey) != "" || c.String(flagChain) != ""
	if explicit {
		if c.String(flagLineage) != "" {
			return nil, errors.New("publish: --lineage and --cert/--key/--chain exclude each other")
		}
		if c.String(flagCert) == "" || c.String(flagKey) == "" {
			return nil, errors.New("publish: --cert and --key go together")
		}
		if c.String(flagName) == "" {
			return nil, errors.New("publish: --cert needs --name")
		}
		return publisher.ReadFiles(c.String(flagName), c.String(flagCert), c.String(flagKey), c.String(flagChain))
	}
	dir := c.String(flagLineage)
	if dir == "" {
		dir = os.Getenv(lineageEnv)
	}
	if dir == "" {
		return nil, withHint(errors.New("publish: no lineage: set --lineage, or $"+lineageEnv+" as certbot does"),
			"as certbot's hook: certbot renew --deploy-hook 'certsync publish'; by hand: certsync publish --lineage /etc/letsencrypt/live/NAME")
	}
	return publisher.ReadLineage(dir, c.String(flagName))
}

func newPublisher(c *cli.Context) (*publisher.Publisher, error) {
	cfg, err := loadPublisherConfig(configPath(c.String(flagConfig), DefaultPublisherConfig))
	if err != nil {
		return nil, err
	}
	return publisher.New(*cfg, newLogger(c, false))
}

// newPublisherWithProgress is newPublisher for the commands whose consumer
// work grows with the fleet (publish, republish, rollback, enroll): it
// shows its progress (progress.go).
func newPublisherWithProgress(c *cli.Context) (*publisher.Publisher, *progressView, error) {
	cfg, err := loadPublisherConfig(configPath(c.String(flagConfig), DefaultPublisherConfig))
	if err != nil {
		return nil, nil, err
	}
	return publisherWithProgress(c, cfg)
}

// publisherWithProgress is the Publisher of cfg reporting its consumer
// work to a progress view; the publisher logs through the view, so that no
// log line lands on the progress line. The caller ends it with finish.
func publisherWithProgress(c *cli.Context, cfg *publisher.Config) (*publisher.Publisher, *progressView, error) {
	view := newProgressView(c.App.ErrWriter, c.Bool(flagVerbose))
	cfg.Progress = view.report
	p, err := publisher.New(*cfg, makeLogger(view, false, c.Bool(flagVerbose)))
	return p, view, err
}

// newReadOnlyPublisher is a Publisher for the commands that only read the
// stream and the bucket: the configuration is loaded without the signing
// key, so they run where the key is not readable.
func newReadOnlyPublisher(c *cli.Context) (*publisher.Publisher, error) {
	cfg, err := loadPublisherConfigWithoutKey(configPath(c.String(flagConfig), DefaultPublisherConfig))
	if err != nil {
		return nil, err
	}
	return publisher.New(*cfg, newLogger(c, false))
}

// keyHint adds the cure to a key file others may read, naming the file,
// unless the error already carries hints. run applies it to every
// command's error, whichever key file (signing key, identity, NATS seed,
// creds or TLS key) was refused.
func keyHint(err error) error {
	var he *hintError
	var kpe *crypto.KeyPermissionsError
	switch {
	case errors.As(err, &he):
		return err
	case errors.As(err, &kpe):
		return withHint(err, "a key file must be readable by its owner only: chmod 600 %s", kpe.Path)
	case errors.Is(err, crypto.ErrKeyPermissions):
		return withHint(err, "a key file must be readable by its owner only: chmod 600 FILE")
	}
	return err
}

func publishHint(err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return withHint(err, "the certificate is not lost: once NATS is reachable, `certsync republish` (run by its timer) publishes it")
	case errors.Is(err, publisher.ErrUnknownCertificate):
		return withHint(err, "list the certificate and its nodes under certificates: in publisher.yaml")
	case errors.Is(err, publisher.ErrNotSetUp), errors.Is(err, publisher.ErrRefusedSettings):
		return setupHint(err)
	}
	return err
}

func republishCommand() *cli.Command {
	return &cli.Command{
		Name:  "republish",
		Usage: "reconcile: publish each certificate whose lineage or recipients changed",
		Description: `For each configured certificate (or the named ones) reads its lineage under
"lineages" and publishes it again when the stream's newest bundle holds another
certificate or was sealed to other nodes. It also brings every node's consumer
in line with the configuration. Run it from a timer: certbot exits 0 even when
its deploy hook failed, and this pass is what makes every renewal reach the
fleet. When a node was removed, it names the certificates that node may hold:
reissue them.

--force seals and publishes the newest bundle of each (or the named)
certificate even when nothing changed: every node of it receives a fresh
message. Nodes that hold it change nothing; a node that refused or lost the
earlier message (say it did not trust the signing key yet) gets it again.
It is the way out of any stuck node.`,
		ArgsUsage: "[NAME…]",
		Flags: []cli.Flag{
			configFlag(DefaultPublisherConfig),
			&cli.BoolFlag{Name: flagForce, Usage: "seal and publish again even when nothing changed"},
			verboseFlag(),
		},
		Action: func(c *cli.Context) error {
			p, progress, err := newPublisherWithProgress(c)
			if err != nil {
				return err
			}
			var opts []publisher.RepublishOption
			if c.Bool(flagForce) {
				opts = append(opts, publisher.Force())
			}
			report, err := p.Republish(c.Context, c.Args().Slice(), opts...)
			progress.finish(err)
			log := newLogger(c, false)
			summary := summaryWriter(c)
			for _, r := range report.Results {
				log.Info("republish_result", "name", r.Name, "action", r.Action, "seq", r.Sequence)
				publishSummary(summary, r)
			}
			for _, d := range report.Dropped {
				// The operator must act on this, so it is said even on success.
				what := "no longer receives"
				if d.Removed {
					what = "was removed; it may hold"
				}
				fmt.Fprintf(c.App.ErrWriter, "certsync: warning: node %q %s %s: reissue them (certbot renew --force-renewal --cert-name NAME)\n",
					d.Node, what, strings.Join(d.Certificates, ", "))
			}
			return publishHint(err)
		},
	}
}
