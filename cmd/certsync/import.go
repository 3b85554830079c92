package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/migrate"
	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/subscriber"
)

// Flags of import, node init and enroll.
const (
	flagLists            = "lists"
	flagKnownHosts       = "known-hosts"
	flagNATS             = "nats"
	flagSigningKey       = "signing-key"
	flagFullNames        = "full-names"
	flagList             = "list"
	flagTrustedPublisher = "trusted-publisher"
	flagIdentity         = "identity"
	flagStageDir         = "stage-dir"
	flagInstallParent    = "install-parent"
	flagCheck            = "check"
	flagReload           = "reload"
	flagCA               = "ca"
)

// Defaults of the files import writes: the old script's estate runs nginx
// and lets nodes decrypt with their SSH host key.
const (
	defaultImportNATS       = "nats://127.0.0.1:4222"
	defaultImportSigningKey = "/etc/certsync/signing.key"
	sshHostKeyPath          = "/etc/ssh/ssh_host_ed25519_key"
	defaultImportCheck      = "nginx -t"
	defaultImportReload     = "systemctl reload nginx"
	// configFileMode is the mode of the configuration files certsync
	// writes: they hold paths and public keys, never a secret.
	configFileMode fs.FileMode = 0o644
)

func importCommand() *cli.Command {
	return &cli.Command{
		Name:  "import",
		Usage: "migrate from the old rsync-and-cron script: publisher.yaml and node.yaml from its lists",
		Subcommands: []*cli.Command{
			{
				Name:  "seed",
				Usage: "write publisher.yaml from the per-certificate server lists and the servers' SSH host keys",
				Description: `Reads the old script's lists in --lists (one file per certificate, named
after it, listing one IP address or hostname per line; blank lines and '#'
comments ignored) and the servers' ssh-ed25519 host keys in --known-hosts (the
management host's known_hosts, hashed or not, or ssh-keyscan -t ed25519
output), and writes a complete publisher.yaml: one node per server, its
recipient the server's host key, so no node needs a new key.

Node names: an IPv4 address with '-' for '.' (192-0-2-10), an IPv6 address
as ip6- and its canonical form with '-' for ':', a hostname's first label
(web1.example.net -> web1; with --full-names web1-example-net). Two servers
with one name, or one host key, are refused.

A server with no ssh-ed25519 key is left out with a warning, and so is a
certificate left with no node. The file goes to --out (never overwritten) or
to stdout; the table of nodes goes to stdout, or to stderr when the file does.`,
				ArgsUsage: " ",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: flagLists, Usage: "`DIR` of the old script's per-certificate server lists"},
					&cli.StringFlag{Name: flagKnownHosts, Usage: "known_hosts `FILE` holding the servers' ssh-ed25519 host keys"},
					&cli.StringFlag{Name: flagOut, Aliases: []string{"o"}, Usage: "write publisher.yaml to `FILE` (never overwritten; default stdout)"},
					&cli.StringFlag{Name: flagNATS, Value: defaultImportNATS, Usage: "nats.url of the publisher: `URL`, several comma-separated"},
					&cli.StringFlag{Name: flagSigningKey, Value: defaultImportSigningKey, Usage: "signing_key: the `FILE` `certsync keygen signing` writes"},
					&cli.BoolFlag{Name: flagFullNames, Usage: "name nodes by their whole hostname, dots made '-'"},
				},
				Action: runImportSeed,
			},
			{
				Name:  "seed-node",
				Usage: "write a node's node.yaml from its old certificate list",
				Description: `Reads the node's old list of certificates to take from /certsync/live (one
name per line; blank lines and '#' comments ignored) and writes its
node.yaml: identity the SSH host key, stage_dir /certsync/live, each
certificate installed into /etc/letsencrypt/live/<name>, checked with nginx -t
and reloaded with systemctl reload nginx. Stop the old script on this node
before certsync runs with this file (docs/MIGRATION.md). The file goes to
--out (never overwritten) or to stdout.`,
				ArgsUsage: " ",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: flagList, Usage: "the node's old certificate list `FILE`"},
					&cli.StringFlag{Name: flagOut, Aliases: []string{"o"}, Usage: "write node.yaml to `FILE` (never overwritten; default stdout)"},
					&cli.StringFlag{Name: flagIdentity, Value: sshHostKeyPath, Usage: "identity: the node's private key `FILE`"},
				}, nodeFileFlags(defaultImportCheck, defaultImportReload)...),
				Action: runImportSeedNode,
			},
		},
	}
}

