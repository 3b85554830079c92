package main

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"filippo.io/age"
	"github.com/urfave/cli/v2"

	"github.com/certsync/certsync/crypto"
)

// flagPublic is keygen signing's --public FILE.
const flagPublic = "public"

func keygenCommand() *cli.Command {
	out := func() cli.Flag {
		return &cli.StringFlag{Name: flagOut, Aliases: []string{"o"}, Usage: "write the private key to `FILE` (created 0600, never overwritten)"}
	}
	return &cli.Command{
		Name:  "keygen",
		Usage: "create a node identity or a signing key",
		Subcommands: []*cli.Command{
			{
				Name:      "node",
				Usage:     "create a node's age X25519 identity; prints its recipient (age1…)",
				ArgsUsage: " ",
				Flags:     []cli.Flag{out()},
				Action: func(c *cli.Context) error {
					if err := noArguments(c); err != nil {
						return err
					}
					id, err := age.GenerateX25519Identity()
					if err != nil {
						return fmt.Errorf("generating node identity: %w", err)
					}
					if err := writeKey(c, ageIdentityFile(id)); err != nil {
						return err
					}
					_, err = fmt.Fprintln(c.App.Writer, id.Recipient())
					return err
				},
			},
			{
				Name:  "signing",
				Usage: "create the publisher's Ed25519 signing key; prints the public key for trusted_publishers",
				Description: `With --out, creates a new signing key (0600, never overwriting a file) and
prints its public key, the line nodes list in trusted_publishers. With
--public FILE instead, prints that line again for an existing key, read with
the same checks as publish (a key others may read is refused).`,
				ArgsUsage: " ",
				Flags: []cli.Flag{
					out(),
					&cli.StringFlag{Name: flagPublic, Usage: "print the public key of the existing signing key `FILE` (instead of --out)"},
				},
				Action: func(c *cli.Context) error {
					if err := noArguments(c); err != nil {
						return err
					}
					if path := c.String(flagPublic); path != "" {
						if c.String(flagOut) != "" {
							return withHint(errors.New("keygen signing: --out and --public exclude each other"),
								"--out creates a new key; --public prints the public key of an existing one")
						}
						k, err := crypto.LoadSigningKey(path)
						if err != nil {
							return err
						}
						_, err = fmt.Fprintln(c.App.Writer, k.Public())
						return err
					}
					k, err := crypto.GenerateSigningKey()
					if err != nil {
						return fmt.Errorf("generating signing key: %w", err)
					}
					if err := writeKey(c, k.MarshalPEM()); err != nil {
						return err
					}
					_, err = fmt.Fprintln(c.App.Writer, k.Public())
					return err
				},
			},
		},
	}
}

// ageIdentityFile is the file form of a node's age identity, as keygen
// node and node init write it.
func ageIdentityFile(id *age.X25519Identity) []byte {
	return fmt.Appendf(nil, "# created: %s\n# public key: %s\n%s\n",
		time.Now().UTC().Format(time.RFC3339), id.Recipient(), id)
}

// writeKey writes a new key file at --out, refusing to overwrite one.
func writeKey(c *cli.Context, data []byte) error {
	if err := requireFlag(c, flagOut); err != nil {
		return err
	}
	err := crypto.WriteKeyFile(c.String(flagOut), data)
	if errors.Is(err, fs.ErrExist) {
		return withHint(err, "certsync never overwrites a key; remove the file first if you really mean to replace it")
	}
	return err
}
