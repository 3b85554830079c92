package subscriber

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/testing/testclock"
	"github.com/certsync/certsync/internal/testing/treetest"
	"github.com/certsync/certsync/internal/wire"
)

// TestSyncSchedules: with an injected clock, a manual certificate and a
// cron-windowed one are staged but not installed until `node install` or
// the window; one whose installed certificate expires within the deadline
// installs at once, outside its window.
func TestSyncSchedules(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stageDir := t.TempDir()
	clock := testclock.At(time.Now().Truncate(time.Minute))
	window := clock.Now().Add(2 * time.Hour)
	cronExpr := fmt.Sprintf("%d %d * * *", window.Minute(), window.Hour())
	n := e.nodeWith(stageDir, clock.Now,
		// Manual means manual here: no expiry deadline (on by default).
		Certificate{Name: "manual.example", InstallDir: liveDir(stageDir, "manual.example"), Schedule: mustSchedule(t, ScheduleManual), ExpiryDeadline: ExpiryDeadlineOff},
		Certificate{Name: "cron.example", InstallDir: liveDir(stageDir, "cron.example"), Schedule: mustSchedule(t, cronExpr), ExpiryDeadline: 7 * 24 * time.Hour},
		Certificate{Name: "expiring.example", InstallDir: liveDir(stageDir, "expiring.example"), Schedule: mustSchedule(t, cronExpr), ExpiryDeadline: 7 * 24 * time.Hour},
	)
	names := []string{"manual.example", "cron.example", "expiring.example"}
	issue := func(ago, validity time.Duration) *testcert.Cert {
		return e.ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-ago), Validity: validity})
	}
	publish := func(name string, c *testcert.Cert) {
		e.publishSealed(name, c)
	}
	state := func(name string) wire.Status { return e.status(name) }

	// Nothing installed yet: everything installs at once, windows or not.
	first := map[string]*testcert.Cert{
		"manual.example":   issue(3*time.Hour, 0),
		"cron.example":     issue(3*time.Hour, 0),
		"expiring.example": issue(3*time.Hour, 4*24*time.Hour), // within the 7-day deadline
	}
	for _, name := range names {
		publish(name, first[name])
	}
	rep := n.sync(t)
	if got := rep.InstallCount(InstallInstalled); got != 3 || rep.Failed() {
		t.Fatalf("first sync installed %d: %+v", got, rep.Installs)
	}

	// Renewals: the expiring one installs at once; the others wait.
	second := map[string]*testcert.Cert{}
	for _, name := range names {
		second[name] = issue(2*time.Hour, 0)
		publish(name, second[name])
	}
	rep = n.sync(t)
	if len(rep.Installs) != 1 || rep.Installs[0].Name != "expiring.example" || rep.Installs[0].Outcome != InstallInstalled {
		t.Fatalf("second sync installs %+v, want only expiring.example", rep.Installs)
	}
	wantServed(t, liveDir(stageDir, "expiring.example"), second["expiring.example"])
	for _, name := range []string{"manual.example", "cron.example"} {
		wantServed(t, liveDir(stageDir, name), first[name])
		if st := state(name); st.State != wire.StateStaged || st.InstalledFingerprint != fingerprint(first[name].Leaf.Raw) ||
			st.StagedFingerprint != fingerprint(second[name].Leaf.Raw) {
			t.Errorf("%s before its window: %+v", name, st)
		}
	}

	// A minute before the window: still waiting. In the window: the cron
	// one installs; the manual one never does on its own.
	clock.Set(window.Add(-time.Minute))
	if rep := n.sync(t); len(rep.Installs) != 0 {
		t.Errorf("before the window: %+v", rep.Installs)
	}
	if _, waiting := n.installDue(context.Background()); len(waiting) != 1 || !waiting[0].At.Equal(window) || waiting[0].Why != "window" {
		t.Errorf("waiting %+v, want cron.example at %v", waiting, window)
	}
	clock.Set(window)
	rep = n.sync(t)
	if len(rep.Installs) != 1 || rep.Installs[0].Name != "cron.example" || rep.Installs[0].Outcome != InstallInstalled {
		t.Fatalf("in the window: %+v", rep.Installs)
	}
	wantServed(t, liveDir(stageDir, "cron.example"), second["cron.example"])
	if st := state("cron.example"); st.State != wire.StateInstalled {
		t.Errorf("cron.example after its window: %+v", st)
	}
	clock.Set(window.Add(30 * 24 * time.Hour))
	if rep := n.sync(t); len(rep.Installs) != 0 {
		t.Errorf("a month later: %+v", rep.Installs)
	}
	wantServed(t, liveDir(stageDir, "manual.example"), first["manual.example"])

	// node install: the named one, now; an unknown name is an error.
	if _, err := n.Install(context.Background(), "manual.example", "nope.example"); !errors.Is(err, ErrUnknownCertificate) {
		t.Errorf("Install of an unknown name: %v", err)
	}
	wantServed(t, liveDir(stageDir, "manual.example"), first["manual.example"])
	rep, err := n.Install(context.Background(), "manual.example")
	if err != nil || rep.Failed() || len(rep.Installs) != 1 || rep.Installs[0].Outcome != InstallInstalled {
		t.Fatalf("Install: %+v %v", rep, err)
	}
	wantServed(t, liveDir(stageDir, "manual.example"), second["manual.example"])
	// Everything is in service: installing all again changes nothing.
	rep, err = n.Install(context.Background())
	if err != nil || rep.InstallCount(InstallUnchanged) != 3 {
		t.Errorf("Install all again: %+v %v", rep, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.ReportStatus(ctx); err != nil {
		t.Fatalf("ReportStatus: %v", err)
	}
	if st := state("manual.example"); st.State != wire.StateInstalled || st.InstalledFingerprint != fingerprint(second["manual.example"].Leaf.Raw) {
		t.Errorf("manual.example after node install: %+v", st)
	}
}

// TestSyncReportsInstallFailure: node sync's report (its exit code) covers
// a failed install.
func TestSyncReportsInstallFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stageDir := t.TempDir()
	n := e.nodeWith(stageDir, nil, Certificate{Name: "example.com", InstallDir: liveDir(stageDir, "example.com"), Check: mustCommand(t, "/bin/false")})
	c := e.issue(time.Hour)
	e.publishSealed("example.com", c)
	rep := n.sync(t)
	if !rep.Failed() || rep.Count(OutcomeStaged) != 1 || rep.InstallCount(InstallFailed) != 1 {
		t.Fatalf("report %+v %+v", rep.Results, rep.Installs)
	}
	if st := e.status("example.com"); st.State != wire.StateFailed || st.Error == "" {
		t.Errorf("status %+v", st)
	}
	// Not tried again in a loop: the next sync leaves it.
	if rep := n.sync(t); rep.Failed() || len(rep.Installs) != 0 {
		t.Errorf("next sync: %+v", rep.Installs)
	}
}

