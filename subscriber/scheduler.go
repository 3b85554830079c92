// When a staged bundle is installed, and the loop that installs it:
// installDue and planFor decide for each certificate; due, notBefore and
// retryDue are the rules, pure functions of their arguments; splayOffset is
// the node's offset in a window; scheduler is Run's loop, woken by
// wakeInstaller. The Schedule type and its parsing are in schedule.go.

package subscriber

import (
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
		n.log.Info("install_started", "name", name, "version", meta.Version, "fingerprint", meta.Fingerprint, "why", p.why)
		// A retry is the one due install that may try a failed version.
		res := in.install(ctx, b, meta, p.why == "retry")
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
	slices.SortStableFunc(waiting, func(a, b Scheduled) int { return a.At.Compare(b.At) })
	return results, waiting
}

// planFor says when the staged bundle meta of certificate name installs
// on its own, given what is in service (inst) and the install state st:
// at once when an install was cut short; a version that failed by
// retryDue; any other by due. Either way not before the certificate's
// NotBefore while install_dir holds something (see due).
func (n *Node) planFor(name string, meta *Staged, inst *Installed, st *installState, now time.Time) plan {
	c := n.cfg.Certificates[name]
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
	switch {
	case st.Pending != nil:
		return plan{at: now, ok: true, why: "interrupted"}
	case st.Failed.is(meta):
		if st.Failed.is(installed) {
			// A first install that failed left its files in place:
			// nothing that works is installed.
			installed = nil
		}
		return notBefore(retryDue(st.Failed, installed, c.ExpiryDeadline), meta, installed, occupied)
	}
	return due(now, c.Schedule, meta, installed, occupied, splayOffset(n.cfg.Node, meta, c.Splay), c.ExpiryDeadline)
}

// logPlan logs once per bundle and time when it will be installed.
func (n *Node) logPlan(name string, meta *Staged, p plan) {
	key := fmt.Sprintf("%d %s %d", meta.Version, meta.Fingerprint, p.at.UnixNano())
	if n.planned[name] == key {
		return
	}
	n.planned[name] = key
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
		if len(waiting) > 0 {
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
		if next := sch.cron.Next(staged.StagedAt.Add(-time.Nanosecond)); !next.IsZero() {
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
