// The plan: what each node would do with the newest bundle of each
// certificate, from the bundle's signed header, its rollout record and the
// node's status record (its schedule, its window, what it holds), before
// it happens.

package publisher

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
)

// Plan actions, in PlanRow.Action. The first six say what the node will
// do; the last four that it cannot take the bundle (PlanRow.CanTake is
// false).
const (
	// PlanNothing: it already has the newest bundle installed (or none is
	// published).
	PlanNothing = "nothing"
	// PlanInstallNow: it installs as soon as it has the bundle.
	PlanInstallNow = "install_now"
	// PlanInstallAt: it installs at PlanRow.At: the install_at it reported
	// for this version, else its schedule's next window.
	PlanInstallAt = "install_at"
	// PlanWaitWave: the bundle is held and the node is not released yet:
	// it waits for wave PlanRow.Wave (0: the canaries).
	PlanWaitWave = "wait_for_wave"
	// PlanStageOnly: its schedule is manual: it stages the bundle and
	// waits for `certsync node install`.
	PlanStageOnly = "stage_only"
	// PlanHold: its install of this version failed; it is held back (a
	// rollout tries it again when a later generation releases the node).
	PlanHold = "hold"
	// PlanNotRecipient: the bundle is not sealed to it (republish).
	PlanNotRecipient = "not_recipient"
	// PlanStale: its last report is older than PlanOptions.StaleAfter.
	PlanStale = "stale"
	// PlanMissing: it never reported.
	PlanMissing = "missing"
	// PlanHalted: the rollout is halted or aborted before releasing it.
	PlanHalted = "halted"
)

// PlanOptions tune Plan. Zero fields take their defaults.
type PlanOptions struct {
	// Now is the moment planned from (default the Publisher's clock).
	Now time.Time
	// StaleAfter is how old a node's last report may be before it is
	// stale (default DefaultStaleAfter).
	StaleAfter time.Duration
}

// PlanRow is what one node would do with the newest bundle of one
// certificate.
type PlanRow struct {
	Certificate string `json:"certificate"`
	Node        string `json:"node"`
	// Version, Fingerprint and Serial are the newest bundle's (zero when
	// none is published); Hold is true when it is held for a rollout, and
	// Rollout then says the rollout's state (as RolloutView.State).
	Version     uint64             `json:"version"`
	Fingerprint crypto.Fingerprint `json:"fingerprint"`
	Serial      string             `json:"serial"`
	Hold        bool               `json:"hold"`
	Rollout     string             `json:"rollout,omitempty"`
	// Action is one of the Plan* values.
	Action string `json:"action"`
	// At is when it installs, for PlanInstallAt.
	At time.Time `json:"at,omitzero"`
	// Wave is the node's wave when the bundle is held (0: a canary).
	Wave *int `json:"wave,omitempty"`
	// CanTake is false when the node cannot take the bundle
	// (PlanNotRecipient, PlanStale, PlanMissing, PlanHalted).
	CanTake bool `json:"can_take"`
	// Why adds what the action does not say (the reason of a halt, a
	// splay, a schedule the node did not report).
	Why string `json:"why,omitempty"`
}

// Text is the row's action as a phrase: "install at 2030-05-01T12:00:00Z",
// "wait for wave 2", "not a recipient", ….
func (r PlanRow) Text() string {
	switch r.Action {
	case PlanInstallAt:
		if r.At.IsZero() {
			return "install at its next window"
		}
		return "install at " + r.At.UTC().Format(time.RFC3339)
	case PlanWaitWave:
		if r.Wave != nil {
			return fmt.Sprintf("wait for wave %d", *r.Wave)
		}
	case PlanNotRecipient:
		return "not a recipient"
	}
	return strings.ReplaceAll(r.Action, "_", " ")
}