// TestRunStopFinishesInstall: a daemon asked to stop during a reload
// finishes the install before Run returns.
func TestRunStopFinishesInstall(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stageDir := t.TempDir()
	dir := t.TempDir()
	started, finished := filepath.Join(dir, "started"), filepath.Join(dir, "finished")
	reload := filepath.Join(dir, "reload.sh")
	treetest.WriteFile(t, reload, []byte("#!/bin/sh\ntouch "+started+"\nsleep 1\ntouch "+finished+"\n"), 0o755)
	installDir := liveDir(stageDir, "example.com")
	n := e.nodeWith(stageDir, nil, Certificate{Name: "example.com", InstallDir: installDir, Reload: mustCommand(t, reload)})
	stop := startRun(t, n)
	c := e.issue(time.Hour)
	e.publishSealed("example.com", c)
	natstest.WaitFor(t, 30*time.Second, "the reload to start", func() bool {
		_, err := os.Stat(started)
		return err == nil
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Stat(finished); err != nil {
		t.Error("Run returned before the reload finished")
	}
	if len(n.logs.Events("install_done")) != 1 {
		t.Error("Run returned before the install was done")
	}
	wantServed(t, installDir, c)
}

// TestSyncNotYetValidWaits: a renewal not valid yet by the node's clock
// (within crypto.MaxFutureNotBefore) is staged but installed only at its
// NotBefore, and the report, the log and the status say when; over an
// installed certificate that has expired it installs at once.
func TestSyncNotYetValidWaits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var clock testclock.Clock
	stageDir := t.TempDir()
	installDir := liveDir(stageDir, "example.com")
	n := e.nodeWith(stageDir, clock.Now, Certificate{Name: "example.com", InstallDir: installDir, ExpiryDeadline: 7 * 24 * time.Hour})
	base := e.issue(3 * time.Hour)
	e.publishSealed("example.com", base)
	expectOnly(t, n.sync(t), OutcomeStaged)
	wantServed(t, installDir, base)

	early := e.ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(2 * time.Hour)})
	nb := early.Leaf.NotBefore
	e.publishSealed("example.com", early)
	rep := n.sync(t)
	expectOnly(t, rep, OutcomeStaged)
	if rep.Failed() || len(rep.Installs) != 0 {
		t.Fatalf("installs %+v, err %v; want none before NotBefore", rep.Installs, rep.Err())
	}
	if len(rep.Scheduled) != 1 || rep.Scheduled[0].Name != "example.com" || !rep.Scheduled[0].At.Equal(nb) || rep.Scheduled[0].Why != "not_before" {
		t.Errorf("scheduled %+v, want example.com at %v (not_before)", rep.Scheduled, nb)
	}
	wantServed(t, installDir, base)
	if st := e.status("example.com"); st.State != wire.StateStaged || !st.InstallAt.Equal(nb) ||
		st.StagedFingerprint != fingerprint(early.Leaf.Raw) || st.InstalledFingerprint != fingerprint(base.Leaf.Raw) {
		t.Errorf("status %+v, want staged, installing at %v", st, nb)
	}
	if ev := n.logs.Events("install_scheduled"); len(ev) == 0 || ev[len(ev)-1]["level"] != "WARN" || ev[len(ev)-1]["why"] != "not_before" {
		t.Errorf("install_scheduled log %v, want a warning saying not_before", ev)
	}

	// A minute before: still waiting. At NotBefore: installed.
	clock.Offset(time.Until(nb) - time.Minute)
	if rep := n.sync(t); len(rep.Installs) != 0 {
		t.Errorf("a minute before NotBefore: %+v", rep.Installs)
	}
	clock.Offset(time.Until(nb) + time.Second)
	rep = n.sync(t)
	if len(rep.Installs) != 1 || rep.Installs[0].Outcome != InstallInstalled || len(rep.Scheduled) != 0 {
		t.Fatalf("at NotBefore: installs %+v, scheduled %+v", rep.Installs, rep.Scheduled)
	}
	wantServed(t, installDir, early)
	if st := e.status("example.com"); st.State != wire.StateInstalled || !st.InstallAt.IsZero() {
		t.Errorf("status after NotBefore %+v", st)
	}
}

