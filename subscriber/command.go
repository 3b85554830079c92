package subscriber

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode"
)

const (
	// commandWaitDelay is how long a command's pipes may stay open after the
	// command was killed or exited (a child it left behind holding them).
	commandWaitDelay = 5 * time.Second
	// outputTail is how much of a command's output an error keeps: the end,
	// where the reason usually is.
	outputTail = 2 << 10
)

// Environment variables a check or reload command receives, beside the
// node's own environment.
const (
	EnvName        = "CERTSYNC_NAME"
	EnvInstallDir  = "CERTSYNC_INSTALL_DIR"
	EnvSerial      = "CERTSYNC_SERIAL"
	EnvFingerprint = "CERTSYNC_FINGERPRINT"
)

// ErrBadCommand means a check or reload command line cannot be split into
// arguments: an unbalanced quote, a trailing backslash, a shell operator.
var ErrBadCommand = errors.New("invalid command line")

// Command is a check or reload command: its line as configured and the
// arguments ParseCommand split it into. The zero value is no command. No
// shell ever runs it.
type Command struct {
	line string
	args []string
}

// String returns the command line as configured; empty for no command.
func (c Command) String() string { return c.line }

// Args returns a copy of the command's arguments, the program first; nil
// for no command.
func (c Command) Args() []string { return slices.Clone(c.args) }

// IsZero reports whether c is no command.
func (c Command) IsZero() bool { return len(c.args) == 0 }

// MarshalText returns the command line (empty for no command).
func (c Command) MarshalText() ([]byte, error) { return []byte(c.line), nil }

// UnmarshalText parses a command line with ParseCommand; empty is no
// command.
func (c *Command) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*c = Command{}
		return nil
	}
	parsed, err := ParseCommand(string(text))
	if err != nil {
		return err
	}
	*c = parsed
	return nil
}

// ParseCommand splits a check or reload command line into its arguments the
// way a POSIX shell splits words, without running a shell: words are
// separated by blanks; 'single quotes' keep everything literally; "double
// quotes" keep everything but a backslash before $ ` " \ or a newline; a
// backslash outside quotes keeps the next character. There is no expansion
// of any kind. Unquoted shell operators (| & ; < > ( ) $ `) are refused,
// since no shell would interpret them: write `sh -c '…'` to have one. An
// empty line, an unbalanced quote or a trailing backslash are refused too.
// Errors wrap ErrBadCommand.
func ParseCommand(line string) (Command, error) {
	args, err := splitCommand(line)
	if err != nil {
		return Command{}, err
	}
	return Command{line: line, args: args}, nil
}

// splitCommand splits line as ParseCommand says.
func splitCommand(line string) ([]string, error) {
	var (
		args    []string
		word    strings.Builder
		inWord  bool
		quote   rune // 0, '\'' or '"'
		escaped bool
	)
	bad := func(format string, a ...any) error {
		return fmt.Errorf("parsing command %q: %s: %w", line, fmt.Sprintf(format, a...), ErrBadCommand)
	}
	for _, r := range line {
		switch {
		case escaped:
			escaped = false
			switch {
			case r == '\n': // a line continuation
			case quote == '"' && !strings.ContainsRune("$`\"\\", r):
				word.WriteRune('\\') // kept, as in a shell's double quotes
				word.WriteRune(r)
			default:
				word.WriteRune(r)
			}
		case quote == '\'':
			if r == '\'' {
				quote = 0
			} else {
				word.WriteRune(r)
			}
		case quote == '"':
			switch r {
			case '"':
				quote = 0
			case '\\':
				escaped = true
			default:
				word.WriteRune(r)
			}
		case r == '\\':
			escaped, inWord = true, true
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				args = append(args, word.String())
				word.Reset()
				inWord = false
			}
		case strings.ContainsRune("|&;<>()$`", r):
			return nil, bad("shell operator %q outside quotes (no shell runs the command; write sh -c '…' to use one)", r)
		default:
			word.WriteRune(r)
			inWord = true
		}
	}
	switch {
	case escaped:
		return nil, bad("trailing backslash")
	case quote != 0:
		return nil, bad("unbalanced %c quote", quote)
	}
	if inWord {
		args = append(args, word.String())
	}
	if len(args) == 0 {
		return nil, bad("empty")
	}
	return args, nil
}

// command is a check or reload about to run for one certificate.
type command struct {
	what    string  // "check" or "reload"
	cmd     Command // as configured, parsed
	timeout time.Duration
	env     []string // CERTSYNC_* variables
}

// run runs the command to its end, bounded by its timeout, and returns nil
// when it exits 0. ctx's end does not stop it, nor keep it from starting:
// the command runs to its end or its timeout, so that a node asked to stop
// never leaves a reload half done, nor skips the reload that puts the
// previous version back in service after a rollback (only ctx's values are
// kept). The error names the command, says why it failed and
// ends with the tail of its output (stdout and stderr) on one line.
func (c command) run(ctx context.Context) error {
	if c.cmd.IsZero() {
		return fmt.Errorf("%s: no command to run", c.what)
	}
	args := c.cmd.args
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), c.env...)
	out := &tailBuffer{max: outputTail}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so a timeout kills what it started as well.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = commandWaitDelay
	err := cmd.Run()
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		err = fmt.Errorf("%s %q timed out after %v", c.what, c.cmd, c.timeout)
	default:
		err = fmt.Errorf("%s %q failed: %w", c.what, c.cmd, err)
	}
	if o := out.line(); o != "" {
		err = fmt.Errorf("%w: %s", err, o)
	}
	return err
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max  int
	buf  []byte
	more bool // bytes were dropped from the front
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.more = true
	}
	return len(p), nil
}

// line returns what was kept on one line: lines joined with " | ", control
// characters and invalid UTF-8 dropped, "…" in front when the start was cut.
func (t *tailBuffer) line() string {
	s := string(t.buf)
	if t.more {
		// The cut split a line: start at the next whole one, if any.
		if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
			s = s[i+1:]
		}
	}
	s = strings.ToValidUTF8(s, "")
	var parts []string
	for l := range strings.Lines(s) {
		l = strings.TrimSpace(strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return ' '
			}
			return r
		}, l))
		if l != "" {
			parts = append(parts, l)
		}
	}
	out := strings.Join(parts, " | ")
	if t.more && out != "" {
		out = "…" + out
	}
	return out
}