// Plan says, for each named certificate (every configured one when none
// is named) and each of its configured nodes, what the node would do with
// the newest bundle, sorted by certificate, then node. It reads the
// bundle's signed header and rollout record (so it needs the signing key,
// whose public half says which are the publisher's) and the status
// records; it writes nothing.
func (p *Publisher) Plan(ctx context.Context, opts PlanOptions, names ...string) ([]PlanRow, error) {
	if opts.Now.IsZero() {
		opts.Now = p.now()
	}
	if opts.StaleAfter <= 0 {
		opts.StaleAfter = DefaultStaleAfter
	}
	if len(names) == 0 {
		names = sortedKeys(p.cfg.Certificates)
	}
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	for _, name := range names {
		if err := wire.CheckCertName(name); err != nil {
			return nil, fmt.Errorf("planning: %w", err)
		}
		if _, ok := p.cfg.Certificates[name]; !ok {
			return nil, fmt.Errorf("planning: certificate %q: %w", name, ErrUnknownCertificate)
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	var rows []PlanRow
	err := p.withRollouts(ctx, "planning", func(ctx context.Context, c *rolloutCall) error {
		for _, name := range names {
			rd, in, err := c.read(ctx, "reading the newest bundle of "+name, name)
			if err != nil {
				return fmt.Errorf("planning certificate %q: %w", name, err)
			}
			in.Now = opts.Now
			for _, n := range slices.Sorted(slices.Values(in.Nodes)) {
				rows = append(rows, planNode(&in, n, p.sealedToAll(name, rd), opts))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rows, nil
}

// planNode is what node would do with in's newest bundle. sealedToAll
// says the bundle is sealed to the certificate's configured recipients;
// when it is not, a node that has not staged it is taken to be left out.
func planNode(in *stepInput, node string, sealedToAll bool, o PlanOptions) PlanRow {
	b := in.Bundle
	r := PlanRow{Certificate: in.Name, Node: node, Version: b.Version, Fingerprint: b.Fingerprint, Serial: b.Serial, Hold: b.Hold, CanTake: true}
	cannot := func(action, why string) PlanRow {
		r.Action, r.Why, r.CanTake = action, why, false
		return r
	}
	if !b.exists() {
		r.Action, r.Why = PlanNothing, "no bundle is published"
		return r
	}
	rec := in.current()
	if b.Hold && in.Policy != nil {
		r.Rollout = in.state()
		w := planWaves(in.Policy, in.Nodes).waveOf(node)
		r.Wave = &w
	}
	st := in.Status[node]
	staged := st != nil && st.StagedVersion == b.Version && st.StagedFingerprint == b.Fingerprint.String()
	switch {
	case st == nil:
		return cannot(PlanMissing, "never reported")
	case st.LastSeen.IsZero() || o.Now.Sub(st.LastSeen) > o.StaleAfter:
		return cannot(PlanStale, fmt.Sprintf("no report for more than %v", o.StaleAfter))
	case installedIt(st, b.Version, b.Fingerprint):
		r.Action = PlanNothing
		return r
	case !sealedToAll && !staged:
		return cannot(PlanNotRecipient, "sealed to other recipients than configured: run certsync republish")
	case failedIt(st, b.Version, b.Fingerprint):
		r.Action = PlanHold
		return r
	}
	if b.Hold {
		released := rec != nil && rec.Releases(node) || staged && st.Rollout == wire.RolloutExpiry
		if !released {
			if rec != nil && (rec.State == crypto.RolloutHalted || rec.State == crypto.RolloutAborted) {
				return cannot(PlanHalted, rec.State+": "+rec.Reason)
			}
			if in.Policy == nil {
				return cannot(PlanWaitWave, "held, but the certificate has no rollout policy: nothing releases it (publish it again without one)")
			}
			r.Action = PlanWaitWave
			if rec != nil && rec.State == crypto.RolloutPaused {
				r.Why = "the rollout is paused"
			}
			return r
		}
		if !(rec != nil && rec.Releases(node)) {
			r.Why = "released by its expiry deadline"
		}
	}
	schedule(&r, st, staged, o.Now)
	return r
}

// schedule fills r's action from the node's schedule, as its status
// record reports it.
func schedule(r *PlanRow, st *wire.Status, staged bool, now time.Time) {
	why := func(s string) {
		if r.Why == "" {
			r.Why = s
		} else {
			r.Why += "; " + s
		}
	}
	switch {
	case st.Schedule == "manual":
		r.Action = PlanStageOnly
		return
	case staged && st.InstallAt.After(now):
		r.Action, r.At = PlanInstallAt, st.InstallAt
		return
	case st.Schedule == "immediate":
		r.Action = PlanInstallNow
		return
	case st.Schedule == "":
		r.Action = PlanInstallNow
		why("the node reports no schedule")
		return
	}
	switch {
	case st.NextWindow.IsZero():
		r.Action = PlanInstallAt
		why("the node reports no next window")
	case st.NextWindow.After(now):
		r.Action, r.At = PlanInstallAt, st.NextWindow
	default:
		r.Action = PlanInstallNow
	}
	if st.Splay != "" && st.Splay != "0s" {
		why("up to " + st.Splay + " later (splay)")
	}
}

// sealedToAll tells whether the newest bundle rd read is sealed to every
// configured recipient of certificate name: ungrouped, its seal record's
// digest is that of the configured recipients; in recipient groups, each
// group of the configured nodes (assignGroups, with the newest's group
// count) has an envelope of the newest version sealed to exactly its
// nodes.
func (p *Publisher) sealedToAll(name string, rd *rolloutRead) bool {
	if rd.count < 2 {
		return rd.recipients == p.cfg.recipientsDigest(name)
	}
	nodes := slices.Sorted(slices.Values(p.cfg.Certificates[name]))
	for k, g := range assignGroups(nodes, rd.count) {
		if len(g) > 0 && rd.groups[k] != p.nodesDigest(g) {
			return false
		}
	}
	return true
}