// TestSyncNotYetValidOverExpired: when the installed certificate has
// expired, a renewal that is not valid yet installs at once: the held one
// is no better.
func TestSyncNotYetValidOverExpired(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var clock testclock.Clock
	stageDir := t.TempDir()
	installDir := liveDir(stageDir, "example.com")
	n := e.nodeWith(stageDir, clock.Now, Certificate{Name: "example.com", InstallDir: installDir})
	// Valid from 48h to 24h ago: installed while the node's clock said 30h ago.
	old := e.ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-48 * time.Hour), Validity: 24 * time.Hour})
	clock.Offset(-30 * time.Hour)
	e.publishSealed("example.com", old)
	expectOnly(t, n.sync(t), OutcomeStaged)
	wantServed(t, installDir, old)

	clock.Offset(0)
	early := e.ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(2 * time.Hour)})
	e.publishSealed("example.com", early)
	rep := n.sync(t)
	if rep.Count(OutcomeStaged) != 1 || len(rep.Installs) != 1 || rep.Installs[0].Outcome != InstallInstalled {
		t.Fatalf("over an expired certificate: results %+v, installs %+v", rep.Results, rep.Installs)
	}
	wantServed(t, installDir, early)
}

// TestRunWakesAtNotBefore: `node run` installs a renewal that is not valid
// yet at its NotBefore, not before.
func TestRunWakesAtNotBefore(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stageDir := t.TempDir()
	installDir := liveDir(stageDir, "example.com")
	n := e.nodeWith(stageDir, nil, Certificate{Name: "example.com", InstallDir: installDir})
	base := e.issue(time.Hour)
	e.publishSealed("example.com", base)
	stop := startRun(t, n)
	natstest.WaitFor(t, 30*time.Second, "the base installed", func() bool {
		st, ok := e.tryStatus("example.com")
		return ok && st.State == wire.StateInstalled
	})
	early := e.ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(3 * time.Second)})
	e.publishSealed("example.com", early)
	natstest.WaitFor(t, 30*time.Second, "the renewal installed", func() bool {
		st, ok := e.tryStatus("example.com")
		return ok && st.State == wire.StateInstalled && st.InstalledFingerprint == fingerprint(early.Leaf.Raw)
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := e.status("example.com"); st.InstalledAt.Before(early.Leaf.NotBefore) {
		t.Errorf("installed at %v, before its NotBefore %v", st.InstalledAt, early.Leaf.NotBefore)
	}
	wantServed(t, installDir, early)
}

// TestSyncRetriesFailedInstallUnderDeadline: a version whose install
// failed is tried again on its own while the installed certificate expires
// within expiry_deadline, with a growing delay kept in state.json, until it
// installs; outside the deadline it is left alone until the deadline.
func TestSyncRetriesFailedInstallUnderDeadline(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var clock testclock.Clock
	stageDir := t.TempDir()
	dir := t.TempDir()
	check, flag := flagCheck(t, dir)
	week := 7 * 24 * time.Hour
	certs := []Certificate{
		{Name: "expiring.example", InstallDir: liveDir(stageDir, "expiring.example"), Check: check, ExpiryDeadline: week},
		{Name: "later.example", InstallDir: liveDir(stageDir, "later.example"), Check: check, ExpiryDeadline: week},
	}
	n := e.nodeWith(stageDir, clock.Now, certs...)
	first := map[string]*testcert.Cert{
		"expiring.example": e.ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-3 * time.Hour), Validity: 3 * 24 * time.Hour}),
		"later.example":    e.issue(3 * time.Hour),
	}
	for name, c := range first {
		e.publishSealed(name, c)
	}
	if rep := n.sync(t); rep.InstallCount(InstallInstalled) != 2 {
		t.Fatalf("first installs %+v", rep.Installs)
	}

	// Renewals whose check fails.
	treetest.WriteFile(t, flag, nil, 0o600)
	second := map[string]*testcert.Cert{}
	for name := range first {
		second[name] = e.issue(2 * time.Hour)
		e.publishSealed(name, second[name])
	}
	rep := n.sync(t)
	if rep.InstallCount(InstallFailed) != 2 {
		t.Fatalf("renewals: %+v", rep.Installs)
	}
	failedAt := clock.Now()
	retry := func() Scheduled {
		t.Helper()
		for _, s := range rep.Scheduled {
			if s.Name == "expiring.example" {
				return s
			}
		}
		t.Fatalf("scheduled %+v, want a retry of expiring.example", rep.Scheduled)
		return Scheduled{}
	}
	if s := retry(); s.Why != "retry" || s.At.Before(failedAt.Add(time.Minute-time.Second)) || s.At.After(failedAt.Add(time.Minute)) {
		t.Errorf("retry %+v, want a minute after %v", s, failedAt)
	}
	// Outside the deadline a failed version is left alone until the
	// installed certificate comes within it.
	for _, s := range rep.Scheduled {
		if s.Name == "later.example" && (s.Why != "retry" || !s.At.Equal(first["later.example"].Leaf.NotAfter.Add(-week))) {
			t.Errorf("later.example scheduled %+v, want a retry when its installed certificate comes within the deadline", s)
		}
	}
	st := e.status("expiring.example")
	if st.State != wire.StateFailed || !strings.Contains(st.Error, "tried again at") || !st.InstallAt.Equal(retry().At.UTC()) {
		t.Errorf("status %+v, want failed and when it is tried again", st)
	}
	// Not before its time.
	if rep := n.sync(t); len(rep.Installs) != 0 {
		t.Errorf("at once again: %+v", rep.Installs)
	}

	// A minute later: tried again, fails again; the next try is two
	// minutes later, also for a restarted node (state.json keeps count).
	clock.Offset(time.Minute)
	rep = n.sync(t)
	if len(rep.Installs) != 1 || rep.Installs[0].Name != "expiring.example" || rep.Installs[0].Outcome != InstallFailed {
		t.Fatalf("first retry: %+v", rep.Installs)
	}
	secondTry := retry().At
	n = e.nodeWith(stageDir, clock.Now, certs...)
	rep = n.sync(t)
	if len(rep.Installs) != 0 || !retry().At.Equal(secondTry) || secondTry.Sub(clock.Now()) < 110*time.Second {
		t.Errorf("after a restart: installs %+v, next try %v (%v from now), want two minutes after the last", rep.Installs, secondTry, secondTry.Sub(clock.Now()))
	}
	if _, waiting := n.installDue(context.Background()); len(waiting) == 0 || !waiting[0].At.Equal(secondTry) {
		t.Errorf("the scheduler would wake at %+v, want %v", waiting, secondTry)
	}

	// Fixed: the next retry installs it.
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	clock.Offset(time.Minute + 2*time.Minute + time.Second)
	rep = n.sync(t)
	if len(rep.Installs) != 1 || rep.Installs[0].Name != "expiring.example" || rep.Installs[0].Outcome != InstallInstalled {
		t.Fatalf("second retry: %+v", rep.Installs)
	}
	wantServed(t, liveDir(stageDir, "expiring.example"), second["expiring.example"])
	if st := e.status("expiring.example"); st.State != wire.StateInstalled || st.Error != "" || !st.InstallAt.IsZero() {
		t.Errorf("status after the retry %+v", st)
	}
	// The one outside the deadline is still left alone, hours later.
	clock.Offset(5 * time.Hour)
	if rep := n.sync(t); len(rep.Installs) != 0 {
		t.Errorf("later.example: %+v", rep.Installs)
	}
	wantServed(t, liveDir(stageDir, "later.example"), first["later.example"])
}

