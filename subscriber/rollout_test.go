package subscriber

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/testing/metricstest"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/testing/testclock"
	"github.com/certsync/certsync/internal/testing/treetest"
	"github.com/certsync/certsync/internal/wire"
)

// heldBundle seals c as version v of certificate name with the hold
// record, as a publisher with a rollout policy does.
func (e *env) sealHeld(name string, c *testcert.Cert, v uint64) []byte {
	e.t.Helper()
	b := bundleOf(name, c)
	b.Version = v
	data, err := crypto.Seal(b, e.key, []age.Recipient{e.id.Recipient()}, crypto.WithHold())
	if err != nil {
		e.t.Fatalf("sealing %q: %v", name, err)
	}
	return data
}

// sealVersion seals c as version v of name without a hold.
func (e *env) sealVersion(name string, c *testcert.Cert, v uint64) []byte {
	e.t.Helper()
	b := bundleOf(name, c)
	b.Version = v
	return e.sealWith(b, e.key, e.id.Recipient())
}

// release is a rollout record of certificate name for version v of c,
// generation gen, releasing nodes.
func release(name string, c *testcert.Cert, v, gen uint64, nodes ...string) *crypto.RolloutRecord {
	return &crypto.RolloutRecord{
		Name: name, Version: v, Fingerprint: crypto.FingerprintOf(c.Leaf.Raw), Generation: gen,
		State: crypto.RolloutRunning, Released: nodes, Time: time.Now(), WaveStarted: time.Now(),
	}
}

// signRollout signs r with key.
func (e *env) signRollout(r *crypto.RolloutRecord, key *crypto.SigningKey) []byte {
	e.t.Helper()
	data, err := crypto.SignRollout(r, key)
	if err != nil {
		e.t.Fatalf("signing rollout record: %v", err)
	}
	return data
}

// publishRollout puts data on certificate name's rollout subject, as the
// controller does, and returns its stream sequence.
func (e *env) publishRollout(name string, data []byte) uint64 {
	e.t.Helper()
	m := nats.NewMsg(wire.RolloutSubject(name))
	m.Data = data
	m.Header.Set(wire.HeaderName, name)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := e.js.PublishMsg(ctx, m)
	if err != nil {
		e.t.Fatalf("publishing on %s: %v", m.Subject, err)
	}
	e.unsynced++
	return ack.Sequence
}

// asFormat1 rewrites a format 2 envelope without format 2 records as the
// format 1 envelope an older publisher wrote: the same bytes with format
// byte 1, signed again by key.
func asFormat1(t *testing.T, data []byte, key *crypto.SigningKey) []byte {
	t.Helper()
	blk, _ := pem.Decode(key.MarshalPEM())
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte(nil), data...)
	const formatOffset = len("CERTSYNC")
	if out[formatOffset] != 2 {
		t.Fatalf("format byte %d, want 2", out[formatOffset])
	}
	out[formatOffset] = 1
	n := len(out) - ed25519.SignatureSize
	copy(out[n:], ed25519.Sign(k.(ed25519.PrivateKey), append([]byte("certsync envelope v1\x00"), out[:n]...)))
	return out
}

// installedNow is what install_dir of name serves, as its fingerprint.
func (tn *testNode) installedVersion(t *testing.T, name string) uint64 {
	t.Helper()
	inst, _, err := tn.installers[name].installed()
	if err != nil || inst == nil {
		t.Fatalf("installed %s: %v %v", name, inst, err)
	}
	return inst.Version
}

