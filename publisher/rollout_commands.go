// The operator's rollout commands: Promote, Pause, Resume, Abort.

package publisher

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/certsync/certsync/crypto"
)

// errCommand is a command refused on what it read: never retried.
type errCommand struct{ msg string }

func (e errCommand) Error() string { return e.msg }

// command applies an operator's command (verb, logged as rollout_<event>)
// to the rollout of name: apply gives the record to write from what was
// read (nil: write none), or refuses (errCommand). It is read, decided and
// written again when another writer stored a record first (decide). It
// returns the view after.
func (p *Publisher) command(ctx context.Context, verb, event, name string, apply func(in *stepInput) (*crypto.RolloutRecord, error)) (*RolloutView, error) {
	if _, err := p.checkRolloutName(name); err != nil {
		return nil, fmt.Errorf("%s rollout: %w", verb, err)
	}
	doing := fmt.Sprintf("%s rollout of %q", verb, name)
	var v RolloutView
	err := p.withRollouts(ctx, doing, func(ctx context.Context, c *rolloutCall) error {
		in, _, err := c.decide(ctx, verb+" rollout of "+name, name, func(in *stepInput) (*crypto.RolloutRecord, string, error) {
			next, err := apply(in)
			return next, event, err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", doing, err)
		}
		v = view(in)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// started is the current record of in, or a refusal naming why there is
// no rollout to act on.
func started(in *stepInput) (*crypto.RolloutRecord, error) {
	switch rec := in.current(); {
	case rec != nil:
		return rec, nil
	case !in.Bundle.exists():
		return nil, errCommand{"no bundle is published"}
	case !in.Bundle.Hold:
		return nil, errCommand{fmt.Sprintf("the newest bundle (version %d) is not held: it goes into service at once, with no rollout", in.Bundle.Version)}
	default:
		return nil, errCommand{fmt.Sprintf("the rollout of version %d has not started: the controller (certsync rollout run) starts it", in.Bundle.Version)}
	}
}

// openRecord is the rollout record a command acts on: started (started),
// not in a final state (refuseState), and in one of states when any are
// named.
func openRecord(in *stepInput, states ...string) (*crypto.RolloutRecord, error) {
	rec, err := started(in)
	if err != nil {
		return nil, err
	}
	if err := refuseState(rec); err != nil {
		return nil, err
	}
	if len(states) > 0 && !slices.Contains(states, rec.State) {
		return nil, errCommand{"not " + strings.Join(states, " or ") + ": it is " + rec.State}
	}
	return rec, nil
}

// refuseState refuses acting on a rollout in a final state.
func refuseState(rec *crypto.RolloutRecord) error {
	switch rec.State {
	case crypto.RolloutComplete:
		return errCommand{fmt.Sprintf("version %d is already complete: every node is released (certsync rollback NAME takes it out of service)", rec.Version)}
	case crypto.RolloutAborted:
		return errCommand{fmt.Sprintf("version %d was aborted", rec.Version)}
	}
	return nil
}

// Promote releases the next wave of name's rollout now, whatever the
// soak and the nodes in flight (generation+1); after the last wave it
// completes the rollout. A rollout not started yet is started (its
// canaries released). A paused rollout stays paused (pause and promote
// step through the waves by hand); a halted one must be resumed first.
func (p *Publisher) Promote(ctx context.Context, name string) (*RolloutView, error) {
	v, err := p.command(ctx, "promote", "promoted", name, func(in *stepInput) (*crypto.RolloutRecord, error) {
		if in.Bundle.exists() && in.Bundle.Hold && in.current() == nil {
			return startRecord(in), nil
		}
		rec, err := openRecord(in)
		if err != nil {
			return nil, err
		}
		if rec.State == crypto.RolloutHalted {
			return nil, errCommand{"halted (" + rec.Reason + "): resume it first (certsync rollout resume " + in.Name + ")"}
		}
		next, _ := in.advance(rec, planWaves(in.Policy, in.Nodes))
		return next, nil
	})
	return v, err
}

// Pause stops name's running rollout from releasing further waves; the
// nodes released already go on installing.
func (p *Publisher) Pause(ctx context.Context, name string) (*RolloutView, error) {
	v, err := p.command(ctx, "pause", "paused", name, func(in *stepInput) (*crypto.RolloutRecord, error) {
		rec, err := openRecord(in, crypto.RolloutRunning)
		if err != nil {
			return nil, err
		}
		next := in.successor(rec, crypto.RolloutPaused, false)
		next.Reason = "paused by the operator"
		return next, nil
	})
	return v, err
}

// Resume sets name's paused or halted rollout running again (generation+1):
// the released nodes whose install failed try again, and the wave's
// deadline starts again from now.
func (p *Publisher) Resume(ctx context.Context, name string) (*RolloutView, error) {
	v, err := p.command(ctx, "resume", "resumed", name, func(in *stepInput) (*crypto.RolloutRecord, error) {
		rec, err := openRecord(in, crypto.RolloutPaused, crypto.RolloutHalted)
		if err != nil {
			return nil, err
		}
		next := in.successor(rec, crypto.RolloutRunning, true)
		next.WaveStarted = in.Now
		return next, nil
	})
	return v, err
}

// Abort ends name's rollout for good: a record in state aborted that
// releases no node (generation+1, so nodes released but not installed yet
// no longer install it), then the previous certificate published again
// without hold, with a new version and the aborted one withdrawn
// (Rollback with Immediate), so every node that installed it goes back at
// once. When that publish fails, Abort says so; run it again: on an
// aborted rollout whose bundle is still the newest it only publishes the
// previous certificate again.
func (p *Publisher) Abort(ctx context.Context, name string) (*RolloutView, error) {
	v, err := p.command(ctx, "abort", "aborted", name, func(in *stepInput) (*crypto.RolloutRecord, error) {
		rec := in.current()
		if rec != nil && rec.State == crypto.RolloutAborted {
			return nil, nil // only the rollback is left to do
		}
		if rec == nil {
			if !in.Bundle.exists() || !in.Bundle.Hold {
				_, err := started(in)
				return nil, err
			}
			rec = startRecord(in) // not started: abort before any release
			rec.Released, rec.Wave = nil, 0
		} else if rec.State == crypto.RolloutComplete {
			return nil, refuseState(rec)
		}
		next := in.successor(rec, crypto.RolloutAborted, true)
		next.Released, next.All = nil, false
		next.Reason = "aborted by the operator"
		return next, nil
	})
	if err != nil {
		return nil, err
	}
	if _, err := p.Rollback(ctx, name, RollbackOptions{Immediate: true}); err != nil {
		return v, fmt.Errorf("abort rollout of %q: aborted, but publishing the previous certificate again failed (run certsync rollout abort %s again): %w", name, name, err)
	}
	p.log.Info("rollout_abort_rolled_back", "name", name, "version", v.Version, "fingerprint", v.Fingerprint)
	return v, nil
}
