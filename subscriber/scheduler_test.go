package subscriber

import (
	"testing"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
)

func TestDue(t *testing.T) {
	t.Parallel()
	loc := time.Local
	at := func(day, hour, min int) time.Time { return time.Date(2030, 3, day, hour, min, 0, 0, loc) }
	staged := &Staged{Name: "example.com", Release: crypto.Release{Version: 2, Fingerprint: testFingerprint("02"), NotAfter: at(10, 0, 0).AddDate(0, 3, 0)}, StagedAt: at(10, 14, 30)}
	old := &Staged{Name: "example.com", Release: crypto.Release{Version: 1, Fingerprint: testFingerprint("01"), NotAfter: at(30, 0, 0)}}
	expiring := &Staged{Name: "example.com", Release: crypto.Release{Version: 1, Fingerprint: testFingerprint("01"), NotAfter: at(12, 0, 0)}}
	nightly := mustSchedule(t, "0 3 * * *")
	manual := mustSchedule(t, "manual")
	immediate := mustSchedule(t, "immediate")
	week := 7 * 24 * time.Hour
	// Staged at 14:30 on the 10th, not valid until 20:00 that day.
	early := &Staged{Name: "example.com", Release: crypto.Release{Version: 3, Fingerprint: testFingerprint("03"), NotBefore: at(10, 20, 0), NotAfter: at(10, 20, 0).AddDate(0, 3, 0)}, StagedAt: at(10, 14, 30)}
	expired := &Staged{Name: "example.com", Release: crypto.Release{Version: 1, Fingerprint: testFingerprint("01"), NotAfter: at(10, 12, 0)}}
	expiresSoon := &Staged{Name: "example.com", Release: crypto.Release{Version: 1, Fingerprint: testFingerprint("01"), NotAfter: at(10, 17, 0)}}

	for _, tc := range []struct {
		what      string
		now       time.Time
		sch       Schedule
		staged    *Staged
		installed *Staged
		occupied  bool // install_dir holds something (implied by installed)
		splay     time.Duration
		deadline  time.Duration
		wantOK    bool
		wantAt    time.Time // zero: now
		wantWhy   string
	}{
		{what: "nothing staged", now: at(10, 15, 0), sch: immediate},
		{what: "same installed", now: at(10, 15, 0), sch: immediate, staged: staged, installed: staged},
		{what: "first install ignores manual", now: at(10, 15, 0), sch: manual, staged: staged, wantOK: true, wantWhy: "first"},
		{what: "first install ignores window", now: at(10, 15, 0), sch: nightly, staged: staged, wantOK: true, wantWhy: "first"},
		{what: "immediate", now: at(10, 15, 0), sch: immediate, staged: staged, installed: old, deadline: week, wantOK: true, wantWhy: "immediate"},
		{what: "manual waits", now: at(10, 15, 0), sch: manual, staged: staged, installed: old},
		{what: "manual until expiry", now: at(10, 15, 0), sch: manual, staged: staged, installed: old, deadline: week,
			wantOK: true, wantAt: at(23, 0, 0), wantWhy: "expiry"},
		{what: "manual expiring now", now: at(10, 15, 0), sch: manual, staged: staged, installed: expiring, deadline: week,
			wantOK: true, wantAt: at(5, 0, 0), wantWhy: "expiry"},
		{what: "window next night", now: at(10, 15, 0), sch: nightly, staged: staged, installed: old, deadline: week,
			wantOK: true, wantAt: at(11, 3, 0), wantWhy: "window"},
		{what: "window with splay", now: at(10, 15, 0), sch: nightly, staged: staged, installed: old, splay: 17 * time.Minute,
			wantOK: true, wantAt: at(11, 3, 17), wantWhy: "window"},
		{what: "window passed while away", now: at(12, 9, 0), sch: nightly, staged: staged, installed: old,
			wantOK: true, wantAt: at(11, 3, 0), wantWhy: "window"},
		{what: "expiry before window", now: at(10, 15, 0), sch: nightly, staged: staged, installed: expiring, deadline: week,
			wantOK: true, wantAt: at(5, 0, 0), wantWhy: "expiry"},
		{what: "deadline off", now: at(10, 15, 0), sch: manual, staged: staged, installed: expiring},
		{what: "staged on the minute", now: at(11, 3, 0), sch: nightly, staged: &Staged{Release: crypto.Release{Version: 2, Fingerprint: testFingerprint("02")}, StagedAt: at(11, 3, 0)},
			installed: old, wantOK: true, wantAt: at(11, 3, 0), wantWhy: "window"},
		// Not valid yet: never replaces a certificate clients accept.
		{what: "not valid yet waits for NotBefore", now: at(10, 15, 0), sch: immediate, staged: early, installed: old, deadline: week,
			wantOK: true, wantAt: at(10, 20, 0), wantWhy: "not_before"},
		{what: "not valid yet, the expiry deadline waits too", now: at(10, 15, 0), sch: manual, staged: early, installed: expiring, deadline: week,
			wantOK: true, wantAt: at(10, 20, 0), wantWhy: "not_before"},
		{what: "not valid yet, installed one expired: now", now: at(10, 15, 0), sch: immediate, staged: early, installed: expired, deadline: week,
			wantOK: true, wantWhy: "immediate"},
		{what: "not valid yet, installed one expires first", now: at(10, 15, 0), sch: immediate, staged: early, installed: expiresSoon,
			wantOK: true, wantAt: at(10, 17, 0), wantWhy: "installed_expires"},
		{what: "not valid yet, window after NotBefore", now: at(10, 15, 0), sch: nightly, staged: early, installed: old,
			wantOK: true, wantAt: at(11, 3, 0), wantWhy: "window"},
		{what: "not valid yet, manual stays manual", now: at(10, 15, 0), sch: manual, staged: early, installed: old},
		{what: "valid since: now", now: at(10, 20, 0), sch: immediate, staged: early, installed: old, wantOK: true, wantWhy: "immediate"},
		{what: "not valid yet over an old folder waits", now: at(10, 15, 0), sch: immediate, staged: early, occupied: true,
			wantOK: true, wantAt: at(10, 20, 0), wantWhy: "not_before"},
		{what: "not valid yet into an empty install_dir: now", now: at(10, 15, 0), sch: immediate, staged: early,
			wantOK: true, wantWhy: "first"},
	} {
		p := due(tc.now, tc.sch, tc.staged, tc.installed, tc.occupied, tc.splay, tc.deadline)
		want := tc.wantAt
		if tc.wantOK && want.IsZero() {
			want = tc.now
		}
		if p.ok != tc.wantOK || !p.at.Equal(want) || p.why != tc.wantWhy {
			t.Errorf("%s: due = %v %v %q, want %v %v %q", tc.what, p.ok, p.at, p.why, tc.wantOK, want, tc.wantWhy)
		}
	}
}