// TestSyncRolloutReleases: a held renewal is staged but waits: the report,
// the status record and the metrics say so. Records that do not release
// this node, or that are forged, unsigned, for another certificate or
// fingerprint, or aborted, release nothing (the bad ones are refused, with
// their reason); the release for this node installs it.
func TestSyncRolloutReleases(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stageDir := t.TempDir()
	const name = "example.com"
	n := e.node(stageDir, name, "other.example")
	n.cfg.MetricsListen = "127.0.0.1:0"
	n.Node = mustNodeWithMetrics(t, n.Node)
	installDir := liveDir(stageDir, name)

	old := e.issue(3 * time.Hour)
	e.publish(name, e.sealVersion(name, old, 1_000), old)
	if rep := n.sync(t); rep.InstallCount(InstallInstalled) != 1 {
		t.Fatalf("first install: %+v", rep.Installs)
	}
	renewal := e.issue(time.Hour)
	const v = 2_000
	e.publish(name, e.sealHeld(name, renewal, v), renewal)
	rep := n.sync(t)
	expectOnly(t, rep, OutcomeStaged)
	if len(rep.Installs) != 0 || len(rep.Scheduled) != 1 || rep.Scheduled[0].Why != whyRollout {
		t.Fatalf("held bundle: installs %+v, scheduled %+v", rep.Installs, rep.Scheduled)
	}
	if meta, err := n.stage.Read(name); err != nil || !meta.Hold {
		t.Fatalf("staged record %+v %v, want hold", meta, err)
	}
	wantServed(t, installDir, old)
	st := e.status(name)
	if st.Rollout != wire.RolloutWaiting || !st.InstallAt.IsZero() || st.StagedVersion != v || st.State != wire.StateStaged {
		t.Errorf("status while held: %+v", st)
	}
	n.observeScheduled(rep.Scheduled)
	wantMetric(t, n.Node, "certsync_rollout_waiting", name, 1, true)
	wantMetric(t, n.Node, "certsync_install_scheduled_timestamp_seconds", name, 0, false)

	otherKey, err := crypto.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	otherCert := e.issue(2 * time.Hour)
	aborted := release(name, renewal, v, 5, nodeName)
	aborted.State = crypto.RolloutAborted
	otherName := release("other.example", renewal, v, 9, nodeName)
	good := e.signRollout(release(name, renewal, v, 6, nodeName), e.key) // after the aborted one
	unsigned := append([]byte(nil), good...)
	unsigned[len(unsigned)-1] ^= 1
	for _, tc := range []struct {
		what   string
		data   []byte
		reason string // "" when kept, releasing nothing
	}{
		{"another node released", e.signRollout(release(name, renewal, v, 1, "web2", "web3"), e.key), ""},
		{"another fingerprint", e.signRollout(release(name, otherCert, v, 2, nodeName), e.key), ""},
		{"another version", e.signRollout(release(name, renewal, v+1, 2, nodeName), e.key), ""},
		{"aborted", e.signRollout(aborted, e.key), ""},
		{"forged", e.signRollout(release(name, renewal, v, 4, nodeName), otherKey), "untrusted_signer"},
		{"bad signature", unsigned, "bad_signature"},
		{"not a record", []byte("CERTSYNR not really"), "malformed"},
		{"another certificate's record on this subject", e.signRollout(otherName, e.key), "wrong_subject"},
	} {
		seq := e.publishRollout(name, tc.data)
		rep := n.sync(t)
		r := resultOf(t, rep, seq)
		if !r.Rollout {
			t.Errorf("%s: result %+v not marked a rollout record", tc.what, r)
		}
		switch {
		case tc.reason == "" && r.Outcome != OutcomeStaged:
			t.Errorf("%s: %+v, want kept", tc.what, r)
		case tc.reason != "" && (r.Outcome != OutcomeRefused || refusalReason(r.Err) != tc.reason):
			t.Errorf("%s: %+v, want refused as %s", tc.what, r, tc.reason)
		}
		if tc.reason != "" {
			checkNoSecret(t, tc.what, r.Err.Error(), renewal, old)
			if st := e.status(name); st.ErrorKind != wire.ErrorKindBundle || !strings.Contains(st.Error, "rollout record") && !strings.Contains(st.Error, "refusing") {
				t.Errorf("%s: status %+v, want the refusal", tc.what, st)
			}
		}
		if len(rep.Installs) != 0 {
			t.Fatalf("%s released something: %+v", tc.what, rep.Installs)
		}
		wantServed(t, installDir, old)
	}
	if got := len(n.logs.Events("rollout_refused")); got != 4 {
		t.Errorf("%d rollout_refused events, want 4", got)
	}

	seq := e.publishRollout(name, good)
	rep = n.sync(t)
	if r := resultOf(t, rep, seq); r.Outcome != OutcomeStaged {
		t.Fatalf("release: %+v", r)
	}
	if len(rep.Installs) != 1 || rep.Installs[0].Outcome != InstallInstalled {
		t.Fatalf("release did not install: %+v", rep.Installs)
	}
	wantServed(t, installDir, renewal)
	st = e.status(name)
	if st.Rollout != wire.RolloutReleased || st.RolloutGeneration != 6 || st.State != wire.StateInstalled || st.InstalledVersion != v {
		t.Errorf("status after release: %+v", st)
	}
	if st.Error != "" {
		t.Errorf("status after release still says %q", st.Error)
	}
	n.observeScheduled(rep.Scheduled)
	wantMetric(t, n.Node, "certsync_rollout_waiting", name, 0, true)
	// The same record again changes nothing.
	seq = e.publishRollout(name, good)
	if r := resultOf(t, n.sync(t), seq); r.Outcome != OutcomeUnchanged {
		t.Errorf("the same record again: %+v", r)
	}
}

