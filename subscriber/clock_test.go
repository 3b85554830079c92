package subscriber

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/testing/testclock"
	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/publisher"
)

// fastRetries makes the node's message retries quick, for tests that wait
// for a redelivery.
func fastRetries(n *testNode) {
	n.retryBase, n.retryMax = 20*time.Millisecond, 200*time.Millisecond
}

func resultOf(t *testing.T, rep *Report, seq uint64) Result {
	t.Helper()
	for _, r := range rep.Results {
		if r.Sequence == seq {
			return r
		}
	}
	t.Fatalf("no result for seq %d: %+v", seq, rep.Results)
	return Result{}
}

// TestSyncClockHoldsBack: a bundle the node's clock says is not valid yet,
// or expired, is held back for now, not refused: it is delivered again,
// the status says it is the node's clock, an older bundle of its batch is
// never staged instead, and once the clock is right it stages and installs.
func TestSyncClockHoldsBack(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		what   string
		offset time.Duration
		want   error
	}{
		{"72 hours behind", -72 * time.Hour, crypto.ErrNotYetValid},
		{"100 days ahead", 100 * 24 * time.Hour, crypto.ErrExpired},
	} {
		t.Run(tc.what, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.t = t
			var clock testclock.Clock
			stageDir := t.TempDir()
			installDir := liveDir(stageDir, "example.com")
			n := e.nodeWith(stageDir, clock.Now, Certificate{Name: "example.com", InstallDir: installDir})
			fastRetries(n)
			base := e.issue(100 * time.Hour)
			e.publishSealed("example.com", base)
			expectOnly(t, n.sync(t), OutcomeStaged)
			wantServed(t, installDir, base)

			// The clock goes wrong. An older renewal (valid by the wrong
			// clock when it is behind) and the newest arrive together.
			clock.Offset(tc.offset)
			older, newest := e.issue(90*time.Hour), e.issue(time.Hour)
			e.publishSealed("example.com", older)
			seq := e.publishSealed("example.com", newest)
			rep := n.sync(t)
			expectOnly(t, rep, OutcomeFailed, OutcomeSuperseded)
			r := resultOf(t, rep, seq)
			if r.Outcome != OutcomeFailed || !errors.Is(r.Err, ErrClock) || !errors.Is(r.Err, tc.want) || IsPermanent(r.Err) {
				t.Errorf("newest: %+v, want held back by the clock (%v), not permanent", r, tc.want)
			}
			if !rep.Failed() {
				t.Error("report not failed: node sync would exit 0")
			}
			if meta, err := n.Stage().Read("example.com"); err != nil || meta.Version != uint64(base.Leaf.NotBefore.Unix()) {
				t.Errorf("staged %+v, %v; want the base kept", meta, err)
			}
			wantServed(t, installDir, base)
			st := e.status("example.com")
			if st.State != wire.StateFailed || !strings.Contains(st.Error, "node's clock") || !strings.Contains(st.Error, "node's time is") ||
				st.StagedFingerprint != fingerprint(base.Leaf.Raw) || st.InstalledFingerprint != fingerprint(base.Leaf.Raw) {
				t.Errorf("status %+v, want failed by the node's clock, holding the base", st)
			}
			if ev := n.logs.Events("bundle_refused"); len(ev) != 0 {
				t.Errorf("refused: %v", ev)
			}
			retries := n.logs.Events("bundle_retry")
			if len(retries) != 1 || retries[0]["level"] != "WARN" || retries[0]["seq"] != float64(seq) {
				t.Errorf("bundle_retry log %v, want one warning for seq %d", retries, seq)
			}

			// Retried, not terminated: it comes back alone (the older one
			// was acknowledged), and is held back again.
			natstest.WaitFor(t, 10*time.Second, "the newest bundle delivered again", func() bool {
				rep := n.sync(t)
				return len(rep.Results) == 1 && rep.Results[0].Sequence == seq && errors.Is(rep.Results[0].Err, ErrClock)
			})

			// The clock is right again: the next delivery stages and
			// installs it.
			clock.Offset(0)
			natstest.WaitFor(t, 10*time.Second, "the newest bundle staged once the clock is right", func() bool {
				return n.sync(t).Count(OutcomeStaged) == 1
			})
			wantServed(t, installDir, newest)
			if st := e.status("example.com"); st.State != wire.StateInstalled || st.Error != "" || st.InstalledFingerprint != fingerprint(newest.Leaf.Raw) {
				t.Errorf("status after the clock was fixed %+v", st)
			}
			want := []uint64{uint64(base.Leaf.NotBefore.Unix()), uint64(newest.Leaf.NotBefore.Unix())}
			if got := n.stagedVersions(); !equalVersions(got, want) {
				t.Errorf("staged %v, want %v: the older one never", got, want)
			}
			// Nothing comes back: every message is settled.
			expectOnly(t, n.sync(t))
		})
	}
}

