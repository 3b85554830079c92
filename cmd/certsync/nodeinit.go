package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"filippo.io/age"
	"github.com/urfave/cli/v2"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/atomicfile"
)

const (
	flagSSHHostKey = "ssh-host-key"
	// defaultNodeIdentity is where node init creates the node's age identity.
	defaultNodeIdentity = "/etc/certsync/node.key"
	// nodeInitDefaultsComment shows, in the node.yaml node init writes,
	// where the service's check and reload go.
	nodeInitDefaultsComment = `How each certificate goes into service (docs/INSTALL.md), for example:
defaults: {check: nginx -t, reload: systemctl reload nginx}`
)

func nodeInitCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "set up a new node: its identity and node.yaml; prints its line for publisher.yaml's nodes",
		Description: `Creates the node's age identity at --identity (default ` + defaultNodeIdentity + `;
0600, never overwritten: an existing one is used as it is), or uses the SSH
host key ` + sshHostKeyPath + ` with --ssh-host-key (never created), and
writes node.yaml (--config, else $CERTSYNC_CONFIG, else ` + DefaultNodeConfig + `;
never overwritten) to install each --certificate. It prints, alone on stdout,
the line to add under nodes in publisher.yaml ("web3: age1…"): on the
management host, certsync enroll --certificate NAME 'web3: age1…' adds it and
republishes. Missing folders are created 0700.`,
		ArgsUsage: " ",
		Flags: append([]cli.Flag{
			configFlag(DefaultNodeConfig),
			&cli.StringFlag{Name: flagIdentity, Usage: "the node's identity `FILE`, created when missing (default " + defaultNodeIdentity + ")"},
			&cli.BoolFlag{Name: flagSSHHostKey, Usage: "decrypt with the SSH host key " + sshHostKeyPath},
			&cli.StringSliceFlag{Name: flagCertificate, Usage: "a certificate `NAME` to install (repeat for several)"},
		}, nodeFileFlags("", "")...),
		Action: runNodeInit,
	}
}

func runNodeInit(c *cli.Context) error {
	if err := noArguments(c); err != nil {
		return err
	}
	o, err := nodeOptions(c)
	if err != nil {
		return err
	}
	if c.IsSet(flagIdentity) && c.Bool(flagSSHHostKey) {
		return errors.New("node init: --identity and --ssh-host-key exclude each other")
	}
	certs, err := certificateNames(c, "to install")
	if err != nil {
		return err
	}
	o.Certificates = certs
	o.Identity = c.String(flagIdentity)
	if c.Bool(flagSSHHostKey) {
		o.Identity = sshHostKeyPath
	} else if o.Identity == "" {
		o.Identity = defaultNodeIdentity
	}
	if o.Identity, err = filepath.Abs(o.Identity); err != nil {
		return fmt.Errorf("node init: --%s: %w", flagIdentity, err)
	}
	config := configPath(c.String(flagConfig), DefaultNodeConfig)
	if err := refuseExisting(config); err != nil {
		return err
	}
	o.Header = "Written by `certsync node init`."
	o.DefaultsComment = nodeInitDefaultsComment
	data, err := renderNodeFile(o)
	if err != nil {
		return fmt.Errorf("node init: %w", err)
	}
	recipient, err := nodeIdentity(o.Identity, !c.Bool(flagSSHHostKey))
	if err != nil {
		return keyHint(err)
	}
	if err := os.MkdirAll(filepath.Dir(config), 0o700); err != nil {
		return fmt.Errorf("creating folder of %q: %w", config, atomicfile.Cause(err))
	}
	if err := writeNewConfig(config, data); err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.App.Writer, "%s: %s\n", o.Name, recipient)
	return err
}

// nodeIdentity returns the recipient of the identity file at path; when
// the file is missing and create is set, it first creates a new age
// identity there (0600, as keygen node does).
func nodeIdentity(path string, create bool) (string, error) {
	data, err := crypto.ReadKeyFile(path)
	switch {
	case err == nil:
		r, err := crypto.IdentityRecipient(data)
		if err != nil {
			return "", fmt.Errorf("reading identity %q: %w", path, err)
		}
		return r, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", err
	case !create:
		return "", withHint(fmt.Errorf("reading SSH host key %q: %w", path, fs.ErrNotExist), "certsync never creates a host key: install openssh-server, or run ssh-keygen -A")
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return "", fmt.Errorf("generating node identity: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("creating folder of %q: %w", path, atomicfile.Cause(err))
	}
	if err := crypto.WriteKeyFile(path, ageIdentityFile(id)); err != nil {
		return "", err
	}
	return id.Recipient().String(), nil
}