// TestSyncRolloutWindowed: a windowed node released after the day's window
// installs in its next window, not at once; its status says the schedule.
func TestSyncRolloutWindowed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stageDir := t.TempDir()
	clock := testclock.At(time.Now().Truncate(time.Minute))
	window := clock.Now().Add(time.Hour).UTC()
	cronExpr := fmt.Sprintf("%d %d * * *", window.Minute(), window.Hour())
	const name = "example.com"
	n := e.nodeWith(stageDir, clock.Now, Certificate{Name: name, InstallDir: liveDir(stageDir, name),
		Schedule: mustSchedule(t, cronExpr), Splay: time.Second, ExpiryDeadline: ExpiryDeadlineOff})
	old := e.issue(3 * time.Hour)
	e.publish(name, e.sealVersion(name, old, 1_000), old)
	n.sync(t)
	renewal := e.issue(2 * time.Hour)
	e.publish(name, e.sealHeld(name, renewal, 2_000), renewal)
	n.sync(t)
	st := e.status(name)
	if st.Schedule != cronExpr || !st.NextWindow.Equal(window) || st.Splay != "1s" || st.ExpiryDeadline != "0s" || st.Rollout != wire.RolloutWaiting {
		t.Errorf("status %+v, want schedule %q, next window %v", st, cronExpr, window)
	}

	// Released two hours after the window: the next is a day later.
	clock.Set(window.Add(2 * time.Hour))
	e.publishRollout(name, e.signRollout(release(name, renewal, 2_000, 1, nodeName), e.key))
	rep := n.sync(t)
	next := window.Add(24 * time.Hour)
	splay := splayOffset(nodeName, &Staged{Name: name, Release: crypto.Release{Version: 2_000, Fingerprint: crypto.FingerprintOf(renewal.Leaf.Raw)}}, time.Second)
	if len(rep.Installs) != 0 || len(rep.Scheduled) != 1 || !rep.Scheduled[0].At.Equal(next.Add(splay)) || rep.Scheduled[0].Why != "window" {
		t.Fatalf("released after the window: installs %+v, scheduled %+v, want the next window %v", rep.Installs, rep.Scheduled, next)
	}
	if st := e.status(name); st.Rollout != wire.RolloutReleased || !st.InstallAt.Equal(next.Add(splay)) {
		t.Errorf("status once released: %+v", st)
	}
	clock.Set(next.Add(splay))
	if rep := n.sync(t); rep.InstallCount(InstallInstalled) != 1 {
		t.Fatalf("in the window: %+v", rep.Installs)
	}
	wantServed(t, liveDir(stageDir, name), renewal)
}

