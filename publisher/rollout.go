// The rollout controller: from the newest bundle of a certificate, its
// newest rollout record and the nodes' status records, it decides what to
// release next and writes a new signed rollout record (RolloutStep,
// RolloutRun); the operator's commands (Promote, Pause, Resume, Abort)
// write one too, and Rollouts shows where each rollout stands.
//
// The decisions are pure functions (planWaves, classify, decideStep)
// of what was read and the time, so they are tested with any clock; the
// I/O around them reads and writes through one session.
//
// The files, one job each:
//   - rollout.go: the controller, RolloutStep and RolloutRun, and the one
//     read-decide-write loop (rolloutCall.decide) that it and the commands
//     write through; RolloutChange, what a step or a command wrote.
//   - rollout_waves.go: the waves of a certificate (planWaves: the
//     canaries, then cumulative waves).
//   - rollout_decide.go: the pure decisions: classify (a released node:
//     installed, failed, in flight), evaluate, and decideStep (start,
//     halt, release, complete) with the records it writes (startRecord,
//     advance, successor).
//   - rollout_io.go: the I/O around them: withRollouts (every rollout
//     call's connection: the timeout, the signing key, the rollout
//     stream, the status records), readRollout and writeRollout.
//   - rollout_view.go: RolloutView, where a rollout stands, and Rollouts;
//     checkRolloutName, the names Rollouts and the commands take.
//   - rollout_commands.go: the operator's commands, Promote, Pause,
//     Resume and Abort, through command.
//
// How the controller decides is docs/OPERATIONS.md, "Rollouts".

package publisher

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/certsync/certsync/crypto"
)

// RolloutChange is one rollout record a step or a command wrote.
type RolloutChange struct {
	// Name, Version and Fingerprint say which rollout.
	Name        string             `json:"name"`
	Version     uint64             `json:"version"`
	Fingerprint crypto.Fingerprint `json:"fingerprint"`
	// Event is what happened: "started", "wave_released", "halted",
	// "complete", or a command's "promoted", "paused", "resumed",
	// "aborted".
	Event string `json:"event"`
	// State, Wave and Generation are the new record's.
	State      string `json:"state"`
	Wave       int    `json:"wave"`
	Generation uint64 `json:"generation"`
	// Released are the nodes this record released that the one before
	// did not (none for a complete rollout, which releases every node).
	Released []string `json:"released,omitempty"`
	// Reason is the record's reason (halted, paused, aborted).
	Reason string `json:"reason,omitempty"`
}

// change describes next, written after prev (nil: none for this version).
func change(event string, prev, next *crypto.RolloutRecord) RolloutChange {
	c := RolloutChange{Name: next.Name, Version: next.Version, Fingerprint: next.Fingerprint, Event: event,
		State: next.State, Wave: next.Wave, Generation: next.Generation, Reason: next.Reason}
	for _, n := range next.Released {
		if prev == nil || !prev.Releases(n) {
			c.Released = append(c.Released, n)
		}
	}
	return c
}

// logChange logs a change as the event rollout_<event>.
func (s *session) logChange(c RolloutChange) {
	args := []any{"name", c.Name, "version", c.Version, "fingerprint", c.Fingerprint,
		"state", c.State, "wave", c.Wave, "generation", c.Generation}
	if len(c.Released) > 0 {
		args = append(args, "released", strings.Join(c.Released, ","))
	}
	if c.Reason != "" {
		args = append(args, "reason", c.Reason)
	}
	if c.State == crypto.RolloutHalted {
		s.log.Warn("rollout_"+c.Event, args...)
		return
	}
	s.log.Info("rollout_"+c.Event, args...)
}

// RolloutStep does one pass of the controller over every certificate with
// a rollout policy: it starts the rollout of a newly published held
// bundle, halts one with more failed nodes than its policy allows,
// releases the next wave of one whose released nodes have all installed
// and soaked, and completes one after its last wave (decideStep). It
// returns what it wrote. An error about one certificate does not stop the
// others; they are joined.
func (p *Publisher) RolloutStep(ctx context.Context) ([]RolloutChange, error) {
	names := p.policyNames()
	if len(names) == 0 {
		return nil, nil
	}
	var changes []RolloutChange
	var errs []error
	err := p.withRollouts(ctx, "advancing rollouts", func(ctx context.Context, c *rolloutCall) error {
		for _, name := range names {
			ch, err := c.step(ctx, name)
			if err != nil {
				errs = append(errs, fmt.Errorf("advancing the rollout of %q: %w", name, err))
				continue
			}
			if ch != nil {
				changes = append(changes, *ch)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return changes, errors.Join(errs...)
}

// step advances one certificate's rollout (decideStep).
func (c *rolloutCall) step(ctx context.Context, name string) (*RolloutChange, error) {
	_, made, err := c.decide(ctx, "advancing the rollout of "+name, name, func(in *stepInput) (*crypto.RolloutRecord, string, error) {
		next, kind := decideStep(*in)
		return next, string(kind), nil
	})
	return made, err
}

// decide reads name's rollout (input), writes the record decide gives,
// and logs the change as rollout_<event>; it reads and decides again,
// as one step named what (session.do), when another writer stored a
// record first (writeRollout). decide returns the record to write (nil:
// none) and its event, or an error that refuses the write, which is
// returned and never retried. It returns the input last read, its Record
// the one written, and the change (nil: none).
func (c *rolloutCall) decide(ctx context.Context, what, name string, decide func(in *stepInput) (*crypto.RolloutRecord, string, error)) (stepInput, *RolloutChange, error) {
	var in stepInput
	var written *crypto.RolloutRecord
	var made *RolloutChange
	var refused error
	err := c.do(ctx, what, func(ctx context.Context) error {
		written, made, refused = nil, nil, nil
		var rd *rolloutRead
		var err error
		if rd, in, err = c.input(ctx, name); err != nil {
			return err
		}
		prev := in.current()
		next, event, err := decide(&in)
		if err != nil {
			refused = err
			return nil
		}
		if next == nil {
			return nil
		}
		if err := c.writeRollout(ctx, next, rd.lastSeq); err != nil {
			return err
		}
		ch := change(event, prev, next)
		written, made = next, &ch
		return nil
	})
	if err == nil {
		err = refused
	}
	if err != nil {
		return stepInput{}, nil, err
	}
	if made != nil {
		c.logChange(*made)
		in.Record = written
	}
	return in, made, nil
}

// RolloutRun runs the controller until ctx ends: a RolloutStep now and
// then every interval. A failed step (NATS away, a stream not set up yet)
// is logged and tried again at the next interval; it never ends the run.
// It returns nil when ctx ends, and an error only for what no retry can
// mend: an interval that is not positive, or no signing key.
func (p *Publisher) RolloutRun(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("running rollouts: want a positive interval, got %v", interval)
	}
	if p.cfg.SigningKey == nil {
		return errors.New("running rollouts: no signing key configured")
	}
	names := p.policyNames()
	if len(names) == 0 {
		p.log.Warn("rollout_nothing_to_run", "reason", "no certificate has a rollout policy")
	}
	p.log.Info("rollout_run_started", "interval", interval, "certificates", strings.Join(names, ","))
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := p.RolloutStep(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("rollout_step_failed", "error", err, "retry_in", interval)
		}
		select {
		case <-ctx.Done():
			p.log.Info("rollout_run_stopped")
			return nil
		case <-t.C:
		}
	}
}