// nodeFileFlags are the flags of seed-node and node init that fill node.yaml.
func nodeFileFlags(check, reload string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: flagName, Usage: "the node's `NAME`, as under nodes in publisher.yaml"},
		&cli.StringFlag{Name: flagNATS, Usage: "nats.url: `URL` of the NATS servers, several comma-separated"},
		&cli.StringFlag{Name: flagTrustedPublisher, Usage: "the public key `LINE` `certsync keygen signing` printed"},
		&cli.StringFlag{Name: flagNKey, Usage: "nats.nkey: the node's nkey seed `FILE` from `certsync auth`"},
		&cli.StringFlag{Name: flagCA, Usage: "nats.tls.ca: the private CA `FILE` of the NATS servers"},
		&cli.StringFlag{Name: flagStageDir, Value: subscriber.DefaultStageDir, Usage: "stage_dir: `DIR` for staged bundles"},
		&cli.StringFlag{Name: flagInstallParent, Value: subscriber.DefaultInstallParent, Usage: "each certificate's install_dir is `DIR`/<name>"},
		&cli.StringFlag{Name: flagCheck, Value: check, Usage: "defaults.check: `COMMAND` that must pass before reload (empty: none)"},
		&cli.StringFlag{Name: flagReload, Value: reload, Usage: "defaults.reload: `COMMAND` that makes the service read the new files (empty: none)"},
	}
}

func runImportSeed(c *cli.Context) error {
	if err := noArguments(c); err != nil {
		return err
	}
	for _, f := range []string{flagLists, flagKnownHosts} {
		if err := requireFlag(c, f); err != nil {
			return err
		}
	}
	out := c.String(flagOut)
	if err := refuseExisting(out); err != nil {
		return err
	}
	lists, err := migrate.ReadLists(c.String(flagLists))
	if err != nil {
		return err
	}
	kh, err := migrate.ReadKnownHosts(c.String(flagKnownHosts))
	if err != nil {
		return err
	}
	seed, err := migrate.PlanSeed(lists, kh, migrate.SeedOptions{FullNames: c.Bool(flagFullNames)})
	if err != nil {
		return fmt.Errorf("import seed: %w", err)
	}
	data, err := seed.PublisherYAML(migrate.PublisherOptions{
		NATS:       c.String(flagNATS),
		SigningKey: c.String(flagSigningKey),
		Header: fmt.Sprintf("Written by `certsync import seed` from the lists in %s and the host keys in %s.\n"+
			"Each node's recipient is its SSH host key: the node decrypts with %s.", c.String(flagLists), c.String(flagKnownHosts), sshHostKeyPath),
	})
	if err != nil {
		return err
	}
	if _, err := parsePublisherFile(data); err != nil {
		return fmt.Errorf("import seed: the publisher.yaml it would write is invalid: %w", err)
	}
	stderr := c.App.ErrWriter
	for _, s := range seed.Skipped {
		have := "no host key"
		if len(s.Others) > 0 {
			have = "only " + strings.Join(s.Others, ", ")
		}
		fmt.Fprintf(stderr, "certsync: warning: server %q (%s) has no ssh-ed25519 host key in %q (%s): left out of %s; enroll it later with certsync node init and certsync enroll\n",
			s.Server.Host, s.From, c.String(flagKnownHosts), have, strings.Join(s.Certificates, ", "))
	}
	for _, name := range seed.Empty {
		fmt.Fprintf(stderr, "certsync: warning: certificate %q has no server with an ssh-ed25519 host key: left out of publisher.yaml\n", name)
	}
	table := c.App.Writer
	if out == "" {
		table = stderr
		if _, err := c.App.Writer.Write(data); err != nil {
			return err
		}
	} else if err := writeNewConfig(out, data); err != nil {
		return err
	}
	return printSeedTable(table, seed)
}