// TestSyncRolloutExpiryOverride: a held bundle that is never released
// installs once the certificate in service comes within its expiry
// deadline, logged and in the status record.
func TestSyncRolloutExpiryOverride(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stageDir := t.TempDir()
	var clock testclock.Clock
	const name = "example.com"
	n := e.nodeWith(stageDir, clock.Now, Certificate{Name: name, InstallDir: liveDir(stageDir, name), ExpiryDeadline: 7 * 24 * time.Hour})
	old := e.ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-time.Hour), Validity: 10 * 24 * time.Hour})
	e.publish(name, e.sealVersion(name, old, 1_000), old)
	n.sync(t)
	renewal := e.issue(time.Hour)
	e.publish(name, e.sealHeld(name, renewal, 2_000), renewal)
	rep := n.sync(t)
	override := old.Leaf.NotAfter.Add(-7 * 24 * time.Hour)
	if len(rep.Installs) != 0 || len(rep.Scheduled) != 1 || !rep.Scheduled[0].At.Equal(override) || rep.Scheduled[0].Why != whyRollout {
		t.Fatalf("held: installs %+v, scheduled %+v, want waiting until %v", rep.Installs, rep.Scheduled, override)
	}
	if st := e.status(name); st.Rollout != wire.RolloutWaiting || !st.InstallAt.IsZero() {
		t.Errorf("status while held: %+v", st)
	}
	clock.Offset(time.Until(override) + time.Minute)
	rep = n.sync(t)
	if rep.InstallCount(InstallInstalled) != 1 {
		t.Fatalf("at the expiry deadline: %+v", rep.Installs)
	}
	wantServed(t, liveDir(stageDir, name), renewal)
	if len(n.logs.Events("install_rollout_override")) != 1 {
		t.Error("no install_rollout_override event")
	}
	if st := e.status(name); st.Rollout != wire.RolloutExpiry || st.State != wire.StateInstalled {
		t.Errorf("status after the override: %+v", st)
	}
}

// TestSyncRolloutFailedRetry: a held version whose install failed under a
// rollout generation is not tried again by that generation (nor by the
// same record again), only by a later one; the status says which version
// failed.
func TestSyncRolloutFailedRetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stageDir := t.TempDir()
	ok := filepath.Join(t.TempDir(), "ok")
	const name = "example.com"
	n := e.nodeWith(stageDir, nil, Certificate{Name: name, InstallDir: liveDir(stageDir, name),
		Check: mustCommand(t, "/usr/bin/test -e "+ok)})
	old := e.issue(3 * time.Hour)
	treetest.WriteFile(t, ok, nil, 0o600)
	e.publish(name, e.sealVersion(name, old, 1_000), old)
	n.sync(t)
	if err := os.Remove(ok); err != nil {
		t.Fatal(err)
	}
	renewal := e.issue(time.Hour)
	e.publish(name, e.sealHeld(name, renewal, 2_000), renewal)
	e.publishRollout(name, e.signRollout(release(name, renewal, 2_000, 1, nodeName), e.key))
	rep := n.sync(t)
	if rep.InstallCount(InstallFailed) != 1 {
		t.Fatalf("released with a failing check: %+v", rep.Installs)
	}
	wantServed(t, liveDir(stageDir, name), old)
	st := e.status(name)
	if st.FailedVersion != 2_000 || st.FailedFingerprint != fingerprint(renewal.Leaf.Raw) || st.State != wire.StateFailed || st.Rollout != wire.RolloutReleased {
		t.Errorf("status after the failure: %+v", st)
	}
	treetest.WriteFile(t, ok, nil, 0o600)
	// The same generation, again or written later (a pause), tries nothing.
	e.publishRollout(name, e.signRollout(release(name, renewal, 2_000, 1, nodeName), e.key))
	if rep := n.sync(t); len(rep.Installs) != 0 {
		t.Fatalf("generation 1 again: %+v", rep.Installs)
	}
	// A later generation (a resume) tries again.
	e.publishRollout(name, e.signRollout(release(name, renewal, 2_000, 2, nodeName), e.key))
	if rep := n.sync(t); rep.InstallCount(InstallInstalled) != 1 {
		t.Fatalf("generation 2: %+v", rep.Installs)
	}
	wantServed(t, liveDir(stageDir, name), renewal)
	if st := e.status(name); st.FailedVersion != 0 || st.State != wire.StateInstalled {
		t.Errorf("status after the retry: %+v", st)
	}
}