// TestInstallDueStagedAgainAfterPlanning: a bundle staged after installDue
// planned the one before (Run's consumer between Read and Load) is not
// installed on that plan: it waits for its own, here its not-before.
func TestInstallDueStagedAgainAfterPlanning(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t)
	id, _ := age.GenerateX25519Identity()
	key, _ := crypto.GenerateSigningKey()
	stageDir := t.TempDir()
	const name = "example.com"
	n, err := New(Config{
		Node: nodeName, Identities: []age.Identity{id}, Trusted: []crypto.PublicKey{key.Public()}, StageDir: stageDir,
		Certificates: map[string]Certificate{name: {Name: name, InstallDir: liveDir(stageDir, name), Schedule: mustSchedule(t, ScheduleImmediate)}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	put := func(c *testcert.Cert) {
		t.Helper()
		if _, err := n.stage.Put(stagedOf(t, name, c)); err != nil {
			t.Fatal(err)
		}
	}
	c1 := ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-2 * time.Hour)})
	c2 := ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-time.Hour)})
	c3 := ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(time.Hour)}) // not valid for an hour
	put(c1)
	if res, _ := n.installDue(context.Background()); len(res) != 1 || res[0].Outcome != InstallInstalled {
		t.Fatalf("c1: %+v", res)
	}

	// c2 is due at once; c3 is staged while it is planned.
	put(c2)
	n.beforeLoad = func(string) { put(c3); n.beforeLoad = nil }
	res, waiting := n.installDue(context.Background())
	if len(res) != 0 || len(waiting) != 0 {
		t.Fatalf("staged again after planning: installs %+v, waiting %+v, want neither", res, waiting)
	}
	wantServed(t, liveDir(stageDir, name), c1)

	// The next pass plans c3: at its not-before.
	res, waiting = n.installDue(context.Background())
	if len(res) != 0 || len(waiting) != 1 || !waiting[0].At.Equal(c3.Leaf.NotBefore) {
		t.Fatalf("the next pass: installs %+v, waiting %+v, want c3 at %v", res, waiting, c3.Leaf.NotBefore)
	}
	wantServed(t, liveDir(stageDir, name), c1)
}

