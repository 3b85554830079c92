// Where a rollout stands: RolloutView, and Rollouts, which reads them.

package publisher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
)

// States a RolloutView shows beside crypto's rollout states
// (crypto.RolloutRunning, RolloutPaused, RolloutHalted, RolloutComplete,
// RolloutAborted).
const (
	// RolloutPending: the newest bundle is held, and no rollout record is
	// about it yet; the controller's next pass starts it.
	RolloutPending = "pending"
	// RolloutNone: no bundle is published, or the newest one is not held
	// (published without a policy, or by an abort): it goes into service
	// at once on every node, with no rollout.
	RolloutNone = "none"
)

// Node outcomes in a RolloutView.
const (
	// NodeInstalled: the node reported the new certificate installed (and,
	// where it verifies, served: a node reports an install only once its
	// served-certificate check passed).
	NodeInstalled = "installed"
	// NodeFailed: its install of the new certificate failed, or it has not
	// reported it installed within the wave deadline.
	NodeFailed = "failed"
	// NodeInFlight: released, neither installed nor failed yet.
	NodeInFlight = "in_flight"
	// NodeWaiting: not released yet.
	NodeWaiting = "waiting"
)

// WaveView is one wave of a RolloutView.
type WaveView struct {
	// Wave is its number: 0 the canaries, then 1, 2, …
	Wave int `json:"wave"`
	// Released is true once the rollout record releases every node of it.
	Released bool `json:"released"`
	// Nodes are its nodes, sorted, each with its outcome.
	Nodes []RolloutNode `json:"nodes"`
	// Installed, Verified, Failed, InFlight and Waiting count its nodes by
	// outcome (Verified those installed that report their served check
	// passed); Waiting counts the nodes not released yet.
	Installed int `json:"installed"`
	Verified  int `json:"verified"`
	Failed    int `json:"failed"`
	InFlight  int `json:"in_flight"`
	Waiting   int `json:"waiting"`
}

// RolloutNode is one node of a wave.
type RolloutNode struct {
	Node string `json:"node"`
	// Outcome is NodeInstalled, NodeFailed, NodeInFlight or NodeWaiting.
	Outcome string `json:"outcome"`
	// Why says why it failed.
	Why      string `json:"why,omitempty"`
	Verified bool   `json:"verified,omitempty"`
}

// RolloutView is where the rollout of a certificate's newest bundle
// stands.
type RolloutView struct {
	Name string `json:"name"`
	// Version, Fingerprint and Serial are the newest bundle's (zero when
	// none is published).
	Version     uint64             `json:"version"`
	Fingerprint crypto.Fingerprint `json:"fingerprint"`
	Serial      string             `json:"serial"`
	// Hold is true when the newest bundle is held for a rollout.
	Hold bool `json:"hold"`
	// State is the rollout record's state, RolloutPending or RolloutNone.
	State string `json:"state"`
	// Reason says why it is paused, halted or aborted.
	Reason string `json:"reason"`
	// Generation and Wave are the record's (0 without one); WaveStarted
	// when that wave was released, Updated when the record was written.
	Generation  uint64    `json:"generation"`
	Wave        int       `json:"wave"`
	WaveStarted time.Time `json:"wave_started,omitzero"`
	Updated     time.Time `json:"updated,omitzero"`
	// Waves are the waves that have nodes, in order.
	Waves []WaveView `json:"waves"`
}

// Halted tells whether the rollout is halted.
func (v *RolloutView) Halted() bool { return v.State == crypto.RolloutHalted }

// state is the state of the rollout of in's newest bundle: its record's,
// RolloutPending or RolloutNone.
func (in *stepInput) state() string {
	switch rec := in.current(); {
	case rec != nil:
		return rec.State
	case in.Bundle.exists() && in.Bundle.Hold:
		return RolloutPending
	}
	return RolloutNone
}

// view shows in: the rollout of its newest bundle.
func view(in stepInput) RolloutView {
	v := RolloutView{Name: in.Name, Version: in.Bundle.Version, Fingerprint: in.Bundle.Fingerprint,
		Serial: in.Bundle.Serial, Hold: in.Bundle.Hold, State: in.state()}
	rec := in.current()
	if rec != nil {
		v.Reason, v.Generation, v.Wave = rec.Reason, rec.Generation, rec.Wave
		v.WaveStarted, v.Updated = rec.WaveStarted, rec.Time
	}
	if !in.Bundle.exists() {
		return v
	}
	w := planWaves(in.Policy, in.Nodes)
	for k, nodes := range w.nodes {
		if len(nodes) == 0 {
			continue
		}
		wv := WaveView{Wave: k, Released: rec != nil || !in.Bundle.Hold}
		for _, n := range nodes {
			st := in.Status[n]
			rn := RolloutNode{Node: n, Outcome: NodeWaiting}
			released := !in.Bundle.Hold || rec != nil && rec.Releases(n)
			switch {
			case installedIt(st, in.Bundle.Version, in.Bundle.Fingerprint):
				rn.Outcome, rn.Verified = NodeInstalled, st.Verified
			case released && rec != nil:
				r := classify(n, st, rec, in.Policy.WaveDeadline, in.Now)
				rn.Outcome, rn.Why = map[outcome]string{inFlight: NodeInFlight, failed: NodeFailed}[r.outcome], r.why
			case released:
				rn.Outcome = NodeInFlight
			}
			if !released {
				wv.Released = false
			}
			switch rn.Outcome {
			case NodeInstalled:
				wv.Installed++
				if rn.Verified {
					wv.Verified++
				}
			case NodeFailed:
				wv.Failed++
			case NodeInFlight:
				wv.InFlight++
			case NodeWaiting:
				wv.Waiting++
			}
			wv.Nodes = append(wv.Nodes, rn)
		}
		v.Waves = append(v.Waves, wv)
	}
	return v
}

// checkRolloutName checks that name is a configured certificate with a
// rollout policy.
func (p *Publisher) checkRolloutName(name string) (*RolloutPolicy, error) {
	if err := wire.CheckCertName(name); err != nil {
		return nil, err
	}
	if _, ok := p.cfg.Certificates[name]; !ok {
		return nil, fmt.Errorf("certificate %q: %w", name, ErrUnknownCertificate)
	}
	pol := p.cfg.Policy(name)
	if pol == nil {
		return nil, fmt.Errorf("certificate %q: %w", name, ErrNoPolicy)
	}
	return pol, nil
}

// ErrNoPolicy means a rollout command named a certificate without a
// rollout policy: it goes into service at once, with no rollout.
var ErrNoPolicy = errors.New("has no rollout policy")

// Rollouts shows where the rollout of each named certificate (every one
// with a policy when none is named) stands, sorted by name. A name that is
// not configured, or has no policy, is an error.
func (p *Publisher) Rollouts(ctx context.Context, names ...string) ([]RolloutView, error) {
	if len(names) == 0 {
		names = p.policyNames()
	}
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	for _, name := range names {
		if _, err := p.checkRolloutName(name); err != nil {
			return nil, fmt.Errorf("reading rollouts: %w", err)
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	out := make([]RolloutView, 0, len(names))
	err := p.withRollouts(ctx, "reading rollouts", func(ctx context.Context, c *rolloutCall) error {
		for _, name := range names {
			_, in, err := c.read(ctx, "reading the rollout of "+name, name)
			if err != nil {
				return fmt.Errorf("reading the rollout of %q: %w", name, err)
			}
			out = append(out, view(in))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