// TestSyncRollback: format 2 versions are the publisher's. A rollback (a
// higher version carrying the older certificate) installs as any new
// version, reloading, and the replay of the rolled-back-from envelope is
// then refused as a downgrade; so is a higher version of the very
// certificate in service (a rollback of a held renewal never released):
// installed again as that version.
func TestSyncRollback(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stageDir := t.TempDir()
	reloads := filepath.Join(t.TempDir(), "reloads")
	reload := filepath.Join(t.TempDir(), "reload.sh")
	treetest.WriteFile(t, reload, []byte("#!/bin/sh\necho x >> "+reloads+"\n"), 0o755)
	countReloads := func() int {
		data, _ := os.ReadFile(reloads)
		return strings.Count(string(data), "x")
	}
	n := e.nodeWith(stageDir, nil,
		Certificate{Name: "a.example", InstallDir: liveDir(stageDir, "a.example"), Reload: mustCommand(t, reload)},
		Certificate{Name: "b.example", InstallDir: liveDir(stageDir, "b.example"), Reload: mustCommand(t, reload)})

	// a.example: v1 A, v2 B installed, then v3 A.
	certA, certB := e.issue(3*time.Hour), e.issue(time.Hour)
	e.publish("a.example", e.sealVersion("a.example", certA, 1_000), certA)
	n.sync(t)
	newer := e.sealVersion("a.example", certB, 2_000)
	e.publish("a.example", newer, certB)
	n.sync(t)
	wantServed(t, liveDir(stageDir, "a.example"), certB)
	e.publish("a.example", e.sealVersion("a.example", certA, 3_000), certA)
	if rep := n.sync(t); rep.InstallCount(InstallInstalled) != 1 || rep.Failed() {
		t.Fatalf("rollback: %+v %+v", rep.Results, rep.Installs)
	}
	wantServed(t, liveDir(stageDir, "a.example"), certA)
	if got := n.installedVersion(t, "a.example"); got != 3_000 {
		t.Errorf("installed version %d, want 3000", got)
	}
	seq := e.publish("a.example", newer, certB)
	if r := resultOf(t, n.sync(t), seq); r.Outcome != OutcomeRefused || !errors.Is(r.Err, ErrDowngrade) {
		t.Errorf("replay of the rolled-back-from envelope: %+v", r)
	}
	wantServed(t, liveDir(stageDir, "a.example"), certA)

	// b.example: v1 A installed, v2 B held and never released, v3 A.
	e.publish("b.example", e.sealVersion("b.example", certA, 1_000), certA)
	n.sync(t)
	e.publish("b.example", e.sealHeld("b.example", certB, 2_000), certB)
	n.sync(t)
	before := countReloads()
	e.publish("b.example", e.sealVersion("b.example", certA, 3_000), certA)
	if rep := n.sync(t); rep.InstallCount(InstallInstalled) != 1 || rep.Failed() {
		t.Fatalf("the served certificate at a higher version: %+v %+v", rep.Results, rep.Installs)
	}
	if got := n.installedVersion(t, "b.example"); got != 3_000 {
		t.Errorf("installed version %d, want 3000", got)
	}
	if got := countReloads() - before; got != 1 {
		t.Errorf("%d reloads, want 1: installed as any new version", got)
	}
	if st := e.status("b.example"); st.State != wire.StateInstalled || st.InstalledVersion != 3_000 || st.Rollout != "" {
		t.Errorf("status %+v", st)
	}
}

// TestSyncFormat1Accepted: a format 1 envelope, as older publishers wrote
// and the stream may still hold, stages and installs; its version must be
// its leaf's NotBefore; a format 2 one after it moves on without a gap.
func TestSyncFormat1Accepted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stageDir := t.TempDir()
	const name = "example.com"
	n := e.node(stageDir, name)
	c := e.issue(3 * time.Hour)
	e.publish(name, asFormat1(t, e.seal(name, c), e.key), c)
	rep := n.sync(t)
	if rep.Failed() || rep.Count(OutcomeStaged) != 1 || rep.InstallCount(InstallInstalled) != 1 {
		t.Fatalf("format 1: %+v %+v", rep.Results, rep.Installs)
	}
	wantServed(t, liveDir(stageDir, name), c)
	bad := bundleOf(name, e.issue(2*time.Hour))
	bad.Version++
	seq := e.publish(name, asFormat1(t, e.sealWith(bad, e.key, e.id.Recipient()), e.key), nil)
	if r := resultOf(t, n.sync(t), seq); r.Outcome != OutcomeRefused || !errors.Is(r.Err, ErrInvalidBundle) {
		t.Errorf("format 1 with a version not its NotBefore: %+v", r)
	}
	renewal := e.issue(time.Hour)
	e.publish(name, e.sealVersion(name, renewal, uint64(time.Now().UnixMilli())), renewal)
	if rep := n.sync(t); rep.InstallCount(InstallInstalled) != 1 {
		t.Fatalf("format 2 after format 1: %+v %+v", rep.Results, rep.Installs)
	}
	wantServed(t, liveDir(stageDir, name), renewal)
}

