package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/certsync/certsync/internal/authconf"
	"github.com/certsync/certsync/publisher"
	"github.com/certsync/certsync/subscriber"
)

// Summary lines tell a person at a terminal what auth, publish, republish
// and node sync did: one line per certificate (one for auth), on stderr,
// "certsync: <name>: <what happened>". They are written only when stderr
// is a terminal; in cron, under systemd and in certbot's deploy hook
// (stderr a pipe, a file or the journal) these commands stay quiet on
// success. They hold no secret: names, serials, fingerprints, sequences.

// summaryWriter is where c's summary lines go: stderr when it is a
// terminal, else nowhere.
func summaryWriter(c *cli.Context) io.Writer {
	if isTerminal(c.App.ErrWriter) {
		return c.App.ErrWriter
	}
	return io.Discard
}

// isTerminal tells whether w is a file open on a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// summaryLine writes one summary line.
func summaryLine(w io.Writer, name, format string, args ...any) {
	fmt.Fprintf(w, "certsync: %s: %s\n", name, fmt.Sprintf(format, args...))
}

// publishSummary is the line of one certificate publish or republish
// handled.
func publishSummary(w io.Writer, r publisher.Result) {
	summaryLine(w, r.Name, "%s, stream sequence %d: serial %s, not after %s, sealed to %s",
		r.Action, r.Sequence, r.Serial, r.NotAfter.UTC().Format(time.DateOnly), nodeList(r.Nodes))
}

// nodeList names nodes for a summary line.
func nodeList(nodes []string) string {
	switch len(nodes) {
	case 0:
		return "no node"
	case 1:
		return "node " + nodes[0]
	}
	return fmt.Sprintf("%d nodes (%s)", len(nodes), publisher.FirstNames(nodes, 10, ", "))
}

// authSummary is auth's one line: what it wrote, for whom.
func authSummary(w io.Writer, res *authconf.Result) {
	var nodes, created []string
	for _, u := range res.Users {
		if u.Role == authconf.RoleNode {
			nodes = append(nodes, u.Name)
		}
	}
	for _, p := range res.Created {
		created = append(created, p[strings.LastIndexByte(p, '/')+1:])
	}
	news := "no new seed file"
	if len(created) > 0 {
		news = "created " + strings.Join(created, ", ")
	}
	summaryLine(w, "auth", "wrote %s and %s for the publisher, the admin, the leaf link and %s; %s",
		res.Conf, res.LeafConf, nodeList(nodes), news)
}

// syncSummary writes node sync's lines: one per certificate of the node
// (names), saying what this pass did with it.
func syncSummary(w io.Writer, names []string, r *subscriber.Report) {
	for _, name := range slices.Sorted(slices.Values(names)) {
		summaryLine(w, name, "%s", syncOutcome(name, r))
	}
}

// syncOutcome says what one sync did with certificate name: its install,
// else its schedule, else what became of its messages.
func syncOutcome(name string, r *subscriber.Report) string {
	for _, in := range r.Installs {
		if in.Name != name {
			continue
		}
		switch in.Outcome {
		case subscriber.InstallInstalled:
			return "installed " + in.Fingerprint.Short(16)
		case subscriber.InstallFailed:
			if in.RolledBack {
				return "install of " + in.Fingerprint.Short(16) + " failed and was rolled back"
			}
			return "install of " + in.Fingerprint.Short(16) + " failed"
		}
	}
	for _, s := range r.Scheduled {
		switch {
		case s.Name != name:
		case s.At.IsZero():
			return "staged, waits for its rollout wave"
		case s.Why == "rollout":
			return fmt.Sprintf("staged, waits for its rollout wave, installs at %s at the latest (expiry deadline)", s.At.Local().Format(time.RFC3339))
		default:
			return fmt.Sprintf("staged, installs at %s (%s)", s.At.Local().Format(time.RFC3339), s.Why)
		}
	}
	var refused, failed int
	staged := false
	for _, res := range r.Results {
		if res.Name != name {
			continue
		}
		switch res.Outcome {
		case subscriber.OutcomeStaged:
			staged = true
		case subscriber.OutcomeRefused:
			refused++
		case subscriber.OutcomeFailed:
			failed++
		}
	}
	switch {
	case refused > 0 || failed > 0:
		return fmt.Sprintf("%d bundle(s) refused, %d failed (see the error)", refused, failed)
	case staged:
		return "staged"
	}
	return "nothing new"
}
