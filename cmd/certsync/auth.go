package main

import (
	"errors"
	"slices"

	"github.com/urfave/cli/v2"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/authconf"
)

func authCommand() *cli.Command {
	return &cli.Command{
		Name:  "auth",
		Usage: "write least-privilege NATS credentials: an nkey per node, the publisher, an admin and the leaf link, and auth.conf",
		Description: `Reads publisher.yaml (never the signing key) and writes into --out:
  <node>.nk      one nkey seed per node under nodes:, for node.yaml's nats.nkey
  publisher.nk   the publisher's, for publisher.yaml's nats.nkey
  admin.nk       everything in the account, for an operator: nats --nkey admin.nk …
  leaf.nk        the leaf link of a leaf server at a remote site (deploy/nats/leaf)
  auth.conf      the nats-server fragment (account CERTSYNC with JetStream, one user
                 per key with its permissions) to include from the server's configuration
  leaf-auth.conf the fragment of a leaf server: the nodes' users, their JetStream
                 requests mapped to the hub's domain, and leaf.nk's seed (0600)
Seed files are created 0600 and kept when they exist, so run it again after
nodes change, then reload the server: a removed node loses its access, and
its seed file is reported. Each node may read only its own consumer and its
own status keys; the publisher may not create or change the stream and the
status bucket, so once the server runs auth.conf, set them up with the admin's
credential: certsync setup --nkey DIR/admin.nk. See docs/SECURITY.md.`,
		ArgsUsage: " ",
		Flags: []cli.Flag{
			configFlag(DefaultPublisherConfig),
			&cli.StringFlag{Name: flagOut, Aliases: []string{"o"}, Usage: "credentials `DIR` (created 0700 when missing)"},
			verboseFlag(),
		},
		Action: runAuth,
	}
}

func runAuth(c *cli.Context) error {
	if err := noArguments(c); err != nil {
		return err
	}
	if err := requireFlag(c, flagOut); err != nil {
		return err
	}
	cfg, err := loadPublisherConfigWithoutKey(configPath(c.String(flagConfig), DefaultPublisherConfig))
	if err != nil {
		return err
	}
	nodes := make([]string, 0, len(cfg.Nodes))
	for n := range cfg.Nodes {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	log := newLogger(c, false)
	res, err := authconf.Write(authconf.Config{Dir: c.String(flagOut), Nodes: nodes}, log)
	if err == nil {
		authSummary(summaryWriter(c), res)
	}
	switch {
	case errors.Is(err, crypto.ErrKeyPermissions):
		return withHint(err, "a seed file must be readable by its owner only: chmod 600 FILE")
	case errors.Is(err, authconf.ErrReservedName):
		return withHint(err, "publisher.nk, admin.nk and leaf.nk are taken: give the node another name in publisher.yaml and its node.yaml")
	}
	return err
}
