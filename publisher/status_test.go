package publisher

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestRowsJudgeEachPair(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 5, 1, 12, 0, 0, 0, time.UTC)
	fpNew, fpOld, fpLater := testFingerprint("new"), testFingerprint("old"), testFingerprint("later")
	newest := BundleInfo{Name: "a.example", Sequence: 7, Release: crypto.Release{Version: 20, Serial: "02", Fingerprint: crypto.FingerprintOf([]byte("new")), NotAfter: now.Add(80 * 24 * time.Hour)}}
	staged := func(node, fp string, version uint64, notAfter time.Time) wire.Status {
		return wire.Status{Node: node, Certificate: "a.example", State: wire.StateStaged, LastSeen: now.Add(-time.Minute),
			StagedVersion: version, StagedSerial: "s-" + fp, StagedFingerprint: fp, StagedNotAfter: notAfter}
	}
	fresh := now.Add(80 * 24 * time.Hour)
	tests := []struct {
		name     string
		record   *wire.Status
		newest   *BundleInfo
		state    string
		problems []string
		days     int
	}{
		{name: "never reported", state: wire.StateMissing, problems: []string{ProblemMissing}, newest: &newest},
		{name: "staged newest", record: ptr(staged("n", fpNew, 20, fresh)), newest: &newest,
			state: wire.StateStaged, days: 80},
		{name: "installed newest, older staged ignored", record: &wire.Status{State: wire.StateInstalled, LastSeen: now,
			InstalledVersion: 20, InstalledFingerprint: fpNew, InstalledNotAfter: fresh,
			StagedVersion: 10, StagedFingerprint: fpOld, StagedNotAfter: now.Add(time.Hour)},
			newest: &newest, state: wire.StateInstalled, days: 80},
		{name: "installed older while newest staged is behind", record: &wire.Status{State: wire.StateStaged, LastSeen: now,
			InstalledVersion: 10, InstalledFingerprint: fpOld, InstalledNotAfter: fresh,
			StagedVersion: 20, StagedFingerprint: fpNew, StagedNotAfter: fresh},
			newest: &newest, state: wire.StateStaged, problems: []string{ProblemBehind}, days: 80},
		{name: "staged older", record: ptr(staged("n", fpOld, 10, fresh)), newest: &newest,
			state: wire.StateStaged, problems: []string{ProblemBehind}, days: 80},
		{name: "staged later than the stream's newest", record: ptr(staged("n", fpLater, 30, fresh)), newest: &newest,
			state: wire.StateStaged, days: 80},
		{name: "nothing published", record: ptr(staged("n", fpNew, 20, fresh)), state: wire.StateStaged, days: 80},
		{name: "failed keeps what it holds", record: &wire.Status{State: wire.StateFailed, Error: "bad signature", LastSeen: now,
			StagedVersion: 20, StagedFingerprint: fpNew, StagedNotAfter: fresh},
			newest: &newest, state: wire.StateFailed, problems: []string{ProblemFailed}, days: 80},
		{name: "reported holding nothing", record: &wire.Status{State: wire.StateMissing, LastSeen: now},
			newest: &newest, state: wire.StateMissing, problems: []string{ProblemMissing}},
		{name: "stale", record: &wire.Status{State: wire.StateStaged, LastSeen: now.Add(-61 * time.Minute),
			StagedVersion: 20, StagedFingerprint: fpNew, StagedNotAfter: fresh},
			newest: &newest, state: wire.StateStale, problems: []string{ProblemStale}, days: 80},
		{name: "stale failed", record: &wire.Status{State: wire.StateFailed, Error: "x", LastSeen: now.Add(-2 * time.Hour)},
			state: wire.StateStale, problems: []string{ProblemStale}},
		{name: "no last seen is stale", record: &wire.Status{State: wire.StateStaged, StagedFingerprint: fpNew, StagedVersion: 20, StagedNotAfter: fresh},
			newest: &newest, state: wire.StateStale, problems: []string{ProblemStale}, days: 80},
		{name: "just within stale after", record: &wire.Status{State: wire.StateStaged, LastSeen: now.Add(-time.Hour),
			StagedVersion: 20, StagedFingerprint: fpNew, StagedNotAfter: fresh},
			newest: &newest, state: wire.StateStaged, days: 80},
		{name: "expiring", record: ptr(staged("n", fpNew, 20, now.Add(5*24*time.Hour+time.Hour))), newest: &newest,
			state: wire.StateStaged, problems: []string{ProblemExpiring}, days: 5},
		{name: "expired", record: ptr(staged("n", fpNew, 20, now.Add(-time.Hour))), newest: &newest,
			state: wire.StateStaged, problems: []string{ProblemExpiring}, days: -1},
		{name: "behind and expiring", record: ptr(staged("n", fpOld, 10, now.Add(24*time.Hour))), newest: &newest,
			state: wire.StateStaged, problems: []string{ProblemBehind, ProblemExpiring}, days: 1},
		{name: "unknown state reads as failed", record: &wire.Status{State: "exploded", LastSeen: now},
			state: wire.StateFailed, problems: []string{ProblemFailed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &Fleet{Certificates: map[string][]string{"a.example": {"n"}}, ReadAt: now, Newest: map[string]BundleInfo{}}
			if tt.newest != nil {
				f.Newest["a.example"] = *tt.newest
			}
			if tt.record != nil {
				rec := *tt.record
				rec.Node, rec.Certificate = "n", "a.example"
				f.Records = []wire.Status{rec}
			}
			rows := f.Rows(HealthOptions{})
			if len(rows) != 1 {
				t.Fatalf("got %d rows, want 1: %+v", len(rows), rows)
			}
			r := rows[0]
			if r.Node != "n" || r.Certificate != "a.example" || !r.Configured {
				t.Errorf("row names %s/%s configured %v, want n/a.example configured", r.Node, r.Certificate, r.Configured)
			}
			if r.State != tt.state {
				t.Errorf("state %q, want %q", r.State, tt.state)
			}
			if got := r.Problems(); !slices.Equal(got, tt.problems) {
				t.Errorf("problems %q, want %q", got, tt.problems)
			}
			if r.Healthy() != (len(tt.problems) == 0) {
				t.Errorf("Healthy() = %v with problems %q", r.Healthy(), tt.problems)
			}
			if !r.NotAfter.IsZero() && r.DaysLeft != tt.days {
				t.Errorf("days left %d, want %d", r.DaysLeft, tt.days)
			}
			if (tt.record == nil) != (r.Reported == nil) {
				t.Errorf("Reported = %v with record %v", r.Reported, tt.record)
			}
			if tt.name == "unknown state reads as failed" && !strings.Contains(r.Error, `"exploded"`) {
				t.Errorf("error %q does not name the unknown state", r.Error)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestRowsOrderUnconfiguredAndOptions(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 5, 1, 12, 0, 0, 0, time.UTC)
	rec := func(node, cert string, seen time.Time, notAfter time.Time) wire.Status {
		return wire.Status{Node: node, Certificate: cert, State: wire.StateStaged, LastSeen: seen,
			StagedVersion: 1, StagedFingerprint: testFingerprint(cert), StagedNotAfter: notAfter}
	}
	f := &Fleet{
		Certificates: map[string][]string{"b.example": {"web2", "web1"}, "a.example": {"web2"}},
		Records: []wire.Status{
			rec("web1", "b.example", now.Add(-10*time.Minute), now.Add(10*24*time.Hour)),
			rec("old", "a.example", now.Add(-48*time.Hour), now.Add(-time.Hour)),
			rec("web2", "gone.example", now.Add(-48*time.Hour), now.Add(time.Hour)),
		},
		ReadAt: now,
	}
	type key struct {
		node, cert, state string
		configured        bool
		healthy           bool
	}
	got := func(rows []Row) []key {
		var k []key
		for _, r := range rows {
			k = append(k, key{r.Node, r.Certificate, r.State, r.Configured, r.Healthy()})
		}
		return k
	}
	want := []key{
		{"old", "a.example", wire.StateStale, false, true},
		{"web1", "b.example", wire.StateStaged, true, false}, // expiring within the 14 days default
		{"web2", "a.example", wire.StateMissing, true, false},
		{"web2", "b.example", wire.StateMissing, true, false},
		{"web2", "gone.example", wire.StateStale, false, true},
	}
	if rows := got(f.Rows(HealthOptions{})); !reflect.DeepEqual(rows, want) {
		t.Errorf("default options:\n got %v\nwant %v", rows, want)
	}
	// A shorter warning window and a stale threshold shorter than web1's age.
	want[1].state, want[1].healthy = wire.StateStale, false
	rows := f.Rows(HealthOptions{StaleAfter: 5 * time.Minute, WarnBefore: 7 * 24 * time.Hour})
	if got := got(rows); !reflect.DeepEqual(got, want) {
		t.Errorf("stale after 5m:\n got %v\nwant %v", got, want)
	}
	if p := rows[1].Problems(); !slices.Equal(p, []string{ProblemStale}) {
		t.Errorf("web1 problems with a 7 days window %q, want only stale", p)
	}
	// Now moves the judgement without changing the fleet.
	later := f.Rows(HealthOptions{Now: now.Add(20 * 24 * time.Hour), StaleAfter: 30 * 24 * time.Hour})
	if r := later[1]; r.DaysLeft != -10 || !r.Expiring || r.State != wire.StateStaged {
		t.Errorf("20 days later: %+v, want staged, expired 10 days ago", r)
	}
}

func TestFleetReadsRecordsAndNewestBundles(t *testing.T) {
	t.Parallel()
	url := runServer(t)
	f := newFixture(t, url, map[string][]string{"a.example": {"web1", "web2"}, "b.example": {"web2"}})
	ctx := context.Background()

	// Before anything is published: no stream, no bucket, nothing created.
	fl, err := f.publisher().Fleet(ctx)
	if err != nil {
		t.Fatalf("Fleet on an empty server: %v", err)
	}
	if len(fl.Records) != 0 || len(fl.Newest) != 0 {
		t.Fatalf("empty server: records %v newest %v", fl.Records, fl.Newest)
	}
	if n := f.count("a.example"); n != 0 {
		t.Fatalf("Fleet published something: %d", n)
	}
	if rows := fl.Rows(HealthOptions{}); len(rows) != 3 || rows[0].State != wire.StateMissing {
		t.Fatalf("rows of an empty fleet: %+v", rows)
	}

	first := f.publish(f.lineage("a.example", f.issue("a.example", time.Now().Add(-2*time.Hour))))
	second := f.publish(f.lineage("a.example", f.issue("a.example", time.Now().Add(-time.Hour))))
	other := f.publish(f.lineage("b.example", f.issue("b.example", time.Time{})))

	kv, err := f.js().KeyValue(ctx, wire.StatusBucket)
	if err != nil {
		t.Fatalf("status bucket after publish: %v", err)
	}
	put := func(key string, v any) {
		t.Helper()
		data, ok := v.([]byte)
		if !ok {
			var err error
			if data, err = json.Marshal(v); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := kv.Put(ctx, key, data); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	seen := time.Now().UTC().Truncate(time.Second)
	put("web1.a.example", wire.Status{Node: "web1", Certificate: "a.example", State: wire.StateStaged, LastSeen: seen,
		StagedVersion: first.Version, StagedSerial: first.Serial, StagedFingerprint: first.Fingerprint.String(), StagedNotAfter: first.NotAfter})
	// The key is authoritative: a record naming another node is filed under its key.
	put("web2.b.example", wire.Status{Node: "web1", Certificate: "x", State: wire.StateStaged, LastSeen: seen,
		StagedVersion: other.Version, StagedFingerprint: other.Fingerprint.String(), StagedNotAfter: other.NotAfter})
	put("web2.a.example", []byte("{not json"))
	put("not-a-status-key", []byte(`{}`))
	put("web3.a.example", wire.Status{State: wire.StateStaged, LastSeen: seen})
	if err := kv.Delete(ctx, "web3.a.example"); err != nil {
		t.Fatal(err)
	}

	fl, err = f.publisher().Fleet(ctx)
	if err != nil {
		t.Fatalf("Fleet: %v", err)
	}
	if got := fl.Newest["a.example"]; got.Sequence != second.Sequence || got.Fingerprint != second.Fingerprint || got.Version != second.Version {
		t.Errorf("newest a.example = seq %d %s, want seq %d %s", got.Sequence, got.Fingerprint, second.Sequence, second.Fingerprint)
	}
	if got := fl.Newest["b.example"]; got.Sequence != other.Sequence || !got.NotAfter.Equal(other.NotAfter) {
		t.Errorf("newest b.example = %+v, want sequence %d", got, other.Sequence)
	}
	var keys []string
	for _, r := range fl.Records {
		keys = append(keys, r.Node+"/"+r.Certificate)
	}
	if want := []string{"web1/a.example", "web2/a.example", "web2/b.example"}; !slices.Equal(keys, want) {
		t.Fatalf("records %q, want %q (deleted and invalid keys left out)", keys, want)
	}
	if r := fl.Records[1]; r.State != wire.StateFailed || !strings.Contains(r.Error, "unreadable status record") {
		t.Errorf("undecodable record read as %+v, want failed and saying why", r)
	}
	if !fl.Records[0].LastSeen.Equal(seen) {
		t.Errorf("last seen %v, want %v", fl.Records[0].LastSeen, seen)
	}
	if !strings.Contains(f.logs.String(), "status_key_skipped") {
		t.Errorf("no warning about the invalid key in the logs:\n%s", f.logs)
	}

	rows := fl.Rows(HealthOptions{})
	var got []string
	for _, r := range rows {
		got = append(got, r.Node+"/"+r.Certificate+"="+r.State+strings.Join(append([]string{""}, r.Problems()...), ","))
	}
	want := []string{"web1/a.example=staged,behind", "web2/a.example=failed,failed", "web2/b.example=staged"}
	if !slices.Equal(got, want) {
		t.Errorf("rows %q, want %q", got, want)
	}
}

func TestFleetNeedsNoSigningKey(t *testing.T) {
	t.Parallel()
	url := runServer(t)
	f := newFixture(t, url, map[string][]string{"a.example": {"web1"}})
	f.publish(f.lineage("a.example", f.issue("a.example", time.Time{})))
	cfg := f.cfg
	cfg.SigningKey = nil
	p, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	fl, err := p.Fleet(context.Background())
	if err != nil {
		t.Fatalf("Fleet without a signing key: %v", err)
	}
	if _, ok := fl.Newest["a.example"]; !ok {
		t.Errorf("newest bundles %v, want a.example", fl.Newest)
	}
}

func TestFleetGivesUpWhenNATSIsAway(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "nats://127.0.0.1:1", map[string][]string{"a.example": {"web1"}})
	f.cfg.Timeout = 300 * time.Millisecond
	_, err := f.publisher().Fleet(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "reading the fleet: ") {
		t.Fatalf("Fleet with no server: %v, want an error reading the fleet", err)
	}
}

// testFingerprint is the text form of a made-up fingerprint, one for each
// label.
func testFingerprint(label string) string { return crypto.FingerprintOf([]byte(label)).String() }

// TestRowsRolloutHalted: a halted rollout of the newest bundle is a
// problem on every configured row of its certificate, saying why; one of
// an older bundle, or another state, is not; a node waiting for its wave
// is not behind.
func TestRowsRolloutHalted(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 5, 1, 12, 0, 0, 0, time.UTC)
	fresh := now.Add(80 * 24 * time.Hour)
	newFP, oldFP := crypto.FingerprintOf([]byte("new")), crypto.FingerprintOf([]byte("old"))
	newest := BundleInfo{Name: "a.example", Sequence: 7, Release: crypto.Release{Version: 20, Fingerprint: newFP, NotAfter: fresh}}
	installedNew := wire.Status{Node: "web1", Certificate: "a.example", State: wire.StateInstalled, LastSeen: now,
		InstalledVersion: 20, InstalledFingerprint: newFP.String(), InstalledNotAfter: fresh}
	waiting := wire.Status{Node: "web2", Certificate: "a.example", State: wire.StateStaged, LastSeen: now,
		InstalledVersion: 10, InstalledFingerprint: oldFP.String(), InstalledNotAfter: fresh,
		StagedVersion: 20, StagedFingerprint: newFP.String(), StagedNotAfter: fresh, Rollout: wire.RolloutWaiting}
	released := waiting
	released.Node, released.Rollout = "web3", wire.RolloutReleased
	tests := []struct {
		name string
		head *RolloutHead
		want map[string][]string // node -> problems
	}{
		{"no rollout record", nil, map[string][]string{"web1": nil, "web2": nil, "web3": {ProblemBehind}, "web4": {ProblemMissing}}},
		{"running", &RolloutHead{Name: "a.example", Version: 20, Fingerprint: newFP, State: crypto.RolloutRunning},
			map[string][]string{"web1": nil, "web2": nil, "web3": {ProblemBehind}, "web4": {ProblemMissing}}},
		{"halted", &RolloutHead{Name: "a.example", Version: 20, Fingerprint: newFP, State: crypto.RolloutHalted, Reason: "1 of 1 released nodes failed"},
			map[string][]string{"web1": {ProblemRolloutHalted}, "web2": {ProblemRolloutHalted}, "web3": {ProblemBehind, ProblemRolloutHalted},
				"web4": {ProblemMissing, ProblemRolloutHalted}}},
		{"halted for an older bundle", &RolloutHead{Name: "a.example", Version: 10, Fingerprint: oldFP, State: crypto.RolloutHalted},
			map[string][]string{"web1": nil, "web2": nil, "web3": {ProblemBehind}, "web4": {ProblemMissing}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &Fleet{Certificates: map[string][]string{"a.example": {"web1", "web2", "web3", "web4"}, "b.example": {"web1"}},
				Records: []wire.Status{installedNew, waiting, released}, ReadAt: now,
				Newest: map[string]BundleInfo{"a.example": newest}, Rollouts: map[string]RolloutHead{}}
			if tt.head != nil {
				f.Rollouts["a.example"] = *tt.head
			}
			for _, r := range f.Rows(HealthOptions{}) {
				if r.Certificate != "a.example" {
					if slices.Contains(r.Problems(), ProblemRolloutHalted) {
						t.Errorf("%s/%s: halted", r.Node, r.Certificate)
					}
					continue
				}
				if got := r.Problems(); !slices.Equal(got, tt.want[r.Node]) {
					t.Errorf("%s: problems %v, want %v", r.Node, got, tt.want[r.Node])
				}
				if r.Node == "web2" && !r.Waiting {
					t.Errorf("web2 is not waiting")
				}
				if tt.head != nil && tt.head.State == crypto.RolloutHalted && tt.head.Version == 20 && r.RolloutReason != tt.head.Reason {
					t.Errorf("%s: reason %q", r.Node, r.RolloutReason)
				}
			}
		})
	}
}

// TestFleetTextPrintable: what nodes write in their records, and whoever
// stores a message writes in its headers, reaches Fleet's records, rows
// and newest bundles escaped (wire.Printable): no line break, carriage
// return or escape sequence that would rewrite the table certsync status
// prints, and no bidirectional override.
func TestFleetTextPrintable(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{"a.example": {"web1"}})
	ctx := context.Background()
	f.publish(f.lineage("a.example", f.issue("a.example", time.Time{})))
	newest := f.last("a.example")
	// The same signed envelope stored again with a serial of its own.
	msg := nats.NewMsg(wire.Subject("a.example"))
	msg.Data = newest.Data
	for k, v := range newest.Header {
		if k != jetstream.MsgIDHeader && !strings.HasPrefix(k, "Nats-Expected-") {
			msg.Header[k] = v
		}
	}
	msg.Header.Set(wire.HeaderSerial, "01\x1b[2K\r")
	if _, err := f.js().PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	kv, err := f.js().KeyValue(ctx, wire.StatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	record, err := json.Marshal(wire.Status{State: wire.StateFailed, LastSeen: time.Now(), InstalledSerial: "\u202e10",
		Error: "ok\nweb9  a.example  installed\x1b[1A\x1b[2K"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, wire.StatusKey("web1", "a.example"), record); err != nil {
		t.Fatal(err)
	}
	fl, err := f.publisher().Fleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rows := fl.Rows(HealthOptions{})
	if len(rows) != 1 {
		t.Fatalf("rows %+v, want web1's", rows)
	}
	r := rows[0]
	for what, got := range map[string]string{
		"error":            r.Error,
		"record's error":   r.Reported.Error,
		"installed serial": r.Reported.InstalledSerial,
		"newest serial":    fl.Newest["a.example"].Serial,
	} {
		if got != wire.Printable(got) || !strings.Contains(got, `\`) {
			t.Errorf("%s %q, want it escaped", what, got)
		}
	}
	if want := `ok\x0aweb9  a.example  installed\x1b[1A\x1b[2K`; r.Error != want {
		t.Errorf("error %q, want %q", r.Error, want)
	}
}