// printSeedTable prints the nodes made: name, server, certificates.
func printSeedTable(w io.Writer, seed *migrate.Seed) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSERVER\tCERTIFICATES")
	for _, n := range seed.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", n.Name, n.Server.Host, strings.Join(n.Certificates, ","))
	}
	return tw.Flush()
}

func runImportSeedNode(c *cli.Context) error {
	if err := noArguments(c); err != nil {
		return err
	}
	if err := requireFlag(c, flagList); err != nil {
		return err
	}
	o, err := nodeOptions(c)
	if err != nil {
		return err
	}
	out := c.String(flagOut)
	if err := refuseExisting(out); err != nil {
		return err
	}
	list := c.String(flagList)
	raw, err := migrate.ReadListFile(list)
	if err != nil {
		return err
	}
	entries, err := migrate.ParseCertList(list, raw)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return fmt.Errorf("import seed-node: %q lists no certificate", list)
	}
	for _, e := range entries {
		o.Certificates = append(o.Certificates, e.Value)
	}
	o.Identity = c.String(flagIdentity)
	o.Header = fmt.Sprintf("Written by `certsync import seed-node` from %s.", list)
	data, err := renderNodeFile(o)
	if err != nil {
		return fmt.Errorf("import seed-node: %w", err)
	}
	if out == "" {
		_, err := c.App.Writer.Write(data)
		return err
	}
	return writeNewConfig(out, data)
}

// nodeOptions checks the flags every node.yaml writer takes.
func nodeOptions(c *cli.Context) (migrate.NodeOptions, error) {
	for _, f := range []string{flagName, flagNATS, flagTrustedPublisher} {
		if err := requireFlag(c, f); err != nil {
			return migrate.NodeOptions{}, err
		}
	}
	cmd := strings.TrimPrefix(commandName(c), "certsync ")
	name := c.String(flagName)
	if err := wire.CheckNodeName(name); err != nil {
		return migrate.NodeOptions{}, fmt.Errorf("%s: --%s: %w", cmd, flagName, err)
	}
	tp := strings.TrimSpace(c.String(flagTrustedPublisher))
	if crypto.LooksLikePrivateKey(tp) {
		return migrate.NodeOptions{}, fmt.Errorf("%s: --%s: this is a private key: give the public key `certsync keygen signing` printed", cmd, flagTrustedPublisher)
	}
	if _, err := crypto.ParsePublicKey(tp); err != nil {
		return migrate.NodeOptions{}, fmt.Errorf("%s: --%s: %w", cmd, flagTrustedPublisher, err)
	}
	return migrate.NodeOptions{
		Name:             name,
		NATS:             c.String(flagNATS),
		TrustedPublisher: tp,
		NKey:             c.String(flagNKey),
		CA:               c.String(flagCA),
		StageDir:         c.String(flagStageDir),
		InstallParent:    c.String(flagInstallParent),
		Check:            c.String(flagCheck),
		Reload:           c.String(flagReload),
	}, nil
}

// renderNodeFile renders node.yaml and loads it with the real loader (all
// but the identity, which may not exist yet).
func renderNodeFile(o migrate.NodeOptions) ([]byte, error) {
	data, err := migrate.NodeYAML(o)
	if err != nil {
		return nil, err
	}
	if _, err := parseNodeFile(data); err != nil {
		return nil, fmt.Errorf("the node.yaml it would write is invalid: %w", err)
	}
	return data, nil
}

// refuseExisting refuses an --out or --config file that exists, before any
// work is done; writeNewConfig refuses it again when writing.
func refuseExisting(path string) error {
	if path == "" {
		return nil
	}
	if _, err := os.Lstat(path); err == nil {
		return withHint(fmt.Errorf("writing %q: refusing to overwrite: %w", path, fs.ErrExist),
			"certsync never overwrites a configuration file; move it away first if you really mean to replace it")
	}
	return nil
}

// writeNewConfig writes a new configuration file, never replacing one.
func writeNewConfig(path string, data []byte) error {
	err := migrate.WriteNewFile(path, data, configFileMode)
	if errors.Is(err, fs.ErrExist) {
		return withHint(err, "certsync never overwrites a configuration file; move it away first if you really mean to replace it")
	}
	return err
}
