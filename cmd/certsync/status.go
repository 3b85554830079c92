package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/publisher"
)

// flagWarnBefore is status's: how soon an expiry is flagged.
const flagWarnBefore = "warn-before"

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "the fleet: what each node holds of each certificate; exits 1 when anything needs attention",
		Description: `Compares every node of every configured certificate with the newest bundle
published for it, from the records nodes keep in the certsync-status bucket.
A row is flagged, and the exit status is 1, when its node:

  failed     reported a failure (ERROR says which)
  stale      has not reported for longer than --stale-after
  missing    never reported, or holds nothing yet
  behind     holds (installed, else staged) another certificate than the newest published
  expiring   holds a certificate that expires within --warn-before

so it works as a monitoring check. A record of a node and certificate the
configuration no longer lists is shown as "unconfigured" and never fails the
check (delete it with: nats kv del certsync-status NODE.CERTIFICATE).

"node run" refreshes its records every status_interval (5m by default); the
default --stale-after of 1h allows a dozen missed refreshes. Nodes that only
run "node sync" from cron report once per run: give --stale-after more than
their cron period.

--json prints an array with one object per row: node, certificate, state
(installed, staged, failed, missing or stale), installed_serial,
installed_fingerprint, not_after and last_seen (RFC 3339, null when unknown),
error (empty when none), and healthy, problems, configured, behind, expiring,
days_left, reported_state, staged_serial, staged_fingerprint,
published_sequence, published_serial, published_fingerprint,
published_not_after, install_at, error_time, certsync_version. not_after is
that of the installed certificate, else of the staged one. install_at is when
the node will install what it staged on its own (its schedule's window, the
certificate's not-before, the next retry of a failed install; null when
nothing waits or it waits for "node install"); the table shows it in ERROR
as "installs at …" when there is no error.

A bundle a node's clock says is expired or not valid yet is not refused but
held back and tried again: its row is failed, and the error says "held back
by the node's clock".

It reads headers and status records only; it needs no signing key.`,
		ArgsUsage: " ",
		Flags: []cli.Flag{
			configFlag(DefaultPublisherConfig),
			jsonFlag(),
			staleAfterFlag(),
			&cli.DurationFlag{Name: flagWarnBefore, Value: publisher.DefaultWarnBefore,
				Usage: "a certificate expiring within `DURATION` is flagged (336h = 14 days)"},
			verboseFlag(),
		},
		Action: runStatus,
	}
}

func runStatus(c *cli.Context) error {
	if err := noArguments(c); err != nil {
		return err
	}
	if err := positiveDurations(c, flagStaleAfter, flagWarnBefore); err != nil {
		return err
	}
	p, err := newReadOnlyPublisher(c)
	if err != nil {
		return err
	}
	fleet, err := p.Fleet(c.Context)
	if err != nil {
		return err
	}
	rows := fleet.Rows(publisher.HealthOptions{
		StaleAfter: c.Duration(flagStaleAfter),
		WarnBefore: c.Duration(flagWarnBefore),
	})
	if c.Bool(flagJSON) {
		err = printStatusJSON(c.App.Writer, rows)
	} else {
		err = printStatusTable(c.App.Writer, rows, fleet.ReadAt, useColor(c.App.Writer))
	}
	if err != nil {
		return fmt.Errorf("status: writing: %w", err)
	}
	var bad []string
	for _, r := range rows {
		if !r.Healthy() {
			bad = append(bad, r.Node+"/"+r.Certificate+" "+strings.Join(r.Problems(), ","))
		}
	}
	if len(bad) > 0 {
		fmt.Fprintf(c.App.ErrWriter, "certsync: error: status: %d of %d unhealthy: %s\n", len(bad), len(rows), strings.Join(bad, "; "))
		return exitStatus(1)
	}
	return nil
}

// statusJSON is one row of status --json. The first fields are the
// contract's; the others may grow.
type statusJSON struct {
	Node                 string  `json:"node"`
	Certificate          string  `json:"certificate"`
	State                string  `json:"state"`
	InstalledSerial      string  `json:"installed_serial"`
	InstalledFingerprint string  `json:"installed_fingerprint"`
	NotAfter             *string `json:"not_after"`
	LastSeen             *string `json:"last_seen"`
	Error                string  `json:"error"`

	Healthy              bool     `json:"healthy"`
	Problems             []string `json:"problems"`
	Configured           bool     `json:"configured"`
	Behind               bool     `json:"behind"`
	Expiring             bool     `json:"expiring"`
	DaysLeft             *int     `json:"days_left"`
	ReportedState        string   `json:"reported_state"`
	StagedSerial         string   `json:"staged_serial"`
	StagedFingerprint    string   `json:"staged_fingerprint"`
	PublishedSequence    uint64   `json:"published_sequence"`
	PublishedSerial      string   `json:"published_serial"`
	PublishedFingerprint string   `json:"published_fingerprint"`
	PublishedNotAfter    *string  `json:"published_not_after"`
	InstallAt            *string  `json:"install_at"`
	InstalledAt          *string  `json:"installed_at"`
	InstalledVersion     uint64   `json:"installed_version"`
	StagedVersion        uint64   `json:"staged_version"`
	Rollout              string   `json:"rollout"`
	RolloutState         string   `json:"rollout_state"`
	RolloutReason        string   `json:"rollout_reason"`
	Waiting              bool     `json:"waiting"`
	ErrorTime            *string  `json:"error_time"`
	Version              string   `json:"certsync_version"`
}