func TestSplayOffset(t *testing.T) {
	t.Parallel()
	s := &Staged{Name: "example.com", Release: crypto.Release{Version: 7, Fingerprint: testFingerprint("07")}}
	splay := 30 * time.Minute
	a := splayOffset("web1", s, splay)
	if a < 0 || a >= splay || a != splayOffset("web1", s, splay) {
		t.Errorf("offset %v not stable or out of [0, %v)", a, splay)
	}
	// Different nodes and renewals spread out.
	seen := map[time.Duration]bool{}
	for _, node := range []string{"web1", "web2", "web3", "web4"} {
		for v := uint64(1); v <= 4; v++ {
			seen[splayOffset(node, &Staged{Name: "example.com", Release: crypto.Release{Version: v, Fingerprint: testFingerprint("07")}}, splay)] = true
		}
	}
	if len(seen) < 12 {
		t.Errorf("16 node and version pairs share %d offsets", len(seen))
	}
	if splayOffset("web1", s, 0) != 0 {
		t.Error("offset without splay")
	}
}

func TestRetryDue(t *testing.T) {
	t.Parallel()
	failedAt := time.Date(2030, 3, 10, 12, 0, 0, 0, time.UTC)
	failed := func(attempts int) *failedInstall {
		return &failedInstall{Release: crypto.Release{Version: 2, Fingerprint: testFingerprint("02")}, At: failedAt, Attempts: attempts}
	}
	week := 7 * 24 * time.Hour
	expiring := &Staged{Release: crypto.Release{Version: 1, Fingerprint: testFingerprint("01"), NotAfter: failedAt.Add(3 * 24 * time.Hour)}}
	later := &Staged{Release: crypto.Release{Version: 1, Fingerprint: testFingerprint("01"), NotAfter: failedAt.Add(30 * 24 * time.Hour)}}
	expired := &Staged{Release: crypto.Release{Version: 1, Fingerprint: testFingerprint("01"), NotAfter: failedAt.Add(-time.Hour)}}
	for _, tc := range []struct {
		what      string
		f         *failedInstall
		installed *Staged
		deadline  time.Duration
		wantAt    time.Time // zero: no retry
	}{
		{"no failure", nil, expiring, week, time.Time{}},
		{"deadline off", failed(1), expiring, 0, time.Time{}},
		{"first failure, a minute", failed(1), expiring, week, failedAt.Add(time.Minute)},
		{"a state.json from before, a minute", failed(0), expired, week, failedAt.Add(time.Minute)},
		{"third failure, four minutes", failed(3), expiring, week, failedAt.Add(4 * time.Minute)},
		{"many failures, an hour", failed(40), expiring, week, failedAt.Add(time.Hour)},
		{"nothing that works installed", failed(2), nil, week, failedAt.Add(2 * time.Minute)},
		{"not within the deadline yet: at the deadline", failed(1), later, week, later.NotAfter.Add(-week)},
		{"permanent", &failedInstall{Release: crypto.Release{Version: 2, Fingerprint: testFingerprint("02")}, At: failedAt, Attempts: 1, Permanent: true}, expired, week, time.Time{}},
	} {
		p := retryDue(tc.f, tc.installed, tc.deadline)
		if p.ok != !tc.wantAt.IsZero() || !p.at.Equal(tc.wantAt) || (p.ok && p.why != "retry") {
			t.Errorf("%s: retryDue = %v %v %q, want %v", tc.what, p.ok, p.at, p.why, tc.wantAt)
		}
	}
}

