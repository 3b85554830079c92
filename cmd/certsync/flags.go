package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/publisher"
)

// Flags shared by several commands.
const (
	flagConfig  = "config"
	flagVerbose = "verbose"
	flagOut     = "out"
	flagJSON    = "json"
	// flagStaleAfter is how old a node's last report may be: status, plan.
	flagStaleAfter = "stale-after"
	// flagCertificate names a certificate a node gets: enroll, node init.
	flagCertificate = "certificate"
	// flagNKey names an nkey seed file: the admin's for setup, a node's for
	// the node.yaml that import seed-node and node init write.
	flagNKey = "nkey"
)

// verboseFlag is --verbose. Each command gets its own flag value: urfave/cli
// records parsing state in it.
func verboseFlag() *cli.BoolFlag {
	return &cli.BoolFlag{Name: flagVerbose, Aliases: []string{"v"}, Usage: "log debug details on stderr"}
}

// certificateNames returns the names given with --certificate (enroll,
// node init), each checked; at least one is required, and what says what
// the certificates are for in that error.
func certificateNames(c *cli.Context, what string) ([]string, error) {
	names := c.StringSlice(flagCertificate)
	if len(names) == 0 {
		return nil, withHint(fmt.Errorf("%s: --%s is required: name at least one certificate %s", shortName(c), flagCertificate, what),
			"%s --help", commandName(c))
	}
	for _, name := range names {
		if err := wire.CheckCertName(name); err != nil {
			return nil, fmt.Errorf("%s: --%s: %w", shortName(c), flagCertificate, err)
		}
	}
	return names, nil
}

// jsonFlag is --json, for the commands that print their result as a JSON
// array instead of a table.
func jsonFlag() *cli.BoolFlag {
	return &cli.BoolFlag{Name: flagJSON, Usage: "print a JSON array"}
}

// staleAfterFlag is --stale-after, for the commands that judge the nodes'
// reports (status, plan).
func staleAfterFlag() *cli.DurationFlag {
	return &cli.DurationFlag{Name: flagStaleAfter, Value: publisher.DefaultStaleAfter,
		Usage: "a node whose last report is older than `DURATION` is stale"}
}

// requireFlag returns an error naming the flag when it is not set. Flags are
// not marked Required, because urfave/cli then prints the whole help.
func requireFlag(c *cli.Context, name string) error {
	if c.String(name) == "" {
		return withHint(fmt.Errorf("%s: --%s is required", shortName(c), name), "%s --help", commandName(c))
	}
	return nil
}

// positiveDurations returns an error naming the first of the duration flags
// names that is zero or negative: none of them has a meaning for that.
func positiveDurations(c *cli.Context, names ...string) error {
	for _, name := range names {
		if d := c.Duration(name); d <= 0 {
			return fmt.Errorf("%s: --%s %v: want a positive duration", shortName(c), name, d)
		}
	}
	return nil
}

// shortName is the command's name as errors begin: "node sync".
func shortName(c *cli.Context) string {
	return strings.TrimPrefix(commandName(c), "certsync ")
}

// noArguments returns an error naming the command and the first argument
// when there is one: for the commands that take none.
func noArguments(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", shortName(c), c.Args().First())
	}
	return nil
}

// configFlag is --config for commands that read publisher.yaml or node.yaml;
// CERTSYNC_CONFIG is read by configPath, after the flag.
func configFlag(def string) *cli.StringFlag {
	return &cli.StringFlag{Name: flagConfig, Aliases: []string{"c"}, Usage: "configuration `FILE` (default: $CERTSYNC_CONFIG, else " + def + ")"}
}