func printStatusJSON(w io.Writer, rows []publisher.Row) error {
	out := make([]statusJSON, 0, len(rows))
	for _, r := range rows {
		j := statusJSON{
			Node:        r.Node,
			Certificate: r.Certificate,
			State:       r.State,
			NotAfter:    rfc3339(r.NotAfter),
			LastSeen:    rfc3339(r.LastSeen),
			Error:       r.Error,
			Healthy:     r.Healthy(),
			Problems:    r.Problems(),
			Configured:  r.Configured,
			Behind:      r.Behind,
			Expiring:    r.Expiring,
			Waiting:     r.Waiting,

			RolloutState:  r.RolloutState,
			RolloutReason: r.RolloutReason,
		}
		if j.Problems == nil {
			j.Problems = []string{}
		}
		if !r.NotAfter.IsZero() {
			j.DaysLeft = &r.DaysLeft
		}
		if st := r.Reported; st != nil {
			j.InstalledSerial, j.InstalledFingerprint = st.InstalledSerial, st.InstalledFingerprint
			j.StagedSerial, j.StagedFingerprint = st.StagedSerial, st.StagedFingerprint
			j.ReportedState, j.ErrorTime, j.Version = st.State, rfc3339(st.ErrorTime), st.Version
			j.InstallAt, j.InstalledAt = rfc3339(st.InstallAt), rfc3339(st.InstalledAt)
			j.InstalledVersion, j.StagedVersion, j.Rollout = st.InstalledVersion, st.StagedVersion, st.Rollout
		}
		if b := r.Newest; b != nil {
			j.PublishedSequence, j.PublishedSerial, j.PublishedFingerprint = b.Sequence, b.Serial, b.Fingerprint.String()
			j.PublishedNotAfter = rfc3339(b.NotAfter)
		}
		out = append(out, j)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// rfc3339 formats t in UTC to the second; nil when t is zero.
func rfc3339(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339)
	return &s
}

// ANSI colours of the table's STATE column.
const (
	colorRed    = "\033[31m"
	colorGreen  = "\033[32m"
	colorYellow = "\033[33m"
	colorDim    = "\033[2m"
	colorReset  = "\033[0m"
)

// printStatusTable prints the rows for people. STATE holds the state and
// every problem beyond it ("staged,behind"); colour, when on, only changes
// how it looks, never what it says.
func printStatusTable(w io.Writer, rows []publisher.Row, now time.Time, color bool) error {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tCERTIFICATE\tSTATE\tSERIAL\tNOT AFTER\tLAST SEEN\tERROR")
	states := make([]string, len(rows))
	for i, r := range rows {
		states[i] = stateText(r)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Node, r.Certificate, states[i],
			dash(r.Serial), notAfterText(r), seenText(r.LastSeen, now), errorText(r))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !color {
		_, err := w.Write(buf.Bytes())
		return err
	}
	// Colour goes in after the layout, since tabwriter would count escape
	// sequences as width. Node and certificate names are ASCII, so STATE
	// starts at the same byte on every line.
	lines := strings.SplitAfter(buf.String(), "\n")
	at := strings.Index(lines[0], "STATE")
	for i, r := range rows {
		line := lines[i+1]
		end := at + len(states[i])
		lines[i+1] = line[:at] + stateColor(r) + line[at:end] + colorReset + line[end:]
	}
	_, err := io.WriteString(w, strings.Join(lines, ""))
	return err
}

// stateText is the STATE column: the state, then the problems it does not
// already say, or "unconfigured".
func stateText(r publisher.Row) string {
	parts := []string{r.State}
	for _, p := range r.Problems() {
		if p != r.State {
			parts = append(parts, p)
		}
	}
	if !r.Configured {
		parts = append(parts, "unconfigured")
	}
	return strings.Join(parts, ",")
}

func stateColor(r publisher.Row) string {
	switch {
	case !r.Configured:
		return colorDim
	case r.State == wire.StateFailed || r.State == wire.StateStale || r.State == wire.StateMissing:
		return colorRed
	case !r.Healthy():
		return colorYellow
	}
	return colorGreen
}

func notAfterText(r publisher.Row) string {
	if r.NotAfter.IsZero() {
		return "-"
	}
	if r.DaysLeft < 0 {
		return fmt.Sprintf("%s (expired)", day(r.NotAfter))
	}
	return fmt.Sprintf("%s (%dd)", day(r.NotAfter), r.DaysLeft)
}

// seenText says how long ago t was, to the largest whole unit.
func seenText(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", max(int(d/time.Second), 0))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}

// errorText is the ERROR column: the error, or else when the node will
// install what it staged (a schedule's window, a certificate not valid
// yet), or "-".
func errorText(r publisher.Row) string {
	switch {
	case r.Error != "":
		return r.Error
	case r.RolloutState == crypto.RolloutHalted:
		return "rollout halted: " + r.RolloutReason
	case r.Reported != nil && !r.Reported.InstallAt.IsZero():
		return "installs at " + day(r.Reported.InstallAt)
	case r.Waiting:
		return "waits for its rollout wave"
	}
	return "-"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// useColor says whether w is a terminal that wants colour: a character
// device, with NO_COLOR unset or empty (https://no-color.org).
func useColor(w io.Writer) bool {
	if os.Getenv("NO_COLOR") != "" {
		return false
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