// TestHoldDue: a held bundle installs only once released (its schedule
// then starting at the release), or under the expiry deadline; a failed
// one again only for a later generation.
func TestHoldDue(t *testing.T) {
	t.Parallel()
	at := func(day, hour, min int) time.Time { return time.Date(2030, 3, day, hour, min, 0, 0, time.UTC) }
	fp := testFingerprint("02")
	staged := &Staged{Name: "example.com", Release: crypto.Release{Version: 2, Fingerprint: fp}, StagedAt: at(10, 1, 0), Hold: true}
	old := &Staged{Name: "example.com", Release: crypto.Release{Version: 1, Fingerprint: testFingerprint("01"), NotAfter: at(30, 0, 0)}}
	nightly := mustSchedule(t, "0 3 * * *")
	immediate := mustSchedule(t, "immediate")
	week := 7 * 24 * time.Hour
	rel := func(gen uint64, received time.Time, nodes ...string) *heldRelease {
		r := &crypto.RolloutRecord{Name: "example.com", Version: 2, Fingerprint: fp, Generation: gen, State: crypto.RolloutRunning, Released: nodes}
		h := &heldRelease{RolloutRecord: r, Received: received}
		if released(r, "web1") {
			h.Released = received
		}
		return h
	}
	all := rel(4, at(10, 5, 0))
	all.All = true
	aborted := rel(5, at(10, 5, 0), "web1")
	aborted.State = crypto.RolloutAborted
	failed := &failedInstall{Release: staged.Release, At: at(10, 6, 0), Attempts: 1, Generation: 2}
	for _, tc := range []struct {
		what        string
		now         time.Time
		sch         Schedule
		installed   *Staged
		rel         *heldRelease
		failed      *failedInstall
		deadline    time.Duration
		wantOK      bool
		wantAt      time.Time // zero: now
		wantRollout string
		wantForce   bool
	}{
		{what: "no record", now: at(10, 2, 0), sch: immediate, installed: old, deadline: week,
			wantOK: true, wantAt: at(23, 0, 0), wantRollout: wire.RolloutWaiting},
		{what: "no record, deadline off", now: at(10, 2, 0), sch: immediate, installed: old, wantRollout: wire.RolloutWaiting},
		{what: "nothing installed still waits", now: at(10, 2, 0), sch: immediate, deadline: week, wantRollout: wire.RolloutWaiting},
		{what: "another node released", now: at(10, 2, 0), sch: immediate, installed: old, rel: rel(1, at(10, 2, 0), "web2"), wantRollout: wire.RolloutWaiting},
		{what: "aborted releases nothing", now: at(10, 6, 0), sch: immediate, installed: old, rel: aborted, wantRollout: wire.RolloutWaiting},
		{what: "failed, then aborted, nothing installed: never retried", now: at(12, 6, 0), sch: immediate, rel: aborted, failed: failed, deadline: week,
			wantRollout: wire.RolloutWaiting},
		{what: "failed, no record, nothing installed: never retried", now: at(12, 6, 0), sch: immediate, failed: failed, deadline: week,
			wantRollout: wire.RolloutWaiting},
		{what: "released", now: at(10, 6, 0), sch: immediate, installed: old, rel: rel(1, at(10, 5, 0), "web1"),
			wantOK: true, wantRollout: wire.RolloutReleased},
		{what: "all released", now: at(10, 6, 0), sch: immediate, installed: old, rel: all, wantOK: true, wantRollout: wire.RolloutReleased},
		{what: "released before the window", now: at(10, 2, 0), sch: nightly, installed: old, rel: rel(1, at(10, 2, 0), "web1"),
			wantOK: true, wantAt: at(10, 3, 0), wantRollout: wire.RolloutReleased},
		{what: "released after the window: the next one", now: at(10, 5, 0), sch: nightly, installed: old, rel: rel(1, at(10, 5, 0), "web1"),
			wantOK: true, wantAt: at(11, 3, 0), wantRollout: wire.RolloutReleased},
		{what: "expiry overrides", now: at(24, 0, 0), sch: immediate, installed: old, deadline: week,
			wantOK: true, wantAt: at(23, 0, 0), wantRollout: wire.RolloutExpiry},
		{what: "failed under this generation", now: at(10, 7, 0), sch: immediate, installed: old, rel: rel(2, at(10, 5, 0), "web1"), failed: failed,
			wantRollout: wire.RolloutReleased},
		{what: "failed, a later generation", now: at(10, 8, 0), sch: immediate, installed: old, rel: rel(3, at(10, 8, 0), "web1"), failed: failed,
			wantOK: true, wantRollout: wire.RolloutReleased, wantForce: true},
		{what: "failed, a later generation, windowed", now: at(10, 8, 0), sch: nightly, installed: old, rel: rel(3, at(10, 8, 0), "web1"), failed: failed,
			wantOK: true, wantAt: at(11, 3, 0), wantRollout: wire.RolloutReleased, wantForce: true},
		{what: "failed, a later generation for others", now: at(10, 8, 0), sch: immediate, installed: old, rel: rel(3, at(10, 8, 0), "web2"), failed: failed,
			wantRollout: wire.RolloutWaiting},
		{what: "failed, under the deadline: retried", now: at(24, 0, 0), sch: immediate, installed: old, rel: rel(2, at(10, 5, 0), "web1"), failed: failed, deadline: week,
			wantOK: true, wantAt: at(23, 0, 0), wantRollout: wire.RolloutReleased},
	} {
		p := holdDue(tc.now, tc.sch, staged, tc.installed, tc.installed != nil, 0, tc.deadline, tc.rel, "web1", tc.failed)
		want := tc.wantAt
		if tc.wantOK && want.IsZero() {
			want = tc.now
		}
		if p.ok != tc.wantOK || (p.ok && !p.at.Equal(want)) || p.rollout != tc.wantRollout || p.force != tc.wantForce {
			t.Errorf("%s: holdDue = %v %v %q force %v, want %v %v %q force %v", tc.what, p.ok, p.at, p.rollout, p.force, tc.wantOK, want, tc.wantRollout, tc.wantForce)
		}
	}
}
