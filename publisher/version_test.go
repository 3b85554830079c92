package publisher

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/wire"
)

// TestPublishVersions: the publisher assigns the version. A new
// certificate gets the clock in milliseconds, or the newest + 1 when the
// clock is behind; a switch to a CA whose leaf has an earlier NotBefore
// publishes (it was refused as older when the version was the NotBefore);
// the same certificate sealed to other recipients, or forced, keeps the
// newest's version, so a node holding it finds it the same.
func TestPublishVersions(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{"example.com": {"web1"}})
	now := time.Now()
	clock := now
	f.cfg.Now = func() time.Time { return clock }
	first := f.publish(f.lineage("example.com", f.issue("example.com", now.Add(-10*time.Minute))))
	if want := uint64(now.UnixMilli()); first.Version != want {
		t.Errorf("first version %d, want the clock in milliseconds, %d", first.Version, want)
	}

	// Another CA, its leaf dated earlier than the one in service.
	other := testcert.NewCA(t)
	switched := other.Issue(t, testcert.Options{Names: []string{"example.com"}, NotBefore: now.Add(-50 * time.Minute)})
	clock = now.Add(time.Second)
	res, err := f.publisher().Publish(context.Background(), f.lineage("example.com", switched))
	if err != nil {
		t.Fatalf("publishing the other CA's certificate, dated earlier: %v", err)
	}
	if res.Action != Published || res.Version != uint64(clock.UnixMilli()) {
		t.Fatalf("other CA: %s version %d, want published with version %d", res.Action, res.Version, clock.UnixMilli())
	}
	msg := f.last("example.com")
	h, b := f.open(msg, "web1")
	if h.Format != crypto.Format || h.Version != res.Version || b.Version != res.Version || string(b.Cert) != string(switched.Cert) {
		t.Errorf("envelope format %d version %d (plaintext %d), want format %d version %d of the switched certificate",
			h.Format, h.Version, b.Version, crypto.Format, res.Version)
	}
	if got := msg.Header.Get(wire.HeaderVersion); got != strconv.FormatUint(res.Version, 10) {
		t.Errorf("Certsync-Version %q, want %d", got, res.Version)
	}

	// The same certificate to another recipient set: the same version.
	f.cfg.Certificates["example.com"] = []string{"web1", "web2"}
	f.addNode("web2")
	report, err := f.publisher().Republish(context.Background(), nil)
	if err != nil || len(report.Results) != 1 || report.Results[0].Action != Published || report.Results[0].Version != res.Version {
		t.Fatalf("republish to new recipients: %+v, %v; want published with version %d", report, err, res.Version)
	}
	if h, _ := f.open(f.last("example.com"), "web2"); h.Version != res.Version {
		t.Errorf("sealed again with version %d, want %d", h.Version, res.Version)
	}
	// Forced: the same version again.
	report, err = f.publisher().Republish(context.Background(), nil, Force())
	if err != nil || report.Results[0].Action != Published || report.Results[0].Version != res.Version {
		t.Fatalf("forced republish: %+v, %v; want published with version %d", report, err, res.Version)
	}
	// Unchanged says the newest's version.
	report, err = f.publisher().Republish(context.Background(), nil)
	if err != nil || report.Results[0].Action != Unchanged || report.Results[0].Version != res.Version {
		t.Fatalf("republish: %+v, %v; want unchanged at version %d", report, err, res.Version)
	}

	// The clock went back an hour: a renewal still gets a higher version.
	clock = now.Add(-time.Hour)
	renewal := f.ca.Issue(t, testcert.Options{Names: []string{"example.com"}, NotBefore: now.Add(-2 * time.Hour)})
	if got := f.publish(f.lineage("example.com", renewal)); got.Version != res.Version+1 {
		t.Errorf("renewal with the clock behind: version %d, want %d", got.Version, res.Version+1)
	}
	if n := f.count("example.com"); n != 5 {
		t.Errorf("%d messages, want 5", n)
	}
}

// TestPublishHeld: a certificate with a rollout policy is sealed with the
// hold record (Certsync-Hold: true); one whose own policy is none is not;
// sealed again to other recipients, a held bundle stays held.
func TestPublishHeld(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{"held.example": {"web1"}, "free.example": {"web1"}})
	f.cfg.Rollout = &RolloutPolicy{}
	f.cfg.Rollouts = map[string]*RolloutPolicy{"free.example": nil}
	held := f.publish(f.lineage("held.example", f.issue("held.example", time.Time{})))
	free := f.publish(f.lineage("free.example", f.issue("free.example", time.Time{})))
	if !held.Hold || free.Hold {
		t.Fatalf("results say hold %v and %v, want true for the policy's, false for none", held.Hold, free.Hold)
	}
	for name, want := range map[string]bool{"held.example": true, "free.example": false} {
		msg := f.last(name)
		h, _ := f.open(msg, "web1")
		if h.Hold != want || (msg.Header.Get(wire.HeaderHold) == "true") != want {
			t.Errorf("%s: envelope hold %v, header %q; want hold %v", name, h.Hold, msg.Header.Get(wire.HeaderHold), want)
		}
	}
	// The policy goes; the held version sealed to a new node stays held:
	// hold belongs to the version.
	f.cfg.Rollout = nil
	f.cfg.Certificates["held.example"] = []string{"web1", "web2"}
	f.addNode("web2")
	report, err := f.publisher().Republish(context.Background(), []string{"held.example"})
	if err != nil || len(report.Results) != 1 || report.Results[0].Action != Published || !report.Results[0].Hold || report.Results[0].Version != held.Version {
		t.Fatalf("republish to new recipients: %+v, %v; want published, held, version %d", report, err, held.Version)
	}
	if h, _ := f.open(f.last("held.example"), "web2"); !h.Hold || h.Version != held.Version {
		t.Errorf("sealed again: hold %v version %d, want held version %d", h.Hold, h.Version, held.Version)
	}
	// A renewal without a policy is not held.
	if res := f.publish(f.lineage("held.example", f.issue("held.example", time.Now()))); res.Hold {
		t.Error("a renewal without a policy is held")
	}
}

// TestCapWithdrawn: at most 16 withdrawn certificates, those withdrawn
// longest ago (by the history) dropped first.
func TestCapWithdrawn(t *testing.T) {
	t.Parallel()
	var fps []crypto.Fingerprint
	var hist []published
	for i := range 20 {
		fp := crypto.FingerprintOf([]byte{byte(i)})
		fps = append(fps, fp)
		if i >= 2 { // 0 and 1 left the history
			hist = append(hist, published{Release: crypto.Release{Fingerprint: fp}, Sequence: uint64(100 - i)})
		}
	}
	got := capWithdrawn(append(fps, fps[3], crypto.Fingerprint{}), hist)
	if len(got) != maxWithdrawn {
		t.Fatalf("%d withdrawn, want %d", len(got), maxWithdrawn)
	}
	// Dropped: 0 and 1 (gone from the history), then 19 and 18 (lowest
	// sequences).
	for _, i := range []int{0, 1, 18, 19} {
		if slices.Contains(got, fps[i]) {
			t.Errorf("fingerprint %d kept, want it dropped", i)
		}
	}
}
