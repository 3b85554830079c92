package publisher

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
)

// policy returns a validated policy (validate's defaults applied).
func policy(t *testing.T, p RolloutPolicy, nodes ...string) *RolloutPolicy {
	t.Helper()
	known := map[string]string{}
	for _, n := range nodes {
		known[n] = "x"
	}
	if err := p.validate("rollout", known); err != nil {
		t.Fatalf("policy: %v", err)
	}
	return &p
}

func nodeNames(n int) []string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("web%02d", i))
	}
	return out
}

func TestPlanWaves(t *testing.T) {
	t.Parallel()
	ten := nodeNames(10)
	tests := []struct {
		name   string
		policy RolloutPolicy
		nodes  []string
		want   [][]string
	}{
		{"listed canary, one wave", RolloutPolicy{Canary: []string{"web03"}}, nodeNames(4),
			[][]string{{"web03"}, {"web01", "web02", "web04"}}},
		{"listed canaries that do not receive it are left out", RolloutPolicy{Canary: []string{"web09", "web02"}}, nodeNames(4),
			[][]string{{"web02"}, {"web01", "web03", "web04"}}},
		{"canary percent rounds up, first in name order", RolloutPolicy{CanaryPercent: 15, Waves: []int{50, 100}}, ten,
			[][]string{{"web01", "web02"}, {"web03", "web04", "web05", "web06"}, {"web07", "web08", "web09", "web10"}}},
		{"no canary", RolloutPolicy{Waves: []int{25, 100}}, nodeNames(4),
			[][]string{nil, {"web01"}, {"web02", "web03", "web04"}}},
		{"cumulative waves round up", RolloutPolicy{Canary: []string{"web01"}, Waves: []int{10, 20, 100}}, ten,
			[][]string{{"web01"}, {"web02"}, {"web03"}, {"web04", "web05", "web06", "web07", "web08", "web09", "web10"}}},
		{"more waves than nodes leaves some empty", RolloutPolicy{Canary: []string{"web01"}, Waves: []int{25, 50, 100}}, nodeNames(2),
			[][]string{{"web01"}, {"web02"}, {}, {}}},
		{"every node a canary", RolloutPolicy{CanaryPercent: 100}, nodeNames(2),
			[][]string{{"web01", "web02"}, {}}},
		{"unsorted input", RolloutPolicy{Canary: []string{"b"}}, []string{"c", "b", "a"},
			[][]string{{"b"}, {"a", "c"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := planWaves(policy(t, tt.policy, append(slices.Clone(tt.nodes), tt.policy.Canary...)...), tt.nodes)
			got := w.nodes
			for i := range got {
				if len(got[i]) == 0 {
					got[i] = nil
				}
			}
			want := tt.want
			for i := range want {
				if len(want[i]) == 0 {
					want[i] = nil
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("waves %v, want %v", got, want)
			}
			// Every node is in exactly one wave, and waveOf finds it.
			for _, n := range tt.nodes {
				k := w.waveOf(n)
				if k < 0 || !slices.Contains(got[k], n) {
					t.Errorf("waveOf(%s) = %d", n, k)
				}
			}
			if w.waveOf("elsewhere") != -1 {
				t.Errorf("waveOf a stranger is not -1")
			}
			if all := w.through(len(got)); len(all) != len(slices.Compact(slices.Sorted(slices.Values(tt.nodes)))) || !slices.IsSorted(all) {
				t.Errorf("through the last wave: %v", all)
			}
		})
	}
}

var (
	testNow = time.Date(2030, 5, 1, 12, 0, 0, 0, time.UTC)
	fpA     = crypto.FingerprintOf([]byte("a"))
	fpB     = crypto.FingerprintOf([]byte("b"))
)

// rec is a running record of version 20, fingerprint fpA.
func rec(gen uint64, wave int, started time.Time, released ...string) *crypto.RolloutRecord {
	return &crypto.RolloutRecord{Name: "a.example", Version: 20, Fingerprint: fpA, Generation: gen, State: crypto.RolloutRunning,
		Wave: wave, Released: released, Time: started, WaveStarted: started}
}

// installed is a record of version 20 installed at at.
func installed(at time.Time) *wire.Status {
	return &wire.Status{State: wire.StateInstalled, InstalledVersion: 20, InstalledFingerprint: fpA.String(), InstalledAt: at,
		StagedVersion: 20, StagedFingerprint: fpA.String(), LastSeen: at, Verified: true}
}

// failedAt is a record of a failed install of version 20 at at, under
// generation gen.
func failedAt(at time.Time, gen uint64) *wire.Status {
	return &wire.Status{State: wire.StateFailed, ErrorKind: wire.ErrorKindInstall, Error: "check failed", ErrorTime: at,
		StagedVersion: 20, StagedFingerprint: fpA.String(), FailedVersion: 20, FailedFingerprint: fpA.String(),
		RolloutGeneration: gen, LastSeen: at}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	started := testNow.Add(-30 * time.Minute)
	r := rec(2, 0, started, "n")
	tests := []struct {
		name string
		st   *wire.Status
		now  time.Time
		want outcome
		why  string
	}{
		{"no report yet", nil, testNow, inFlight, ""},
		{"no report past the deadline", nil, started.Add(time.Hour + time.Second), failed, "no report within the 1h0m0s wave deadline"},
		{"installed", installed(started.Add(time.Minute)), testNow, succeeded, ""},
		{"installed, past the deadline still succeeded", installed(started.Add(time.Minute)), started.Add(2 * time.Hour), succeeded, ""},
		{"installed another certificate", &wire.Status{State: wire.StateInstalled, InstalledVersion: 20, InstalledFingerprint: fpB.String(), LastSeen: testNow}, testNow, inFlight, ""},
		{"installed but a failed install stands", func() *wire.Status {
			s := installed(started)
			s.State, s.ErrorKind, s.FailedVersion = wire.StateFailed, wire.ErrorKindInstall, 20
			return s
		}(), testNow, failed, "install failed"},
		{"install failed under this generation", failedAt(started.Add(time.Minute), 2), testNow, failed, "install failed"},
		{"install failed under a later generation", failedAt(started.Add(time.Minute), 3), testNow, failed, "install failed"},
		{"failure under an earlier generation is the previous attempt", failedAt(started.Add(time.Minute), 1), testNow, inFlight, ""},
		{"failure from before the release is the previous attempt", failedAt(started.Add(-2*time.Minute), 2), testNow, inFlight, ""},
		{"failure just before the release is this one (clock skew)", failedAt(started.Add(-30*time.Second), 2), testNow, failed, "install failed"},
		{"failed under generation 1, reported after the resume to 2 (failed_generation)", func() *wire.Status {
			s := failedAt(started.Add(time.Second), 2)
			s.FailedGeneration = 1
			return s
		}(), testNow, inFlight, ""},
		{"failed under generation 2 (failed_generation)", func() *wire.Status {
			s := failedAt(started.Add(time.Second), 2)
			s.FailedGeneration = 2
			return s
		}(), testNow, failed, "install failed"},
		{"previous attempt past the deadline", failedAt(started.Add(-2*time.Minute), 1), started.Add(61 * time.Minute), failed, "not installed within the 1h0m0s wave deadline"},
		{"failed without failed_version: state failed, kind install, staged", &wire.Status{State: wire.StateFailed, ErrorKind: wire.ErrorKindInstall,
			StagedVersion: 20, StagedFingerprint: fpA.String(), LastSeen: testNow, RolloutGeneration: 2}, testNow, failed, "install failed"},
		{"a bundle error is not an install failure", &wire.Status{State: wire.StateFailed, ErrorKind: wire.ErrorKindBundle,
			StagedVersion: 20, StagedFingerprint: fpA.String(), LastSeen: testNow, RolloutGeneration: 2}, testNow, inFlight, ""},
		{"failure of another version", &wire.Status{State: wire.StateFailed, ErrorKind: wire.ErrorKindInstall, FailedVersion: 19,
			StagedVersion: 19, StagedFingerprint: fpB.String(), LastSeen: testNow, RolloutGeneration: 2}, testNow, inFlight, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := classify("n", tt.st, r, time.Hour, tt.now)
			if got.outcome != tt.want || got.why != tt.why {
				t.Fatalf("classify: outcome %d %q, want %d %q", got.outcome, got.why, tt.want, tt.why)
			}
		})
	}
}

func TestDecideStep(t *testing.T) {
	t.Parallel()
	five := nodeNames(5) // canary web01; waves 50% (web02, web03), 100% (web04, web05)
	pol := RolloutPolicy{Canary: []string{"web01"}, Waves: []int{50, 100}, Soak: 10 * time.Minute, WaveDeadline: time.Hour}
	held := heldBundle{Version: 20, Fingerprint: fpA, Hold: true}
	started := testNow.Add(-30 * time.Minute)
	canary := rec(1, 0, started, "web01")
	wave1 := rec(2, 1, started, "web01", "web02", "web03")
	wave2 := rec(3, 2, started, five...)
	all := func(nodes []string, st func(n string) *wire.Status) map[string]*wire.Status {
		m := map[string]*wire.Status{}
		for _, n := range nodes {
			if s := st(n); s != nil {
				m[n] = s
			}
		}
		return m
	}
	okAt := func(at time.Time) func(string) *wire.Status {
		return func(string) *wire.Status { return installed(at) }
	}
	tests := []struct {
		name   string
		policy RolloutPolicy
		bundle heldBundle
		record *crypto.RolloutRecord
		status map[string]*wire.Status
		nodes  []string // default five
		kind   stepKind
		want   *crypto.RolloutRecord // Time is testNow unless set
	}{
		{name: "no bundle", record: canary, kind: stepNothing},
		{name: "not held", bundle: heldBundle{Version: 20, Fingerprint: fpA}, kind: stepNothing},
		{name: "start with the canary", bundle: held, kind: stepStart,
			want: &crypto.RolloutRecord{Generation: 1, State: crypto.RolloutRunning, Wave: 0, Released: []string{"web01"}, WaveStarted: testNow}},
		{name: "start without canary releases wave 1", policy: RolloutPolicy{Waves: []int{40, 100}}, bundle: held, kind: stepStart,
			want: &crypto.RolloutRecord{Generation: 1, State: crypto.RolloutRunning, Wave: 1, Released: []string{"web01", "web02"}, WaveStarted: testNow}},
		{name: "a record of an older version is superseded", bundle: held, kind: stepStart,
			record: &crypto.RolloutRecord{Name: "a.example", Version: 19, Fingerprint: fpB, Generation: 7, State: crypto.RolloutComplete, All: true, Time: started},
			want:   &crypto.RolloutRecord{Generation: 1, State: crypto.RolloutRunning, Wave: 0, Released: []string{"web01"}, WaveStarted: testNow}},
		{name: "canary in flight", bundle: held, record: canary, kind: stepNothing},
		{name: "canary failure halts", bundle: held, record: canary, kind: stepHalt,
			status: map[string]*wire.Status{"web01": failedAt(started.Add(time.Minute), 1)},
			want: &crypto.RolloutRecord{Generation: 1, State: crypto.RolloutHalted, Wave: 0, Released: []string{"web01"}, WaveStarted: started,
				Reason: "1 of 1 released nodes failed, over max_failures 0: web01 (install failed)"}},
		{name: "canary soaking", bundle: held, record: canary, kind: stepNothing,
			status: map[string]*wire.Status{"web01": installed(testNow.Add(-9 * time.Minute))}},
		{name: "canary soaked releases wave 1", bundle: held, record: canary, kind: stepRelease,
			status: map[string]*wire.Status{"web01": installed(testNow.Add(-10 * time.Minute))},
			want:   &crypto.RolloutRecord{Generation: 2, State: crypto.RolloutRunning, Wave: 1, Released: []string{"web01", "web02", "web03"}, WaveStarted: testNow}},
		{name: "soak counts from the wave's release when installs claim earlier", bundle: held, kind: stepNothing,
			record: rec(1, 0, testNow.Add(-5*time.Minute), "web01"),
			status: map[string]*wire.Status{"web01": installed(testNow.Add(-time.Hour))}},
		{name: "zero soak releases at once", policy: RolloutPolicy{Canary: []string{"web01"}, Waves: []int{50, 100}, Soak: SoakZero},
			bundle: held, record: canary, kind: stepRelease,
			status: map[string]*wire.Status{"web01": installed(testNow)},
			want:   &crypto.RolloutRecord{Generation: 2, State: crypto.RolloutRunning, Wave: 1, Released: []string{"web01", "web02", "web03"}, WaveStarted: testNow}},
		{name: "one node of the wave in flight holds it", bundle: held, record: wave1, kind: stepNothing,
			status: all([]string{"web01", "web02"}, okAt(testNow.Add(-20*time.Minute)))},
		{name: "deadline without a report fails", bundle: held, record: rec(2, 1, testNow.Add(-61*time.Minute), "web01", "web02", "web03"), kind: stepHalt,
			status: all([]string{"web01", "web02"}, okAt(testNow.Add(-50*time.Minute))),
			want: &crypto.RolloutRecord{Generation: 2, State: crypto.RolloutHalted, Wave: 1, Released: []string{"web01", "web02", "web03"},
				WaveStarted: testNow.Add(-61 * time.Minute), Reason: "1 of 3 released nodes failed, over max_failures 0: web03 (no report within the 1h0m0s wave deadline)"}},
		{name: "max_failures tolerates one, and the wave goes on", policy: RolloutPolicy{Canary: []string{"web01"}, Waves: []int{50, 100}, MaxFailures: 1},
			bundle: held, record: wave1, kind: stepRelease,
			status: map[string]*wire.Status{"web01": installed(started), "web02": installed(started), "web03": failedAt(started.Add(time.Minute), 2)},
			want:   &crypto.RolloutRecord{Generation: 3, State: crypto.RolloutRunning, Wave: 2, Released: five, WaveStarted: testNow}},
		{name: "max_failures 1 halts at two", policy: RolloutPolicy{Canary: []string{"web01"}, Waves: []int{50, 100}, MaxFailures: 1},
			bundle: held, record: wave1, kind: stepHalt,
			status: map[string]*wire.Status{"web01": installed(started), "web02": failedAt(started, 2), "web03": failedAt(started.Add(time.Minute), 2)},
			want: &crypto.RolloutRecord{Generation: 2, State: crypto.RolloutHalted, Wave: 1, Released: []string{"web01", "web02", "web03"}, WaveStarted: started,
				Reason: "2 of 3 released nodes failed, over max_failures 1: web02 (install failed), web03 (install failed)"}},
		{name: "max_failures 40% of 5 released tolerates 2", policy: RolloutPolicy{Canary: []string{"web01"}, Waves: []int{50, 100}, MaxFailuresPercent: 40},
			bundle: held, record: wave2, kind: stepComplete,
			status: map[string]*wire.Status{"web01": installed(started), "web02": installed(started), "web03": installed(started),
				"web04": failedAt(started, 3), "web05": failedAt(started, 3)},
			want: &crypto.RolloutRecord{Generation: 4, State: crypto.RolloutComplete, Wave: 2, All: true, Released: five, WaveStarted: started}},
		{name: "max_failures 40% of 3 released rounds down to 1", policy: RolloutPolicy{Canary: []string{"web01"}, Waves: []int{50, 100}, MaxFailuresPercent: 40},
			bundle: held, record: wave1, kind: stepHalt,
			status: map[string]*wire.Status{"web01": installed(started), "web02": failedAt(started, 2), "web03": failedAt(started, 2)},
			want: &crypto.RolloutRecord{Generation: 2, State: crypto.RolloutHalted, Wave: 1, Released: []string{"web01", "web02", "web03"}, WaveStarted: started,
				Reason: "2 of 3 released nodes failed, over max_failures 40% (1 of 3 released): web02 (install failed), web03 (install failed)"}},
		{name: "last wave soaked completes", bundle: held, record: wave2, kind: stepComplete,
			status: all(five, okAt(started)),
			want:   &crypto.RolloutRecord{Generation: 4, State: crypto.RolloutComplete, Wave: 2, All: true, Released: five, WaveStarted: started}},
		{name: "empty waves are skipped", policy: RolloutPolicy{Canary: []string{"web01"}, Waves: []int{25, 50, 100}},
			nodes: []string{"web01", "web02"}, bundle: held, record: rec(2, 1, started, "web01", "web02"), kind: stepComplete,
			status: all([]string{"web01", "web02"}, okAt(started)),
			want:   &crypto.RolloutRecord{Generation: 3, State: crypto.RolloutComplete, Wave: 1, All: true, Released: []string{"web01", "web02"}, WaveStarted: started}},
		{name: "halted stays halted", bundle: held, kind: stepNothing, record: func() *crypto.RolloutRecord {
			r := rec(1, 0, started, "web01")
			r.State = crypto.RolloutHalted
			return r
		}(), status: all(five, okAt(started))},
		{name: "paused stays paused", bundle: held, kind: stepNothing, record: func() *crypto.RolloutRecord {
			r := rec(1, 0, started, "web01")
			r.State = crypto.RolloutPaused
			return r
		}(), status: all(five, okAt(started))},
		{name: "complete stays complete", bundle: held, kind: stepNothing, record: func() *crypto.RolloutRecord {
			r := rec(4, 2, started, five...)
			r.State, r.All = crypto.RolloutComplete, true
			return r
		}()},
		{name: "aborted stays aborted", bundle: held, kind: stepNothing, record: func() *crypto.RolloutRecord {
			r := rec(2, 0, started)
			r.State = crypto.RolloutAborted
			return r
		}()},
		{name: "a node that left the configuration is not waited for", bundle: held, kind: stepRelease,
			record: rec(1, 0, started, "gone", "web01"),
			status: map[string]*wire.Status{"web01": installed(started)},
			want:   &crypto.RolloutRecord{Generation: 2, State: crypto.RolloutRunning, Wave: 1, Released: []string{"gone", "web01", "web02", "web03"}, WaveStarted: testNow}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := tt.policy
			if p.Waves == nil && p.Canary == nil && p.CanaryPercent == 0 {
				p = pol
			}
			nodes := five
			if tt.nodes != nil {
				nodes = tt.nodes
			}
			in := stepInput{Name: "a.example", Bundle: tt.bundle, Record: tt.record, Policy: policy(t, p, nodes...),
				Nodes: nodes, Status: tt.status, Now: testNow}
			got, kind := decideStep(in)
			if kind != tt.kind {
				t.Fatalf("kind %q, want %q (record %+v)", kind, tt.kind, got)
			}
			if tt.want == nil {
				if got != nil {
					t.Fatalf("record %+v, want none", got)
				}
				return
			}
			want := *tt.want
			want.Name, want.Version, want.Fingerprint = "a.example", 20, fpA
			if want.Time.IsZero() {
				want.Time = testNow
			}
			if !reflect.DeepEqual(*got, want) {
				t.Fatalf("record\n%+v\nwant\n%+v", *got, want)
			}
			if _, err := crypto.SignRollout(got, mustKey(t)); err != nil {
				t.Fatalf("the record does not sign: %v", err)
			}
		})
	}
}

