package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// Flags shared by several commands.
const (
	flagConfig  = "config"
	flagVerbose = "verbose"
	flagOut     = "out"
	flagJSON    = "json"
	// flagNKey names an nkey seed file: the admin's for setup, a node's for
	// the node.yaml that import seed-node and node init write.
	flagNKey = "nkey"
)

// verboseFlag is --verbose. Each command gets its own flag value: urfave/cli
// records parsing state in it.
func verboseFlag() *cli.BoolFlag {
	return &cli.BoolFlag{Name: flagVerbose, Aliases: []string{"v"}, Usage: "log debug details on stderr"}
}

// requireFlag returns an error naming the flag when it is not set. Flags are
// not marked Required, because urfave/cli then prints the whole help.
func requireFlag(c *cli.Context, name string) error {
	if c.String(name) == "" {
		cmd := commandName(c)
		return withHint(fmt.Errorf("%s: --%s is required", strings.TrimPrefix(cmd, "certsync "), name), "%s --help", cmd)
	}
	return nil
}

// noArguments returns an error naming the command and the first argument
// when there is one: for the commands that take none.
func noArguments(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", strings.TrimPrefix(commandName(c), "certsync "), c.Args().First())
	}
	return nil
}

// configFlag is --config for commands that read publisher.yaml or node.yaml;
// CERTSYNC_CONFIG is read by configPath, after the flag.
func configFlag(def string) *cli.StringFlag {
	return &cli.StringFlag{Name: flagConfig, Aliases: []string{"c"}, Usage: "configuration `FILE` (default: $CERTSYNC_CONFIG, else " + def + ")"}
}
