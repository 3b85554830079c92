package subscriber

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
)

// InstallOutcome is what became of one certificate's install.
type InstallOutcome string

// Outcomes of an install.
const (
	// InstallInstalled: the staged bundle is in service; check, reload and
	// verify passed.
	InstallInstalled InstallOutcome = "installed"
	// InstallUnchanged: the staged bundle was already in service; nothing
	// was done, nothing reloaded.
	InstallUnchanged InstallOutcome = "unchanged"
	// InstallSkipped: the staged version failed to install before; it is
	// not tried again until its retry is due (under the expiry deadline),
	// a newer bundle arrives or `certsync node install` runs.
	InstallSkipped InstallOutcome = "skipped"
	// InstallFailed: the install failed; install_dir was rolled back to
	// the previous version when there was one (RolledBack).
	InstallFailed InstallOutcome = "failed"
)

// InstallResult is what happened to one certificate's install.
type InstallResult struct {
	// Name is the certificate's name.
	Name string
	// Release is the staged bundle's version, serial, fingerprint and
	// validity (zero when the staged record could not be read).
	crypto.Release
	// Outcome says what became of it.
	Outcome InstallOutcome
	// RolledBack is true when a failed install put the previous version
	// back in service.
	RolledBack bool
	// Err says why, for InstallFailed and InstallSkipped. It holds the tail
	// of a failed command's output, never the content of a file certsync
	// wrote.
	Err error
}

// wakeInstaller tells Run's scheduler that something was staged.
func (n *Node) wakeInstaller() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// Install puts what is staged for the named certificates (all of them when
// names is empty) in service now, whatever their schedules and even before
// the certificate's NotBefore (with a warning), trying again a version
// whose install failed before. A name that is not one of the
// node's certificates is an error, before anything is installed. It needs
// no NATS: ReportStatus tells the status bucket afterwards. The report's
// Failed says whether any install failed.
//
// For each certificate, under a lock shared with other certsync processes:
// the staged bundle is written into a new version folder beside
// install_dir; install_dir is pointed at it (one rename); check, reload and
// verify run; any failure points install_dir back at the previous version
// and runs reload again. ctx only decides whether an install starts: once
// started, it runs to its end (each command bounded by CommandTimeout,
// verify by VerifyTimeout), so a node asked to stop never leaves one half
// done.
func (n *Node) Install(ctx context.Context, names ...string) (*Report, error) {
	if n.stageErr != nil {
		return nil, n.reportUnsafeStage(ctx)
	}
	for _, name := range names {
		if _, ok := n.cfg.Certificates[name]; !ok {
			return nil, fmt.Errorf("installing %q: %w", name, ErrUnknownCertificate)
		}
	}
	if len(names) == 0 {
		names = n.names
	}
	rep := &Report{}
	for _, name := range names {
		if ctx.Err() != nil {
			break
		}
		meta, b, err := n.stage.Load(name)
		if errors.Is(err, ErrNotStaged) {
			n.log.Info("install_nothing_staged", "name", name)
			continue
		}
		if err != nil {
			rep.Installs = append(rep.Installs, InstallResult{Name: name, Outcome: InstallFailed, Err: err})
			continue
		}
		if meta.NotBefore.After(n.cfg.Now()) {
			n.log.Warn("install_not_yet_valid", "name", name, "version", meta.Version, "not_before", meta.NotBefore,
				"hint", "installed as asked; clients reject the certificate until then")
		}
		rep.Installs = append(rep.Installs, n.installers[name].install(ctx, b, meta, true))
	}
	return rep, nil
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
		meta, b, err := n.stage.Load(name)
		if err != nil {
			results = append(results, InstallResult{Name: name, Outcome: InstallFailed, Err: err})
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

// ReportStatus connects to NATS and writes the status record of every
// certificate, for `certsync node install`. ctx bounds it, connecting
// included: give it a short deadline, status is not worth waiting for.
func (n *Node) ReportStatus(ctx context.Context) error {
	nc, err := natsconn.Connect(ctx, n.natsOptions(), n.log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc.Conn)
	if err != nil {
		return fmt.Errorf("opening jetstream: %w", err)
	}
	n.status.writeAll(ctx, js)
	return nil
}