func mustKey(t *testing.T) *crypto.SigningKey {
	t.Helper()
	k, err := crypto.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestHaltReasonIsBounded: a halt's reason names at most a few nodes, in
// one line within the record's bound, and never a node's own error text.
func TestHaltReasonIsBounded(t *testing.T) {
	t.Parallel()
	nodes := nodeNames(60)
	for i := range nodes {
		nodes[i] += strings.Repeat("x", 55)
	}
	status := map[string]*wire.Status{}
	for _, n := range nodes {
		st := failedAt(testNow, 2)
		st.Error = "SECRET-ISH node error\nsecond line"
		status[n] = st
	}
	in := stepInput{Name: "a.example", Bundle: heldBundle{Version: 20, Fingerprint: fpA, Hold: true},
		Record: rec(2, 1, testNow.Add(-time.Minute), nodes...), Policy: policy(t, RolloutPolicy{}, nodes...), Nodes: nodes, Status: status, Now: testNow}
	got, kind := decideStep(in)
	if kind != stepHalt {
		t.Fatalf("kind %q", kind)
	}
	if strings.Contains(got.Reason, "SECRET") || strings.ContainsAny(got.Reason, "\n\r") || !strings.HasSuffix(got.Reason, "and 57 more") {
		t.Fatalf("reason %q", got.Reason)
	}
	if _, err := crypto.SignRollout(got, mustKey(t)); err != nil {
		t.Fatalf("the record does not sign: %v", err)
	}
}

func TestRolloutView(t *testing.T) {
	t.Parallel()
	five := nodeNames(5)
	started := testNow.Add(-30 * time.Minute)
	in := stepInput{Name: "a.example", Bundle: heldBundle{Version: 20, Fingerprint: fpA, Hold: true, Serial: "0a"},
		Record: rec(2, 1, started, "web01", "web02", "web03"),
		Policy: policy(t, RolloutPolicy{Canary: []string{"web01"}, Waves: []int{50, 100}}, five...), Nodes: five,
		Status: map[string]*wire.Status{"web01": installed(started), "web02": failedAt(started.Add(time.Minute), 2)}, Now: testNow}
	v := view(in)
	want := []WaveView{
		{Wave: 0, Released: true, Nodes: []RolloutNode{{Node: "web01", Outcome: NodeInstalled, Verified: true}}, Installed: 1, Verified: 1},
		{Wave: 1, Released: true, Nodes: []RolloutNode{{Node: "web02", Outcome: NodeFailed, Why: "install failed"}, {Node: "web03", Outcome: NodeInFlight}}, Failed: 1, InFlight: 1},
		{Wave: 2, Nodes: []RolloutNode{{Node: "web04", Outcome: NodeWaiting}, {Node: "web05", Outcome: NodeWaiting}}, Waiting: 2},
	}
	if v.State != crypto.RolloutRunning || v.Generation != 2 || v.Wave != 1 || v.Serial != "0a" || !reflect.DeepEqual(v.Waves, want) {
		t.Fatalf("view %+v", v)
	}
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"name":"a.example"`, `"fingerprint":"` + fpA.String() + `"`, `"state":"running"`, `"wave_started":`,
		`"waves":[{"wave":0,"released":true,"nodes":[{"node":"web01","outcome":"installed","verified":true}],"installed":1,"verified":1,"failed":0,"in_flight":0,"waiting":0}`} {
		if !strings.Contains(string(data), key) {
			t.Errorf("view JSON %s lacks %s", data, key)
		}
	}
	in.Record = nil
	if v := view(in); v.State != RolloutPending || v.Waves[0].Released || v.Waves[0].Nodes[0].Outcome != NodeInstalled {
		t.Fatalf("without a record: %+v", v)
	}
	in.Bundle.Hold = false
	if v := view(in); v.State != RolloutNone || !v.Waves[2].Released || v.Waves[2].Nodes[0].Outcome != NodeInFlight {
		t.Fatalf("not held: %+v", v)
	}
}
