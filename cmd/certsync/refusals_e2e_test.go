package main

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/wire"
)

// TestNodeSyncRefusesForgedMessages is acceptance 3 through the command:
// what someone with publish rights on the subject could put there (garbage,
// an empty body, a valid bundle of another certificate moved to this
// certificate's subject) makes `certsync node sync` exit 1 with one error
// line and leaves what is staged as it was; a renewal published afterwards
// still arrives. (Untrusted signers and foreign recipients are in
// testdata/script/node_sync.txtar; every refusal has unit tests in
// subscriber and crypto.)
func TestNodeSyncRefusesForgedMessages(t *testing.T) {
	t.Parallel()
	url := natstest.URL(natstest.RunServer(t))
	le := newLineages(t)
	lineage, _ := le.Write("example.com", certOptions{})
	other, _ := le.Write("other.example", certOptions{})
	f := newFleet(t, fleetOptions{
		URL:      url,
		Lineages: le.Live(),
		Certificates: map[string][]string{
			"example.com":   {"web1"},
			"other.example": {"web1"},
		},
	})
	web1 := f.Nodes["web1"]
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", other)
	f.sync(t, "web1")
	checkStaged(t, web1.StageDir, "example.com", lineage)
	staged := readStaged(t, web1.StageDir, "example.com")

	js := natstest.JetStream(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, wire.Stream)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	moved, err := st.GetLastMsgForSubject(ctx, wire.Subject("other.example"))
	if err != nil {
		t.Fatalf("read other.example's bundle: %v", err)
	}
	garbage := make([]byte, 4096)
	rand.Read(garbage)

	tests := []struct {
		name   string
		body   []byte
		header nats.Header
		want   string
	}{
		{name: "garbage", body: garbage, want: "malformed envelope"},
		{name: "empty", want: "malformed envelope"},
		{name: "moved from another subject", body: moved.Data, header: moved.Header, want: `signed for certificate "other.example"`},
	}
	for i, tt := range tests {
		msg := nats.NewMsg(wire.Subject("example.com"))
		msg.Data = tt.body
		for k, v := range tt.header {
			// The certsync headers, not the publisher's expectations.
			if strings.HasPrefix(k, "Certsync-") {
				msg.Header[k] = v
			}
		}
		// A fresh message id, or the stream would drop it as a repeat.
		msg.Header.Set(wire.HeaderMsgID, "forged-"+strings.Repeat("x", i+1))
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatalf("%s: publish: %v", tt.name, err)
		}
		res := certsyncCmd(t, "node", "sync", "--config", web1.Config, "--timeout", "30s")
		errs := res.errorLines()
		if res.Code != 1 || len(errs) != 1 || !strings.Contains(errs[0], `"example.com"`) || !strings.Contains(errs[0], tt.want) {
			t.Errorf("%s: node sync exit status %d, want 1 and one error line naming example.com and saying %q; stderr:\n%s",
				tt.name, res.Code, tt.want, res.Stderr)
		}
		if res.Stdout != "" {
			t.Errorf("%s: node sync printed on stdout: %q", tt.name, res.Stdout)
		}
		got := readStaged(t, web1.StageDir, "example.com")
		if got.Sequence != staged.Sequence || got.Fingerprint != staged.Fingerprint || !got.StagedAt.Equal(staged.StagedAt) {
			t.Errorf("%s: staged record changed to %+v", tt.name, got)
		}
		checkStaged(t, web1.StageDir, "example.com", lineage)
	}

	// Refused messages were settled for good: the next pass has nothing to
	// say, and a renewal published after them arrives.
	f.sync(t, "web1")
	le.Write("example.com", certOptions{})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
	f.sync(t, "web1")
	checkStaged(t, web1.StageDir, "example.com", lineage)
	if got := readStaged(t, web1.StageDir, "example.com"); got.Fingerprint == staged.Fingerprint {
		t.Error("the renewal published after the refusals was not staged")
	}
	checkStaged(t, web1.StageDir, "other.example", other)
}