// TestRolloutKeptAcrossRestart: a record that arrives before its bundle is
// kept (0600, in a 0700 folder) and releases the bundle once it is staged;
// a node started again on the same stage still holds the release.
func TestRolloutKeptAcrossRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stageDir := t.TempDir()
	const name = "example.com"
	n := e.nodeWith(stageDir, nil, Certificate{Name: name, InstallDir: liveDir(stageDir, name), Schedule: mustSchedule(t, ScheduleManual), ExpiryDeadline: ExpiryDeadlineOff})
	old := e.issue(3 * time.Hour)
	e.publish(name, e.sealVersion(name, old, 1_000), old)
	n.sync(t)
	renewal := e.issue(time.Hour)
	e.publishRollout(name, e.signRollout(release(name, renewal, 2_000, 1, nodeName), e.key))
	n.sync(t)
	e.publish(name, e.sealHeld(name, renewal, 2_000), renewal)
	n.sync(t)
	if st := e.status(name); st.Rollout != wire.RolloutReleased || st.RolloutGeneration != 1 {
		t.Errorf("record before its bundle: status %+v", st)
	}
	for path, want := range map[string]fs.FileMode{
		filepath.Join(stageDir, rolloutDir):               fs.ModeDir | 0o700,
		filepath.Join(stageDir, rolloutDir, name+".json"): 0o600,
	} {
		if fi, err := os.Lstat(path); err != nil || fi.Mode() != want {
			t.Errorf("%s: %v %v, want %v", path, fi.Mode(), err, want)
		}
	}

	again := e.nodeWith(stageDir, nil, Certificate{Name: name, InstallDir: liveDir(stageDir, name), Schedule: mustSchedule(t, ScheduleManual), ExpiryDeadline: ExpiryDeadlineOff})
	meta, err := again.stage.Read(name)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := again.stage.rollout(meta, again.cfg.Trusted)
	if err != nil || !released(rel.record(), nodeName) || rel.Generation != 1 {
		t.Fatalf("after a restart: %+v %v", rel, err)
	}
	// A node that no longer trusts the key holds no release.
	other, err := crypto.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	if rel, err := again.stage.rollout(meta, []crypto.PublicKey{other.Public()}); err != nil || rel != nil {
		t.Errorf("with another trusted key: %+v %v", rel, err)
	}
	rep, err := again.Install(context.Background(), name)
	if err != nil || rep.InstallCount(InstallInstalled) != 1 {
		t.Fatalf("Install: %+v %v", rep, err)
	}
	if inst, _, _ := again.installers[name].installed(); inst == nil || inst.Rollout != wire.RolloutReleased {
		t.Errorf("installed record %+v, want rollout released", inst)
	}
}

// TestRunWakesOnRollout: Run installs a held bundle as soon as its release
// arrives, without waiting for anything else.
func TestRunWakesOnRollout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stageDir := t.TempDir()
	const name = "example.com"
	n := e.node(stageDir, name)
	old := e.issue(3 * time.Hour)
	e.publish(name, e.sealVersion(name, old, 1_000), old)
	stop := startRun(t, n)
	defer stop()
	natstest.WaitFor(t, 30*time.Second, "the first install", func() bool { return len(n.logs.Events("install_done")) == 1 })
	renewal := e.issue(time.Hour)
	e.publish(name, e.sealHeld(name, renewal, 2_000), renewal)
	natstest.WaitFor(t, 30*time.Second, "the held bundle to wait", func() bool { return len(n.logs.Events("install_held")) == 1 })
	e.publishRollout(name, e.signRollout(release(name, renewal, 2_000, 1, nodeName), e.key))
	natstest.WaitFor(t, 10*time.Second, "the release to install", func() bool { return len(n.logs.Events("install_done")) == 2 })
	wantServed(t, liveDir(stageDir, name), renewal)
}

