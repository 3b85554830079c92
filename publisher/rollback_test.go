package publisher

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/testing/treetest"
	"github.com/certsync/certsync/internal/wire"
)

// rollback runs Rollback with f's configuration.
func (f *fixture) rollback(name string, opts RollbackOptions) (*Result, error) {
	f.t.Helper()
	return f.publisher().Rollback(context.Background(), name, opts)
}

// withdrawnOf is the withdrawn record of the newest bundle of name.
func (f *fixture) withdrawnOf(name string) []crypto.Fingerprint {
	f.t.Helper()
	h, err := crypto.Verify(f.last(name).Data, []crypto.PublicKey{f.signer.Public()})
	if err != nil {
		f.t.Fatal(err)
	}
	return h.Withdrawn
}

func serialOf(c *testcert.Cert) string { return c.Leaf.SerialNumber.Text(16) }
func fpOf(c *testcert.Cert) crypto.Fingerprint {
	return crypto.FingerprintOf(c.Leaf.Raw)
}

// TestRollback walks a rollback from certbot's archive (built in a temp
// dir as certbot lays it out) on a real server: the previous certificate
// comes back with a new version and the newest withdrawn; publish of the
// withdrawn one is refused with the cure; republish keeps the rolled-back
// one (and seals it again, from the archive, to a new node) and reports
// the withdrawn lineage; --to SERIAL puts the withdrawn one back
// deliberately; a renewal then publishes as usual.
func TestRollback(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{"example.com": {"web1"}})
	ctx := context.Background()
	now := time.Now()
	a := f.issue("example.com", now.Add(-2*time.Hour))
	first := f.publish(f.lineage("example.com", a))
	b := f.issue("example.com", now.Add(-time.Hour))
	second := f.publish(f.lineage("example.com", b))
	fromMsg := f.last("example.com") // the envelope rolled back from

	res, err := f.rollback("example.com", RollbackOptions{})
	if err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	if res.Action != Published || res.Fingerprint != fpOf(a) || res.Version <= second.Version || res.Hold {
		t.Fatalf("rollback %+v, want certificate A published, not held, with a version above %d", res, second.Version)
	}
	msg := f.last("example.com")
	h, got := f.open(msg, "web1")
	if string(got.Cert) != string(a.Cert) || string(got.PrivKey) != string(a.PrivKey) || h.Version != res.Version {
		t.Errorf("the rollback's envelope: version %d, not A's files", h.Version)
	}
	if !slices.Equal(h.Withdrawn, []crypto.Fingerprint{fpOf(b)}) || !slices.Equal(res.Withdrawn, h.Withdrawn) {
		t.Errorf("withdrawn %v (result %v), want B's fingerprint", h.Withdrawn, res.Withdrawn)
	}
	if got := msg.Header.Get(wire.HeaderWithdrawn); got != fpOf(b).String() {
		t.Errorf("Certsync-Withdrawn %q, want %q", got, fpOf(b))
	}
	// A replay of the envelope rolled back from is a downgrade for nodes.
	if from, err := crypto.Verify(fromMsg.Data, []crypto.PublicKey{f.signer.Public()}); err != nil ||
		crypto.CheckOrder(crypto.Release{Version: h.Version, Fingerprint: fpOf(a)}, crypto.Release{Version: from.Version, Fingerprint: fpOf(b)}) == nil {
		t.Errorf("a replay of the rolled-back-from envelope (version %d) is not a downgrade from %d: %v", from.Version, h.Version, err)
	}
	f.checkNoSecrets("logs", f.logs.String(), a.PrivKey, b.PrivKey)

	// The lineage still holds B: publish refuses it, naming the cure.
	lineage, err := ReadLineage(f.root+"/live/example.com", "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.publisher().Publish(ctx, lineage)
	if !errors.Is(err, ErrWithdrawn) || !strings.Contains(err.Error(), "certsync rollback example.com --to "+serialOf(b)) ||
		!strings.HasPrefix(err.Error(), `refusing to publish certificate "example.com"`) {
		t.Fatalf("publishing the withdrawn certificate: %v, want %v naming certsync rollback example.com --to %s", err, ErrWithdrawn, serialOf(b))
	}
	// Republish: quiet, keeps A, reports the withdrawn lineage.
	report, err := f.publisher().Republish(ctx, nil)
	if err != nil || len(report.Results) != 1 || report.Results[0].Action != Unchanged || report.Results[0].Fingerprint != fpOf(a) {
		t.Fatalf("republish after the rollback: %+v, %v; want A unchanged", report, err)
	}
	if len(report.Withdrawn) != 1 || report.Withdrawn[0].Lineage.Fingerprint != fpOf(b) || report.Withdrawn[0].InService.Fingerprint != fpOf(a) {
		t.Errorf("report.Withdrawn %+v, want the lineage's B, A in service", report.Withdrawn)
	}
	if ev := f.logs.String(); !strings.Contains(ev, "lineage_withdrawn") {
		t.Error("no lineage_withdrawn log")
	}
	// A new node: republish seals A (from the archive) again to it, with
	// A's version and withdrawn record.
	f.cfg.Certificates["example.com"] = []string{"web1", "web2"}
	f.addNode("web2")
	report, err = f.publisher().Republish(ctx, nil)
	if err != nil || len(report.Results) != 1 || report.Results[0].Action != Published || report.Results[0].Version != res.Version {
		t.Fatalf("republish to a new node: %+v, %v; want A published again with version %d", report, err, res.Version)
	}
	h, got = f.open(f.last("example.com"), "web2")
	if string(got.Cert) != string(a.Cert) || h.Version != res.Version || !slices.Equal(h.Withdrawn, []crypto.Fingerprint{fpOf(b)}) {
		t.Errorf("sealed again: version %d withdrawn %v, want A at %d with B withdrawn", h.Version, h.Withdrawn, res.Version)
	}

	// --to B: deliberately back; A is withdrawn now, B no longer.
	back, err := f.rollback("example.com", RollbackOptions{ToSerial: strings.ToUpper(serialOf(b))})
	if err != nil || back.Fingerprint != fpOf(b) || back.Version <= res.Version {
		t.Fatalf("rollback --to B: %+v, %v; want B with a version above %d", back, err, res.Version)
	}
	if w := f.withdrawnOf("example.com"); !slices.Equal(w, []crypto.Fingerprint{fpOf(a)}) {
		t.Errorf("withdrawn after --to B: %v, want A only", w)
	}
	// A renewal publishes as usual, the withdrawn record carried forward.
	c := f.issue("example.com", now.Add(-30*time.Minute))
	renewal := f.publish(f.lineage("example.com", c))
	if renewal.Version <= back.Version || !slices.Equal(f.withdrawnOf("example.com"), []crypto.Fingerprint{fpOf(a)}) {
		t.Errorf("renewal: version %d (want above %d), withdrawn %v (want A)", renewal.Version, back.Version, f.withdrawnOf("example.com"))
	}
	if first.Version >= second.Version {
		t.Errorf("versions %d, %d do not increase", first.Version, second.Version)
	}
}

