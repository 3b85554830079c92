package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/certsync/certsync/internal/natsconn"
)

// newLogger returns the logger of a command: text for people, JSON when
// CERTSYNC_LOG_FORMAT=json or under systemd (JOURNAL_STREAM is set), at level
// info for daemons and warn for one-shot commands, which are quiet on success.
// --verbose lowers the level to debug.
func newLogger(c *cli.Context, daemon bool) *slog.Logger {
	return makeLogger(c.App.ErrWriter, daemon, c.Bool(flagVerbose))
}

func makeLogger(w io.Writer, daemon, verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if daemon {
		level = slog.LevelInfo
	}
	if verbose {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	if os.Getenv("CERTSYNC_LOG_FORMAT") == "json" || os.Getenv("JOURNAL_STREAM") != "" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// natsLogger adapts slog to the embedded nats-server's logger. Every line
// passes through natsconn.Redact: nats-server hides the passwords of the
// URLs it logs, not always a token (a user alone).
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.log.Info(redactf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(redactf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.log.Error(redactf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Error(redactf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  { l.log.Debug(redactf(format, v...)) }
func (l natsLogger) Tracef(format string, v ...any)  { l.log.Debug(redactf(format, v...)) }

func redactf(format string, v ...any) string { return natsconn.Redact(fmt.Sprintf(format, v...)) }
