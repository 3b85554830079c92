package subscriber

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/natstest"
	"github.com/certsync/certsync/internal/testcert"
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
	var mu sync.Mutex
	clock := time.Now().Truncate(time.Minute)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	setClock := func(t time.Time) { mu.Lock(); clock = t; mu.Unlock() }
	window := clock.Add(2 * time.Hour)
	cronExpr := fmt.Sprintf("%d %d * * *", window.Minute(), window.Hour())
	live := func(name string) string { return filepath.Join(stageDir+".live", name) }
	n := e.nodeWith(stageDir, now,
		Certificate{Name: "manual.example", InstallDir: live("manual.example"), Schedule: ScheduleManual},
		Certificate{Name: "cron.example", InstallDir: live("cron.example"), Schedule: cronExpr, ExpiryDeadline: 7 * 24 * time.Hour},
		Certificate{Name: "expiring.example", InstallDir: live("expiring.example"), Schedule: cronExpr, ExpiryDeadline: 7 * 24 * time.Hour},
	)
	names := []string{"manual.example", "cron.example", "expiring.example"}
	issue := func(ago, validity time.Duration) *testcert.Cert {
		return e.ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-ago), Validity: validity})
	}
	publish := func(name string, c *testcert.Cert) {
		e.publish(name, e.seal(name, c), c)
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
	wantServed(t, live("expiring.example"), second["expiring.example"])
	for _, name := range []string{"manual.example", "cron.example"} {
		wantServed(t, live(name), first[name])
		if st := state(name); st.State != wire.StateStaged || st.InstalledFingerprint != fingerprint(first[name].Leaf.Raw) ||
			st.StagedFingerprint != fingerprint(second[name].Leaf.Raw) {
			t.Errorf("%s before its window: %+v", name, st)
		}
	}

	// A minute before the window: still waiting. In the window: the cron
	// one installs; the manual one never does on its own.
	setClock(window.Add(-time.Minute))
	if rep := n.sync(t); len(rep.Installs) != 0 {
		t.Errorf("before the window: %+v", rep.Installs)
	}
	if _, next := n.installDue(context.Background()); !next.Equal(window) {
		t.Errorf("next due %v, want %v", next, window)
	}
	setClock(window)
	rep = n.sync(t)
	if len(rep.Installs) != 1 || rep.Installs[0].Name != "cron.example" || rep.Installs[0].Outcome != InstallInstalled {
		t.Fatalf("in the window: %+v", rep.Installs)
	}
	wantServed(t, live("cron.example"), second["cron.example"])
	if st := state("cron.example"); st.State != wire.StateInstalled {
		t.Errorf("cron.example after its window: %+v", st)
	}
	setClock(window.Add(30 * 24 * time.Hour))
	if rep := n.sync(t); len(rep.Installs) != 0 {
		t.Errorf("a month later: %+v", rep.Installs)
	}
	wantServed(t, live("manual.example"), first["manual.example"])

	// node install: the named one, now; an unknown name is an error.
	if _, err := n.Install(context.Background(), "manual.example", "nope.example"); !errors.Is(err, ErrUnknownCertificate) {
		t.Errorf("Install of an unknown name: %v", err)
	}
	wantServed(t, live("manual.example"), first["manual.example"])
	rep, err := n.Install(context.Background(), "manual.example")
	if err != nil || rep.Failed() || len(rep.Installs) != 1 || rep.Installs[0].Outcome != InstallInstalled {
		t.Fatalf("Install: %+v %v", rep, err)
	}
	wantServed(t, live("manual.example"), second["manual.example"])
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
	n := e.nodeWith(stageDir, nil, Certificate{Name: "example.com", InstallDir: filepath.Join(stageDir+".live", "example.com"), Check: "/bin/false"})
	c := e.issue(time.Hour)
	e.publish("example.com", e.seal("example.com", c), c)
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
	if err := os.WriteFile(reload, []byte("#!/bin/sh\ntouch "+started+"\nsleep 1\ntouch "+finished+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	installDir := filepath.Join(stageDir+".live", "example.com")
	n := e.nodeWith(stageDir, nil, Certificate{Name: "example.com", InstallDir: installDir, Reload: reload})
	stop := startRun(t, n)
	c := e.issue(time.Hour)
	e.publish("example.com", e.seal("example.com", c), c)
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
