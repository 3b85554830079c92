package main

import "github.com/urfave/cli/v2"

// Flags shared by several commands.
const (
	flagConfig  = "config"
	flagVerbose = "verbose"
	flagOut     = "out"
	flagJSON    = "json"
)

var verboseFlag = &cli.BoolFlag{Name: flagVerbose, Aliases: []string{"v"}, Usage: "log debug details on stderr"}

// configFlag is --config for commands that read publisher.yaml or node.yaml;
// CERTSYNC_CONFIG is read by configPath, after the flag.
func configFlag(def string) *cli.StringFlag {
	return &cli.StringFlag{Name: flagConfig, Aliases: []string{"c"}, Usage: "configuration `FILE` (default: $CERTSYNC_CONFIG, else " + def + ")"}
}
