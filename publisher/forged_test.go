package publisher

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
)

// TestRepublishTrustsOnlySignedRecipients: whoever may publish on a
// certificate's subject (the publisher's or the admin's credential) stores
// the publisher's own newest body again, unchanged and validly signed, with
// a Certsync-Recipients header claiming the recipients the configuration is
// about to have (and a forged Certsync-Fingerprint for good measure). Once
// the configuration adds a node, republish must still seal the
// certificate again: it reads what it compares from the signed seal
// record, never from the headers.
func TestRepublishTrustsOnlySignedRecipients(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{"example.com": {"web1"}})
	c := f.issue("example.com", time.Time{})
	f.lineage("example.com", c)
	ctx := context.Background()
	if _, err := f.publisher().Republish(ctx, nil); err != nil {
		t.Fatal(err)
	}
	genuine := f.last("example.com")
	if h, err := crypto.Verify(genuine.Data, []crypto.PublicKey{f.signer.Public()}); err != nil || h.Record.Recipients != RecipientsDigest([]string{f.cfg.Nodes["web1"]}) {
		t.Errorf("the published envelope's seal record = %+v, %v; want the digest of web1's recipient", h, err)
	}

	// The configuration will add web2; the forger knows its recipient
	// (recipients are public) and so the digest republish will compute.
	f.addNode("web2")
	want := RecipientsDigest([]string{f.cfg.Nodes["web1"], f.cfg.Nodes["web2"]})
	forged := nats.NewMsg(wire.Subject("example.com"))
	for k, v := range genuine.Header {
		if !strings.HasPrefix(k, "Nats-") {
			forged.Header[k] = v
		}
	}
	forged.Header.Set(wire.HeaderRecipients, want)
	forged.Header.Set(wire.HeaderFingerprint, genuine.Header.Get(wire.HeaderFingerprint))
	forged.Data = genuine.Data
	if _, err := f.js().PublishMsg(ctx, forged, jetstream.WithExpectLastSequencePerSubject(genuine.Sequence)); err != nil {
		t.Fatalf("storing the forged copy: %v", err)
	}
	forgedSeq := f.last("example.com").Sequence

	f.cfg.Certificates["example.com"] = []string{"web1", "web2"}
	report, err := f.publisher().Republish(ctx, nil)
	if err != nil || len(report.Results) != 1 || report.Results[0].Action != Published {
		t.Fatalf("republish after adding web2 under a forged header: %+v, %v; want the certificate sealed again", report, err)
	}
	msg := f.last("example.com")
	if msg.Sequence <= forgedSeq {
		t.Fatalf("newest sequence %d, want one after the forged copy's %d", msg.Sequence, forgedSeq)
	}
	f.open(msg, "web2")
	f.open(msg, "web1")
	// web2's new consumer starts at the bundle it can open.
	f.openFirstDelivery("web2")
}

// TestRepublishSealsAgainWithoutRecord: a body signed by the publisher but
// without a seal record (as sealed before records existed) says nothing
// trustworthy of its recipients or certificate, so republish seals it
// again, whatever its headers claim; the next run finds it unchanged.
func TestRepublishSealsAgainWithoutRecord(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{"example.com": {"web1"}})
	c := f.issue("example.com", time.Time{})
	b := f.lineage("example.com", c)
	ctx := context.Background()
	p := f.publisher()
	if _, err := p.Republish(ctx, nil); err != nil {
		t.Fatal(err)
	}
	genuine := f.last("example.com")
	j, err := p.prepare(b)
	if err != nil {
		t.Fatal(err)
	}
	j.bundle.Version = crypto.Format1Version(j.info.NotBefore) // as format 1 had it
	old, err := crypto.Seal(&j.bundle, f.signer, j.recipients) // no record
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(wire.Subject("example.com"))
	for k, v := range genuine.Header {
		if !strings.HasPrefix(k, "Nats-") {
			msg.Header[k] = v
		}
	}
	msg.Data = old
	if _, err := f.js().PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	report, err := p.Republish(ctx, nil)
	if err != nil || len(report.Results) != 1 || report.Results[0].Action != Published {
		t.Fatalf("republish over a body without a record: %+v, %v; want Published", report, err)
	}
	if h, err := crypto.Verify(f.last("example.com").Data, []crypto.PublicKey{f.signer.Public()}); err != nil || h.Record.IsZero() {
		t.Fatalf("the new body: %+v, %v; want a seal record", h, err)
	}
	report, err = p.Republish(ctx, nil)
	if err != nil || len(report.Results) != 1 || report.Results[0].Action != Unchanged {
		t.Fatalf("the next republish: %+v, %v; want Unchanged", report, err)
	}
}