func equalVersions(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRunClock72HoursBehind: `node run` on a node whose clock is 72 hours
// behind holds back a renewal published with the real publisher, says so
// in its status, and installs it once the clock is right.
func TestRunClock72HoursBehind(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var clock testclock.Clock
	clock.Offset(-72 * time.Hour)
	stageDir := t.TempDir()
	installDir := liveDir(stageDir, "example.com")
	n := e.nodeWith(stageDir, clock.Now, Certificate{Name: "example.com", InstallDir: installDir})
	fastRetries(n)
	pub, err := publisher.New(publisher.Config{
		NATS:         natsconn.Options{URL: e.url},
		SigningKey:   e.key,
		Nodes:        map[string]string{nodeName: e.id.Recipient().String()},
		Certificates: map[string][]string{"example.com": {nodeName}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(c *testcert.Cert) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pub.Publish(ctx, bundleOf("example.com", c)); err != nil {
			t.Fatalf("publishing: %v", err)
		}
	}
	statusIs := func(what string, ok func(wire.Status) bool) {
		t.Helper()
		natstest.WaitFor(t, 30*time.Second, what, func() bool {
			st, found := e.tryStatus("example.com")
			return found && ok(st)
		})
	}

	// Valid by the node's clock too: installed.
	base := e.issue(100 * time.Hour)
	publish(base)
	stop := startRun(t, n)
	statusIs("the base installed", func(st wire.Status) bool {
		return st.State == wire.StateInstalled && st.InstalledFingerprint == fingerprint(base.Leaf.Raw)
	})

	// The renewal is 71 hours ahead of the node's clock: held back.
	renewal := e.issue(time.Hour)
	publish(renewal)
	statusIs("the renewal held back by the node's clock", func(st wire.Status) bool {
		return st.State == wire.StateFailed && strings.Contains(st.Error, "not valid until") && strings.Contains(st.Error, "node's clock") &&
			st.StagedFingerprint == fingerprint(base.Leaf.Raw)
	})
	natstest.WaitFor(t, 30*time.Second, "the renewal delivered again", func() bool {
		return len(n.logs.Events("bundle_retry")) >= 3
	})
	if meta, err := n.Stage().Read("example.com"); err != nil || meta.Fingerprint.String() != fingerprint(base.Leaf.Raw) {
		t.Errorf("staged %+v, %v; want the base", meta, err)
	}
	wantServed(t, installDir, base)

	// The clock is right: the next delivery stages and installs it.
	clock.Offset(0)
	statusIs("the renewal installed", func(st wire.Status) bool {
		return st.State == wire.StateInstalled && st.Error == "" && st.InstalledFingerprint == fingerprint(renewal.Leaf.Raw)
	})
	wantServed(t, installDir, renewal)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, ev := range n.logs.Events("bundle_retry") {
		if ev["level"] != "WARN" {
			t.Errorf("bundle_retry at %v", ev["level"])
		}
	}
	if ev := n.logs.Events("bundle_refused"); len(ev) != 0 {
		t.Errorf("refused: %v", ev)
	}
}
