// Command certsync gets TLS certificates renewed once, centrally, by certbot
// onto every server that should hold them: signed, encrypted to exactly those
// servers, carried by NATS JetStream, installed on each server's schedule.
//
// Output rules, for every command:
//
//   - Results go to stdout, and only for commands whose job is to print
//     (keygen prints the public key, also keygen signing --public of an
//     existing key, status and inspect print their tables, node init
//     prints the node's line for publisher.yaml, import prints the file it
//     makes when not given --out, else import seed its table of nodes).
//     Every other command prints nothing on stdout.
//   - Everything else goes to stderr: logs, and on failure exactly one line
//     "certsync: error: <what> <name>: <why>", optionally followed by
//     "certsync: hint: …" lines.
//   - When stderr is a terminal, auth, publish, republish and node sync
//     also say what they did there, one "certsync: <name>: …" line per
//     certificate (one for auth; summary.go). Where stderr is not a
//     terminal (cron, systemd, certbot's deploy hook) they are quiet on
//     success.
//   - Publish and republish show their long work on the nodes' consumers
//     on a terminal, one line rewritten in place and erased when done;
//     elsewhere such work logs one consumers_ready line (progress.go).
//   - The exit status is 0 on success, 1 on failure; status and node sync
//     also exit 1 when what they report is not healthy.
//   - No secret is ever printed: not in results, logs, errors or hints.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run builds the app, runs it with args and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	// An unknown command, or an unknown subcommand of a command with
	// subcommands (rollout): the hint names the help that lists them.
	var unknown, parent string
	app.CommandNotFound = func(c *cli.Context, name string) {
		unknown = name
		if c.Command != nil && c.Command.Name != "" && c.Command.Name != c.App.Name {
			parent = c.Command.FullName() + " "
		}
	}
	err := app.Run(args)
	if err == nil && unknown != "" {
		err = withHint(fmt.Errorf("unknown command %q", parent+unknown), "certsync %s--help lists the commands", parent)
	}
	if err != nil {
		printError(stderr, keyHint(err))
		var ec cli.ExitCoder
		if errors.As(err, &ec) && ec.ExitCode() != 0 {
			return ec.ExitCode()
		}
		return 1
	}
	return 0
}

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:                 "certsync",
		Usage:                "deliver certbot's certificates to a fleet over NATS JetStream, signed and encrypted",
		Version:              version,
		Writer:               stdout,
		ErrWriter:            stderr,
		HideHelpCommand:      true,
		EnableBashCompletion: false,
		ExitErrHandler:       func(*cli.Context, error) {}, // run prints errors
		Commands: []*cli.Command{
			keygenCommand(),
			serverCommand(),
			publishCommand(),
			republishCommand(),
			nodeCommand(),
			inspectCommand(),
			authCommand(),
			setupCommand(),
			statusCommand(),
			importCommand(),
			enrollCommand(),
			rolloutCommand(),
			rollbackCommand(),
			planCommand(),
		},
	}
	app.OnUsageError = usageError
	setUsageError(app.Commands)
	return app
}

// usageError turns a flag parsing error into the one error line every
// failure prints, instead of urfave/cli's usage text on stdout.
func usageError(c *cli.Context, err error, _ bool) error {
	name := commandName(c)
	if name != c.App.Name {
		err = fmt.Errorf("%s: %w", strings.TrimPrefix(name, c.App.Name+" "), err)
	}
	return withHint(err, "%s --help", name)
}

// commandName is the running command's full name, "certsync keygen node".
func commandName(c *cli.Context) string {
	if c.Command != nil && c.Command.HelpName != "" {
		return c.Command.HelpName
	}
	return c.App.Name
}

func setUsageError(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = usageError
		setUsageError(c.Subcommands)
	}
}

// hintError carries hints to print after the error line.
type hintError struct {
	err   error
	hints []string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

// withHint adds a hint line to err.
func withHint(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return &hintError{err: err, hints: []string{fmt.Sprintf(format, args...)}}
}

// exitStatus is returned by commands whose result is unhealthy but whose run
// went fine (status, node sync): the message, if any, was already printed.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
func (e exitStatus) ExitCode() int { return int(e) }

func printError(w io.Writer, err error) {
	var es exitStatus
	if errors.As(err, &es) {
		return
	}
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	fmt.Fprintf(w, "certsync: error: %s\n", msg)
	var he *hintError
	if errors.As(err, &he) {
		for _, h := range he.hints {
			fmt.Fprintf(w, "certsync: hint: %s\n", h)
		}
	}
}