// TestBindCreatesConsumerWithRollouts: a node that creates its own
// consumer filters its certificates' rollout subjects when the stream
// holds them, and only their bundle subjects on a stream set up before
// rollouts, where it still stages bundles.
func TestBindCreatesConsumerWithRollouts(t *testing.T) {
	t.Parallel()
	for _, rollouts := range []bool{true, false} {
		t.Run(fmt.Sprint("rollouts=", rollouts), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			if !rollouts {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				cfg := wire.StreamConfig(wire.StreamOptions{})
				cfg.Subjects = []string{wire.Subjects}
				if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
					t.Fatal(err)
				}
			}
			n := e.node(t.TempDir(), "example.com")
			c := e.issue(time.Hour)
			e.publishSealed("example.com", c)
			if rep := n.sync(t); rep.Count(OutcomeStaged) != 1 {
				t.Fatalf("sync: %+v", rep.Results)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cons, err := e.js.Consumer(ctx, wire.Stream, wire.ConsumerName(nodeName))
			if err != nil {
				t.Fatal(err)
			}
			want := []string{wire.Subject("example.com")}
			if rollouts {
				want = append(want, wire.RolloutSubject("example.com"))
			}
			if got := cons.CachedInfo().Config.FilterSubjects; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("filter %v, want %v", got, want)
			}
			if ev := n.logs.Events("consumer_filter_mismatch"); len(ev) != 0 {
				t.Errorf("mismatch logged: %v", ev)
			}
		})
	}
}

// TestCheckFilter: both shapes of filter are right; one with some rollout
// subjects but not each certificate's is a mismatch.
func TestCheckFilter(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		what     string
		filter   []string
		mismatch bool
		delivers bool // example.org's rollout records
	}{
		{"bundles only", []string{wire.Subject("example.com"), wire.Subject("example.org")}, false, false},
		{"bundles and rollouts", []string{wire.Subject("example.com"), wire.RolloutSubject("example.com"), wire.Subject("example.org"), wire.RolloutSubject("example.org")}, false, true},
		{"wildcards", []string{wire.Subjects, wire.RolloutSubjects}, false, true},
		{"a rollout subject missing", []string{wire.Subject("example.com"), wire.RolloutSubject("example.com"), wire.Subject("example.org")}, true, false},
		{"a bundle subject missing", []string{wire.Subject("example.com")}, true, false},
	} {
		n := e.node(t.TempDir(), "example.com", "example.org")
		n.checkFilter(&jetstream.ConsumerInfo{Name: "node-web1", Config: jetstream.ConsumerConfig{FilterSubjects: tc.filter}})
		if got := len(n.logs.Events("consumer_filter_mismatch")) > 0; got != tc.mismatch {
			t.Errorf("%s: mismatch logged %v, want %v", tc.what, got, tc.mismatch)
		}
		if got := n.rolloutsDelivered("example.org"); got != tc.delivers {
			t.Errorf("%s: rollouts delivered %v, want %v", tc.what, got, tc.delivers)
		}
	}
}