// TestRollbackChoosesThePrevious: without --to, the newest archived
// certificate that an earlier bundle carried, skipping the newest's and
// those it withdrew; with no earlier bundle in the stream, the highest
// archived issue below the newest's.
func TestRollbackChoosesThePrevious(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{"example.com": {"web1"}})
	now := time.Now()
	a := f.issue("example.com", now.Add(-3*time.Hour))
	f.publish(f.lineage("example.com", a))
	b := f.issue("example.com", now.Add(-2*time.Hour))
	f.publish(f.lineage("example.com", b))
	// Issue 3 was never published (a hook that failed), issue 4 was.
	f.lineage("example.com", f.issue("example.com", now.Add(-90*time.Minute)))
	c := f.issue("example.com", now.Add(-time.Hour))
	f.publish(f.lineage("example.com", c))

	for i, want := range []*testcert.Cert{b, a} {
		res, err := f.rollback("example.com", RollbackOptions{})
		if err != nil || res.Fingerprint != fpOf(want) {
			t.Fatalf("rollback %d: %+v, %v; want serial %s", i+1, res, err, serialOf(want))
		}
	}
	// B and C are withdrawn now; A in service.
	w := f.withdrawnOf("example.com")
	if len(w) != 2 || !slices.Contains(w, fpOf(b)) || !slices.Contains(w, fpOf(c)) {
		t.Errorf("withdrawn %v, want B and C", w)
	}

	// A stream that never carried the earlier issue: the one below.
	g := newFixture(t, runServer(t), map[string][]string{"example.com": {"web1"}})
	old := g.issue("example.com", now.Add(-2*time.Hour))
	g.lineage("example.com", old)
	g.publish(g.lineage("example.com", g.issue("example.com", now.Add(-time.Hour))))
	if res, err := g.rollback("example.com", RollbackOptions{}); err != nil || res.Fingerprint != fpOf(old) {
		t.Fatalf("rollback to a never published issue: %+v, %v; want serial %s", res, err, serialOf(old))
	}
}

// TestRollbackHold: with a rollout policy the rollback is held (it goes
// through the waves); Immediate (rollout abort) is not.
func TestRollbackHold(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{"example.com": {"web1"}})
	f.cfg.Rollout = &RolloutPolicy{}
	now := time.Now()
	a := f.issue("example.com", now.Add(-2*time.Hour))
	f.publish(f.lineage("example.com", a))
	b := f.issue("example.com", now.Add(-time.Hour))
	f.publish(f.lineage("example.com", b))
	res, err := f.rollback("example.com", RollbackOptions{})
	if err != nil || !res.Hold {
		t.Fatalf("rollback with a policy: %+v, %v; want held", res, err)
	}
	if h, _ := f.open(f.last("example.com"), "web1"); !h.Hold {
		t.Error("the rollback's envelope is not held")
	}
	res, err = f.rollback("example.com", RollbackOptions{ToSerial: serialOf(b), Immediate: true})
	if err != nil || res.Hold || res.Fingerprint != fpOf(b) {
		t.Fatalf("immediate rollback: %+v, %v; want B, not held", res, err)
	}
	if h, _ := f.open(f.last("example.com"), "web1"); h.Hold {
		t.Error("the immediate rollback's envelope is held")
	}
}

