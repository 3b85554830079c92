// When a staged bundle is installed, and the loop that installs it:
// installDue and planFor decide for each certificate; due, notBefore and
// retryDue are the rules, pure functions of their arguments; splayOffset is
// the node's offset in a window; scheduler is Run's loop, woken by
// wakeInstaller. The Schedule type and its parsing are in schedule.go.

package subscriber

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// wakeInstaller tells Run's scheduler that something was staged.
func (n *Node) wakeInstaller() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// installDue installs every certificate whose time has come (and completes
// installs a crash cut short, and tries again failed ones whose retry is
// due), and returns what it did and what waits, soonest first.
func (n *Node) installDue(ctx context.Context) ([]InstallResult, []Scheduled) {
	var results []InstallResult
	var waiting []Scheduled
	for _, name := range n.names {
		if ctx.Err() != nil {
			break
		}
		in := n.installers[name]
		meta, err := n.stage.Read(name)
		if errors.Is(err, ErrNotStaged) {
			continue
		}
		if err != nil {
			results = append(results, InstallResult{Name: name, Outcome: InstallFailed, Err: err})
			continue
		}
		inst, st, err := in.installed()
		if err != nil {
			results = append(results, InstallResult{Name: name, Release: meta.Release, Outcome: InstallFailed, Err: err})
			continue
		}
		now := n.cfg.Now()
		p := n.planFor(name, meta, inst, st, now)
		if p.rollout == wire.RolloutWaiting {
			// Held, not released: it waits for its rollout, or until the
			// expiry deadline overrides the hold (p.at, when ok).
			n.logPlan(name, meta, p)
			at := time.Time{}
			if p.ok {
				at = p.at
			}
			waiting = append(waiting, Scheduled{Name: name, Version: meta.Version, At: at, Why: whyRollout})
			continue
		}
		if !p.ok {
			continue // a failed version without retry: reported when it failed
		}
		if p.at.After(now) {
			n.logPlan(name, meta, p)
			waiting = append(waiting, Scheduled{Name: name, Version: meta.Version, At: p.at, Why: p.why})
			continue
		}
		if n.beforeLoad != nil {
			n.beforeLoad(name)
		}
		planned := meta
		meta, b, err := n.stage.Load(name)
		if err != nil {
			results = append(results, InstallResult{Name: name, Outcome: InstallFailed, Err: err})
			continue
		}
		if crypto.Compare(planned.Release, meta.Release) != crypto.Same {
			// Staged again since it was planned (Run's consumer, or another
			// process, between Read and Load): what is staged now has its
			// own schedule and not-before, so it is not installed on the
			// plan made for another. The staging woke Run's scheduler, and
			// a Sync plans after it stages: that pass plans the new one.
			n.log.Info("install_replanned", "name", name, "planned_version", planned.Version, "version", meta.Version)
			continue
		}
		if p.rollout == wire.RolloutExpiry {
			n.log.Warn("install_rollout_override", "name", name, "version", meta.Version, "fingerprint", meta.Fingerprint,
				"installed_not_after", inst.NotAfter, "expiry_deadline", n.cfg.Certificates[name].ExpiryDeadline,
				"rollout_generation", p.generation,
				"hint", "held for a rollout that has not released this node, installed anyway: the certificate in service reaches its expiry deadline")
		}
		n.log.Info("install_started", "name", name, "version", meta.Version, "fingerprint", meta.Fingerprint, "why", p.why,
			"rollout", p.rollout, "rollout_generation", p.generation)
		// A retry is the one due install that may try a failed version.
		res := in.install(ctx, b, meta, installOpts{force: p.force || p.why == "retry", generation: p.generation, rollout: p.rollout})
		results = append(results, res)
		if res.Outcome != InstallFailed {
			continue
		}
		// When is it tried again, if it is?
		if inst, st, err := in.installed(); err == nil {
			if p := n.planFor(name, meta, inst, st, n.cfg.Now()); p.ok && p.why == "retry" {
				n.logPlan(name, meta, p)
				waiting = append(waiting, Scheduled{Name: name, Version: meta.Version, At: p.at, Why: p.why})
			}
		}
	}
	waiting = n.retryUnrecorded(results, waiting)
	// Soonest first; those waiting for a rollout without a time last.
	slices.SortStableFunc(waiting, func(a, b Scheduled) int {
		return cmp.Or(cmp.Compare(boolInt(a.At.IsZero()), boolInt(b.At.IsZero())), a.At.Compare(b.At))
	})
	return results, waiting
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// whyRollout is Scheduled.Why of a held bundle waiting for its release.
const whyRollout = "rollout"

// planFor says when the staged bundle meta of certificate name installs
// on its own, given what is in service (inst) and the install state st:
// at once when an install was cut short; a held one by holdDue, with the
// rollout record the stage keeps for it; a version that failed by
// retryDue; any other by due. Either way not before the certificate's
// NotBefore while install_dir holds something (see due).
func (n *Node) planFor(name string, meta *Staged, inst *Installed, st *installState, now time.Time) plan {
	c := n.cfg.Certificates[name]
	var rel *heldRelease
	if meta != nil && meta.Hold && n.stage != nil {
		var err error
		if rel, err = n.stage.rollout(meta, n.cfg.Trusted); err != nil {
			// Nothing it cannot read releases anything; the next record
			// the publisher writes is kept again.
			n.log.Warn("rollout_unreadable", "name", name, "error", err)
			rel = nil
		}
	}
	var installed *Staged
	if inst != nil {
		installed = &inst.Staged
	}
	occupied := installed != nil
	if !occupied {
		// A real folder, or the link to it that certsync made: the old
		// files the service runs on. Anything but "not there" counts.
		_, err := os.Lstat(c.InstallDir)
		occupied = !errors.Is(err, fs.ErrNotExist)
	}
	splay := splayOffset(n.cfg.Node, meta, c.Splay)
	switch {
	case st.Pending != nil:
		return plan{at: now, ok: true, why: "interrupted"}
	case meta != nil && meta.Hold:
		if st.Failed.is(installed) {
			installed = nil // as below
		}
		return holdDue(now, c.Schedule, meta, installed, occupied, splay, c.ExpiryDeadline, rel, n.cfg.Node, st.Failed)
	case st.Failed.is(meta):
		if st.Failed.is(installed) {
			// A first install that failed left its files in place:
			// nothing that works is installed.
			installed = nil
		}
		return notBefore(retryDue(st.Failed, installed, c.ExpiryDeadline), meta, installed, occupied)
	}
	return due(now, c.Schedule, meta, installed, occupied, splay, c.ExpiryDeadline)
}

// logPlan logs once per bundle and time when it will be installed (and,
// for a held one, per rollout generation).
func (n *Node) logPlan(name string, meta *Staged, p plan) {
	key := fmt.Sprintf("%d %s %d %s %d", meta.Version, meta.Fingerprint, p.at.UnixNano(), p.rollout, p.generation)
	if n.planned[name] == key {
		return
	}
	n.planned[name] = key
	if p.rollout == wire.RolloutWaiting {
		args := []any{"name", name, "version", meta.Version, "fingerprint", meta.Fingerprint, "rollout_generation", p.generation}
		if p.ok {
			args = append(args, "expiry_override_at", p.at)
		}
		n.log.Info("install_held", args...)
		return
	}
	if p.why == "not_before" || p.why == "installed_expires" {
		// Certificate authorities date certificates back, not ahead: one
		// that is not valid yet says a clock is wrong, the node's or the
		// publisher's. A warning, so that `node sync` shows it.
		n.log.Warn("install_scheduled", "name", name, "version", meta.Version, "at", p.at, "why", p.why,
			"not_before", meta.NotBefore, "hint", "the certificate is not valid yet by this node's clock; it is installed then (check the clock: timedatectl)")
		return
	}
	n.log.Info("install_scheduled", "name", name, "version", meta.Version, "at", p.at, "why", p.why)
}

// scheduler is Run's installer: it installs what is due, then sleeps until
// the next certificate is due or something new is staged, until ctx ends.
// It writes the status of every certificate it installed.
func (n *Node) scheduler(ctx context.Context, js jetstream.JetStream) {
	for {
		results, waiting := n.installDue(ctx)
		n.observeInstalls(results)
		n.observeScheduled(waiting)
		for _, r := range results {
			n.status.write(ctx, js, r.Name)
		}
		var alarm <-chan time.Time
		var t *time.Timer
		if len(waiting) > 0 && !waiting[0].At.IsZero() {
			t = time.NewTimer(max(waiting[0].At.Sub(n.cfg.Now()), 0))
			alarm = t.C
		}
		select {
		case <-ctx.Done():
		case <-n.wake:
		case <-alarm:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// plan is what the schedule says about a staged bundle.
type plan struct {
	// at is when to install; at or before now means now. Zero with ok
	// false: not until someone runs `node install` (or never, when there is
	// nothing to install).
	at time.Time
	ok bool
	// why says what decided at, for the log and the status: "first",
	// "immediate", "window", "expiry", "not_before" (the new certificate's
	// NotBefore), "installed_expires" (the expiry of the one in service,
	// before that NotBefore), "retry" (a failed install tried again),
	// "interrupted".
	why string
	// rollout says how a held bundle stands to its rollout (a
	// wire.Rollout… value; "" when not held), generation the kept record's
	// for it (0 when none).
	rollout    string
	generation uint64
	// force installs even a version that failed before: a held one a
	// record of a later generation than its failure's released again.
	force bool
}

// due decides when the staged bundle should be installed, given what is
// installed (nil when nothing certsync installed is in place) and whether
// anything at all is at install_dir (occupied: certsync's version, or a
// real folder of the old cron's, or the link to it certsync made):
//
//   - nothing staged, or the staged bundle is what is installed: never;
//   - nothing installed: now, whatever the schedule;
//   - immediate: now;
//   - a cron schedule: at the first time the expression matches at or after
//     the bundle was staged, plus the splay offset (a node that was down
//     then, or a `node sync` that runs later, installs at its first chance
//     after that);
//   - manual: not until `node install`;
//   - in every case, no later than when the installed certificate comes
//     within deadline of its expiry (ExpiryDeadlineOff turns this off);
//   - and never before the staged certificate's NotBefore while install_dir
//     holds something: a certificate that is not valid yet would replace
//     one clients accept by one they reject. It waits for its NotBefore, or
//     for the installed certificate to expire if that comes first (an
//     expired one is no better). With install_dir empty it installs at once
//     all the same: clients reject it either way, and the service gets
//     files it can start with, which turn valid at NotBefore without a
//     reload.
//
// It is a pure function of its arguments, so tests give it any clock.
func due(now time.Time, sch Schedule, staged, installed *Staged, occupied bool, splay, deadline time.Duration) plan {
	switch {
	case staged == nil:
		return plan{}
	case installed == nil:
		return notBefore(plan{at: now, ok: true, why: "first"}, staged, nil, occupied)
	case crypto.Compare(installed.Release, staged.Release) == crypto.Same:
		return plan{}
	}
	var p plan
	switch {
	case sch.manual:
	case sch.cron == nil:
		return notBefore(plan{at: now, ok: true, why: "immediate"}, staged, installed, true)
	default:
		// Next returns the first match strictly after its argument.
		// Matches are on whole minutes: a bundle staged at 03:00:20 with
		// "0 3 * * *" waits for the next day.
		if next := sch.next(staged.StagedAt.Add(-time.Nanosecond)); !next.IsZero() {
			p = plan{at: next.Add(splay), ok: true, why: "window"}
		}
	}
	if deadline > 0 && !installed.NotAfter.IsZero() {
		if at := installed.NotAfter.Add(-deadline); !p.ok || at.Before(p.at) {
			p = plan{at: at, ok: true, why: "expiry"}
		}
	}
	return notBefore(p, staged, installed, true)
}

// notBefore moves p to the staged certificate's NotBefore when it is
// later and install_dir is occupied, or to the installed certificate's
// expiry if that comes first. See due.
func notBefore(p plan, staged, installed *Staged, occupied bool) plan {
	if !p.ok || !occupied || !staged.NotBefore.After(p.at) {
		return p
	}
	at, why := staged.NotBefore, "not_before"
	if installed != nil && !installed.NotAfter.IsZero() && installed.NotAfter.Before(at) {
		at, why = installed.NotAfter, "installed_expires"
	}
	if at.After(p.at) {
		p.at, p.why = at, why
	}
	return p
}

// holdDue decides when a held staged bundle installs, given the kept
// rollout record for its version and fingerprint (rel, nil when none), the
// node's name and the last failed install (failed):
//
//   - released (rel releases node, see released): as due says, with the
//     schedule starting when the node was first released if that is after
//     it was staged (a windowed node installs in its next window after its
//     release); rollout "released";
//   - a version that failed, released again by a record of a later
//     generation than the one it failed under: as due says, from when that
//     record came, and forced (it may try the failed version); released
//     only by the generation it failed under (or an earlier one): as
//     retryDue says, which tries it only under the expiry deadline;
//   - not released: only when the installed certificate comes within
//     deadline of its expiry (rollout "expiry" once due, "waiting" before,
//     with at when that will be); never with nothing installed (the canary
//     decides first; `node install` installs it by hand) or under
//     ExpiryDeadlineOff (then ok is false).
//
// NotBefore applies as in due. It is a pure function of its arguments.
func holdDue(now time.Time, sch Schedule, staged, installed *Staged, occupied bool, splay, deadline time.Duration,
	rel *heldRelease, node string, failed *failedInstall) plan {
	gen := uint64(0)
	var rec *crypto.RolloutRecord
	if rel != nil {
		gen, rec = rel.Generation, rel.RolloutRecord
	}
	mark := func(p plan, rollout string) plan {
		p.rollout, p.generation = rollout, gen
		return p
	}
	from := func(t time.Time) *Staged {
		s := *staged
		if t.After(s.StagedAt) {
			s.StagedAt = t
		}
		return &s
	}
	isReleased := released(rec, node)
	if failed.is(staged) {
		if isReleased && gen > failed.Generation {
			p := due(now, sch, from(rel.Received), installed, occupied, splay, deadline)
			p.force = true
			return mark(p, wire.RolloutReleased)
		}
		if !isReleased && installed == nil {
			// Not released, and nothing in service whose expiry could
			// override the hold: a failed version waits like any other
			// (retryDue alone would try it again, as it does a bundle
			// that is not held).
			return mark(plan{}, wire.RolloutWaiting)
		}
		p := notBefore(retryDue(failed, installed, deadline), staged, installed, occupied)
		if isReleased {
			return mark(p, wire.RolloutReleased)
		}
		return mark(p, overrideState(p, now))
	}
	if isReleased {
		return mark(due(now, sch, from(rel.Released), installed, occupied, splay, deadline), wire.RolloutReleased)
	}
	if installed != nil && crypto.Compare(installed.Release, staged.Release) == crypto.Same {
		return mark(plan{}, "") // in service already (installed by hand)
	}
	var p plan
	if deadline > 0 && installed != nil && !installed.NotAfter.IsZero() {
		p = notBefore(plan{at: installed.NotAfter.Add(-deadline), ok: true, why: "expiry"}, staged, installed, true)
	}
	return mark(p, overrideState(p, now))
}

// overrideState is the rollout state of a held bundle that is not
// released, planned p: "expiry" once the expiry deadline makes it due,
// "waiting" before.
func overrideState(p plan, now time.Time) string {
	if p.ok && !p.at.After(now) {
		return wire.RolloutExpiry
	}
	return wire.RolloutWaiting
}

// Install retries: the delay after a failed install of a version grows
// with its failures, 1m, 2m, 4m … up to 1h.
const (
	installRetryBase = time.Minute
	installRetryMax  = time.Hour
)

// retryDue decides when a version whose install failed (f) is tried again
// on its own: only under the expiry deadline, when the installed
// certificate expires within deadline (or has expired), or nothing
// certsync installed is in service; then installRetryBase after the last
// failure, doubling with each failure up to installRetryMax, and not
// before the installed certificate comes within deadline. A failure that
// retrying cannot cure (f.Permanent), or under ExpiryDeadlineOff, is never retried:
// a newer bundle or `node install` tries again. A newer bundle replaces f
// anyway, since f names its version.
func retryDue(f *failedInstall, installed *Staged, deadline time.Duration) plan {
	if f == nil || f.Permanent || deadline <= 0 {
		return plan{}
	}
	at := f.At.Add(backoff(uint64(max(f.Attempts, 1)), installRetryBase, installRetryMax))
	if installed != nil {
		if installed.NotAfter.IsZero() {
			return plan{}
		}
		at = maxTime(at, installed.NotAfter.Add(-deadline))
	}
	return plan{at: at, ok: true, why: "retry"}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// splayOffset is the random delay in [0, splay) of the bundle s on node:
// derived from a hash of the node, the certificate, its version and
// fingerprint, so each node has its own, and it stays the same across
// restarts for one bundle while each renewal gets a new one.
func splayOffset(node string, s *Staged, splay time.Duration) time.Duration {
	if splay <= 0 || s == nil {
		return 0
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%s", node, s.Name, s.Version, s.Fingerprint)
	v := binary.BigEndian.Uint64(h.Sum(nil))
	return time.Duration(v % uint64(splay))
}