// TestRunRetriesUnrecordedInstallFailure: an install that fails before the
// install state can record it (here install_dir's parent is a file, so
// the node can make neither its store nor its lock) is logged, reported
// failed in the status record, and tried again after a growing delay; once
// the parent can be made, the next try installs and the status record
// says so.
func TestRunRetriesUnrecordedInstallFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stageDir := t.TempDir()
	const name = "example.com"
	n := e.node(stageDir, name)
	n.retryBase, n.retryMax = 50*time.Millisecond, 400*time.Millisecond
	installDir := liveDir(stageDir, name)
	parent := filepath.Dir(installDir)
	treetest.WriteFile(t, parent, []byte("not a folder\n"), 0o644)
	c := e.issue(time.Hour)
	e.publishSealed(name, c)
	stop := startRun(t, n)
	defer stop()
	natstest.WaitFor(t, 30*time.Second, "three failed installs", func() bool { return len(n.logs.Events("install_failed")) >= 3 })
	failed := n.logs.Events("install_failed")
	for i, ev := range failed[:3] {
		if ev["attempts"] != float64(i+1) || ev["name"] != name || ev["error"] == "" {
			t.Errorf("install_failed %d: %v, want attempt %d naming %s and its error", i+1, ev, i+1, name)
		}
	}
	natstest.WaitFor(t, 30*time.Second, "the failure in the status record", func() bool {
		st, ok := e.tryStatus(name)
		return ok && st.State == wire.StateFailed && st.ErrorKind == wire.ErrorKindInstall && strings.Contains(st.Error, name)
	})
	if err := os.Remove(parent); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 30*time.Second, "the install once the folder can be made", func() bool { return len(n.logs.Events("install_done")) == 1 })
	wantServed(t, installDir, c)
	natstest.WaitFor(t, 30*time.Second, "the status record to say installed", func() bool {
		st, ok := e.tryStatus(name)
		return ok && st.State == wire.StateInstalled && st.Error == ""
	})
}