// TestStageKeepRollout: per version and fingerprint the newest generation
// (or the same one written later) is kept; a record below the staged
// version is superseded; at most maxKeptRollouts are kept, the highest
// versions.
func TestStageKeepRollout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := openTestStage(t, t.TempDir())
	const name = "example.com"
	c := e.issue(time.Hour)
	staged := &Staged{Name: name, Release: crypto.Release{Version: 10, Fingerprint: crypto.FingerprintOf(c.Leaf.Raw)}, Hold: true, StagedAt: time.Now().UTC()}
	b := bundleOf(name, c)
	b.Version = 10
	if _, err := s.Put(b, staged); err != nil {
		t.Fatal(err)
	}
	trusted := []crypto.PublicKey{e.key.Public()}
	keep := func(r *crypto.RolloutRecord) string {
		t.Helper()
		out, err := s.keepRollout(e.signRollout(r, e.key), r, trusted, nodeName, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	gen := func(want uint64) {
		t.Helper()
		rel, err := s.rollout(staged, trusted)
		if err != nil || rel == nil || rel.Generation != want {
			t.Fatalf("kept %+v %v, want generation %d", rel, err, want)
		}
	}
	if got := keep(release(name, c, 10, 2, "web2")); got != rolloutKept {
		t.Errorf("first: %s", got)
	}
	if rel, _ := s.rollout(staged, trusted); rel == nil || !rel.Released.IsZero() {
		t.Errorf("not released yet: %+v", rel)
	}
	if got := keep(release(name, c, 10, 1, nodeName)); got != rolloutUnchanged {
		t.Errorf("an older generation: %s", got)
	}
	gen(2)
	r3 := release(name, c, 10, 3, nodeName)
	if got := keep(r3); got != rolloutKept {
		t.Errorf("generation 3: %s", got)
	}
	first, _ := s.rollout(staged, trusted)
	if first.Released.IsZero() {
		t.Fatal("generation 3 releases web1: no release time")
	}
	paused := *r3
	paused.State, paused.Time = crypto.RolloutPaused, r3.Time.Add(time.Second)
	if got := keep(&paused); got != rolloutKept {
		t.Errorf("generation 3 written later: %s", got)
	}
	if rel, _ := s.rollout(staged, trusted); rel.State != crypto.RolloutPaused || !rel.Released.Equal(first.Released) {
		t.Errorf("after the pause: %+v, want released at %v still", rel, first.Released)
	}
	if got := keep(release(name, c, 9, 7, nodeName)); got != rolloutSuperseded {
		t.Errorf("below the staged version: %s", got)
	}
	for v := uint64(11); v < 11+maxKeptRollouts; v++ {
		keep(release(name, c, v, 1, nodeName))
	}
	kept, err := s.readRollouts(name, trusted)
	if err != nil || len(kept) != maxKeptRollouts || kept[len(kept)-1].rec.Version != 11 {
		t.Errorf("kept %d records (lowest %d), want %d from version 11", len(kept), kept[len(kept)-1].rec.Version, maxKeptRollouts)
	}
}

// TestStagePutHoldChanges: the same certificate and version sealed again
// with another hold, in a later message, changes the staged record's hold;
// an earlier message does not.
func TestStagePutHoldChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := openTestStage(t, t.TempDir())
	c := e.issue(time.Hour)
	b := bundleOf("example.com", c)
	meta := func(seq uint64, hold bool) *Staged {
		return &Staged{Name: "example.com", Release: crypto.Release{Version: b.Version, Fingerprint: crypto.FingerprintOf(c.Leaf.Raw)}, Sequence: seq, Hold: hold}
	}
	for _, step := range []struct {
		seq         uint64
		hold        bool
		wantChanged bool
		wantHold    bool
	}{
		{5, true, true, true},
		{6, true, false, true},
		{4, false, false, true},
		{7, false, true, false},
	} {
		changed, err := s.Put(b, meta(step.seq, step.hold))
		if err != nil || changed != step.wantChanged {
			t.Errorf("seq %d hold %v: changed %v %v, want %v", step.seq, step.hold, changed, err, step.wantChanged)
		}
		if got, _ := s.Read("example.com"); got.Hold != step.wantHold {
			t.Errorf("seq %d: hold %v, want %v", step.seq, got.Hold, step.wantHold)
		}
	}
}

// wantMetric checks the metric name of certificate cert: present with
// value want, or absent.
func wantMetric(t *testing.T, n *Node, name, cert string, want float64, present bool) {
	t.Helper()
	rec := httptest.NewRecorder()
	n.metrics.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	families, err := metricstest.Parse(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := metricstest.Value(families[name], map[string]string{"certificate": cert})
	if ok != present || (present && v != want) {
		t.Errorf("%s{certificate=%q} = %v (present %v), want %v (present %v)", name, cert, v, ok, want, present)
	}
}