// TestRollbackRefusals: each refusal is one clear line, stores nothing and
// holds no key material.
func TestRollbackRefusals(t *testing.T) {
	t.Parallel()
	now := time.Now()
	tests := []struct {
		name string
		// setup prepares the lineage and the stream and returns the options.
		setup  func(f *fixture) RollbackOptions
		want   string
		stored uint64
	}{
		{
			name: "unknown certificate",
			setup: func(f *fixture) RollbackOptions {
				f.cfg.Certificates = map[string][]string{"other.com": {"web1"}}
				return RollbackOptions{}
			},
			want: `refusing to roll back certificate "example.com": not in the configuration`,
		},
		{
			name: "not certbot's lineage",
			setup: func(f *fixture) RollbackOptions {
				live := filepath.Join(f.root, "live", "example.com")
				c := f.issue("example.com", time.Time{})
				treetest.MkdirAll(t, live, 0o700)
				for name, data := range map[string][]byte{"cert.pem": c.Cert, "chain.pem": c.Chain, "fullchain.pem": c.FullChain, "privkey.pem": c.PrivKey} {
					treetest.WriteFile(t, filepath.Join(live, name), data, 0o600)
				}
				b, err := ReadLineage(live, "")
				if err != nil {
					t.Fatal(err)
				}
				f.publish(b)
				return RollbackOptions{}
			},
			want:   `is not certbot's: cert.pem is not a link into its archive`,
			stored: 1,
		},
		{
			name: "no bundle in the stream",
			setup: func(f *fixture) RollbackOptions {
				f.lineage("example.com", f.issue("example.com", now.Add(-time.Hour)))
				f.lineage("example.com", f.issue("example.com", time.Time{}))
				return RollbackOptions{}
			},
			want: "the stream holds no bundle of it signed with this signing key",
		},
		{
			name: "no earlier certificate",
			setup: func(f *fixture) RollbackOptions {
				f.publish(f.lineage("example.com", f.issue("example.com", time.Time{})))
				return RollbackOptions{}
			},
			want:   "holds no earlier certificate to go back to",
			stored: 1,
		},
		{
			name: "serial not in the archive",
			setup: func(f *fixture) RollbackOptions {
				f.publish(f.lineage("example.com", f.issue("example.com", now.Add(-time.Hour))))
				f.publish(f.lineage("example.com", f.issue("example.com", time.Time{})))
				return RollbackOptions{ToSerial: "00c0ffee"}
			},
			want:   `serial c0ffee is not in certbot's archive`,
			stored: 2,
		},
		{
			name: "invalid serial",
			setup: func(f *fixture) RollbackOptions {
				f.publish(f.lineage("example.com", f.issue("example.com", time.Time{})))
				return RollbackOptions{ToSerial: "-----BEGIN PRIVATE KEY-----"}
			},
			want:   "invalid serial: want the certificate's serial in hex",
			stored: 1,
		},
		{
			name: "the newest certificate",
			setup: func(f *fixture) RollbackOptions {
				f.publish(f.lineage("example.com", f.issue("example.com", now.Add(-time.Hour))))
				c := f.issue("example.com", time.Time{})
				f.publish(f.lineage("example.com", c))
				return RollbackOptions{ToSerial: serialOf(c)}
			},
			want:   "is the newest bundle's certificate already",
			stored: 2,
		},
		{
			name: "expired",
			setup: func(f *fixture) RollbackOptions {
				clock := now
				f.cfg.Now = func() time.Time { return clock }
				f.publish(f.lineage("example.com", f.ca.Issue(t, testcert.Options{NotBefore: now.Add(-time.Hour), Validity: 2 * time.Hour})))
				f.publish(f.lineage("example.com", f.issue("example.com", time.Time{})))
				clock = now.Add(2 * time.Hour)
				return RollbackOptions{}
			},
			want:   "certificate expired at",
			stored: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, runServer(t), map[string][]string{"example.com": {"web1"}})
			opts := tt.setup(f)
			res, err := f.rollback("example.com", opts)
			if err == nil {
				t.Fatalf("rolled back: %+v, want a refusal", res)
			}
			if !strings.HasPrefix(err.Error(), `refusing to roll back certificate "example.com"`) {
				t.Errorf("error %q, want it to start with the refusal", err)
			}
			f.wantRefused(err, tt.want, nil, "example.com", tt.stored)
		})
	}
}
