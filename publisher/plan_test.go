package publisher

import (
	"testing"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
)

func TestPlanNode(t *testing.T) {
	t.Parallel()
	five := nodeNames(5) // canary web01; wave 1 web02, web03; wave 2 web04, web05
	pol := policy(t, RolloutPolicy{Canary: []string{"web01"}, Waves: []int{50, 100}}, five...)
	held := heldBundle{Version: 20, Fingerprint: fpA, Hold: true, Serial: "0a"}
	window := testNow.Add(3 * time.Hour)
	seen := testNow.Add(-time.Minute)
	staged := func(schedule string) *wire.Status {
		return &wire.Status{State: wire.StateStaged, LastSeen: seen, Schedule: schedule,
			StagedVersion: 20, StagedFingerprint: fpA.String(), InstalledVersion: 10, InstalledFingerprint: fpB.String()}
	}
	notYet := func(schedule string, next time.Time) *wire.Status {
		return &wire.Status{State: wire.StateInstalled, LastSeen: seen, Schedule: schedule, NextWindow: next, Splay: "0s",
			InstalledVersion: 10, InstalledFingerprint: fpB.String()}
	}
	running := rec(2, 1, testNow.Add(-time.Minute), "web01", "web02", "web03")
	halted := *running
	halted.State, halted.Reason = crypto.RolloutHalted, "1 of 3 released nodes failed"
	paused := *running
	paused.State = crypto.RolloutPaused
	withInstallAt := staged("0 3 * * *")
	withInstallAt.InstallAt = window.Add(time.Minute)
	withSplay := notYet("0 3 * * *", window)
	withSplay.Splay = "10m0s"
	expiry := staged("immediate")
	expiry.Rollout = wire.RolloutExpiry
	tests := []struct {
		name      string
		node      string
		bundle    heldBundle
		record    *crypto.RolloutRecord
		st        *wire.Status
		notSealed bool // the bundle is sealed to other recipients than configured
		noPolicy  bool
		action    string
		at        time.Time
		canTake   bool
		wave      int // -1: none
		why       string
	}{
		{name: "immediate, released", node: "web02", bundle: held, record: running, st: staged("immediate"), action: PlanInstallNow, canTake: true, wave: 1},
		{name: "immediate, not received yet", node: "web02", bundle: held, record: running, st: notYet("immediate", time.Time{}), action: PlanInstallNow, canTake: true, wave: 1},
		{name: "windowed: its next window", node: "web03", bundle: held, record: running, st: notYet("0 3 * * *", window), action: PlanInstallAt, at: window, canTake: true, wave: 1},
		{name: "windowed: install_at it reported for this version", node: "web03", bundle: held, record: running, st: withInstallAt, action: PlanInstallAt, at: window.Add(time.Minute), canTake: true, wave: 1},
		{name: "windowed with splay", node: "web03", bundle: held, record: running, st: withSplay, action: PlanInstallAt, at: window, canTake: true, wave: 1, why: "up to 10m0s later (splay)"},
		{name: "windowed, window passed", node: "web03", bundle: held, record: running, st: notYet("0 3 * * *", testNow.Add(-time.Minute)), action: PlanInstallNow, canTake: true, wave: 1},
		{name: "manual", node: "web02", bundle: held, record: running, st: staged("manual"), action: PlanStageOnly, canTake: true, wave: 1},
		{name: "wave-held", node: "web04", bundle: held, record: running, st: staged("immediate"), action: PlanWaitWave, canTake: true, wave: 2},
		{name: "wave-held before the rollout starts", node: "web01", bundle: held, st: staged("immediate"), action: PlanWaitWave, canTake: true, wave: 0},
		{name: "wave-held while paused", node: "web04", bundle: held, record: &paused, st: staged("immediate"), action: PlanWaitWave, canTake: true, wave: 2, why: "the rollout is paused"},
		{name: "expiry deadline releases", node: "web04", bundle: held, record: running, st: expiry, action: PlanInstallNow, canTake: true, wave: 2, why: "released by its expiry deadline"},
		{name: "failed", node: "web02", bundle: held, record: running, st: failedAt(testNow.Add(-time.Minute), 2), action: PlanHold, canTake: true, wave: 1},
		{name: "already installed", node: "web01", bundle: held, record: running, st: installed(testNow.Add(-time.Hour)), action: PlanNothing, canTake: true, wave: 0},
		{name: "halted, not released", node: "web04", bundle: held, record: &halted, st: staged("immediate"), action: PlanHalted, wave: 2, why: "halted: 1 of 3 released nodes failed"},
		{name: "halted, released goes on", node: "web03", bundle: held, record: &halted, st: staged("immediate"), action: PlanInstallNow, canTake: true, wave: 1},
		{name: "stale", node: "web02", bundle: held, record: running, st: func() *wire.Status { s := staged("immediate"); s.LastSeen = testNow.Add(-2 * time.Hour); return s }(),
			action: PlanStale, wave: 1, why: "no report for more than 1h0m0s"},
		{name: "missing", node: "web05", bundle: held, record: running, action: PlanMissing, wave: 2, why: "never reported"},
		{name: "not a recipient", node: "web02", bundle: held, record: running, st: notYet("immediate", time.Time{}), notSealed: true,
			action: PlanNotRecipient, wave: 1, why: "sealed to other recipients than configured: run certsync republish"},
		{name: "not sealed to all, but it staged it", node: "web02", bundle: held, record: running, st: staged("immediate"), notSealed: true, action: PlanInstallNow, canTake: true, wave: 1},
		{name: "not held", node: "web05", bundle: heldBundle{Version: 20, Fingerprint: fpA}, st: staged("immediate"), action: PlanInstallNow, canTake: true, wave: -1},
		{name: "no schedule reported", node: "web05", bundle: heldBundle{Version: 20, Fingerprint: fpA}, st: staged(""), action: PlanInstallNow, canTake: true, wave: -1, why: "the node reports no schedule"},
		{name: "held without a policy", node: "web05", bundle: held, st: staged("immediate"), noPolicy: true, action: PlanWaitWave, wave: -1,
			why: "held, but the certificate has no rollout policy: nothing releases it (publish it again without one)"},
		{name: "nothing published", node: "web05", st: staged("immediate"), action: PlanNothing, canTake: true, wave: -1, why: "no bundle is published"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := stepInput{Name: "a.example", Bundle: tt.bundle, Record: tt.record, Policy: pol, Nodes: five,
				Status: map[string]*wire.Status{}, Now: testNow}
			if tt.noPolicy {
				in.Policy = nil
			}
			if tt.st != nil {
				in.Status[tt.node] = tt.st
			}
			r := planNode(&in, tt.node, !tt.notSealed, PlanOptions{Now: testNow, StaleAfter: time.Hour})
			if r.Action != tt.action || !r.At.Equal(tt.at) || r.CanTake != tt.canTake || r.Why != tt.why {
				t.Fatalf("row %+v: want action %s at %v can_take %v why %q", r, tt.action, tt.at, tt.canTake, tt.why)
			}
			switch {
			case tt.wave < 0 && r.Wave != nil:
				t.Fatalf("wave %d, want none", *r.Wave)
			case tt.wave >= 0 && (r.Wave == nil || *r.Wave != tt.wave):
				t.Fatalf("wave %v, want %d", r.Wave, tt.wave)
			}
			if r.Node != tt.node || r.Certificate != "a.example" || r.Version != tt.bundle.Version || r.Hold != tt.bundle.Hold {
				t.Fatalf("row names %+v", r)
			}
		})
	}
}

func TestPlanRowText(t *testing.T) {
	t.Parallel()
	two := 2
	for _, tt := range []struct {
		row  PlanRow
		want string
	}{
		{PlanRow{Action: PlanInstallAt, At: time.Date(2030, 5, 1, 3, 0, 0, 0, time.UTC)}, "install at 2030-05-01T03:00:00Z"},
		{PlanRow{Action: PlanInstallAt}, "install at its next window"},
		{PlanRow{Action: PlanWaitWave, Wave: &two}, "wait for wave 2"},
		{PlanRow{Action: PlanNotRecipient}, "not a recipient"},
		{PlanRow{Action: PlanStageOnly}, "stage only"},
		{PlanRow{Action: PlanInstallNow}, "install now"},
		{PlanRow{Action: PlanHalted}, "halted"},
	} {
		if got := tt.row.Text(); got != tt.want {
			t.Errorf("Text of %s: %q, want %q", tt.row.Action, got, tt.want)
		}
	}
}
