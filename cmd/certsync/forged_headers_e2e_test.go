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

// TestForgedHeadersDoNotBlockPublisherE2E: headers are never trusted, by
// the publisher either. A message stored by anyone allowed to publish on a
// certificate's subject, with a worthless body and headers of its choosing,
// is refused by the node; it must not keep the next real renewal from
// being published and reaching the node.
func TestForgedHeadersDoNotBlockPublisherE2E(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	le := newLineages(t)
	tests := []struct {
		name, cert string
		kv         []string // headers set on a copy of the genuine ones
	}{
		{name: "Certsync-Version far ahead", cert: "version.example", kv: []string{wire.HeaderVersion, "18446744073709551615"}},
		{name: "Nats-Sequence of an earlier message", cert: "sequence.example", kv: []string{"Nats-Sequence", "1"}},
	}
	certs := map[string][]string{}
	live := map[string]string{}
	for _, tt := range tests {
		certs[tt.cert] = []string{"web1"}
		live[tt.cert], _ = le.Write(tt.cert, certOptions{})
	}
	// A short timeout: the publisher retries a wrong last sequence until it.
	f := newFleet(t, fleetOptions{URL: srv.URL, Lineages: le.Live(), Certificates: certs, Timeout: "5s"})
	web1 := f.Nodes["web1"]
	js := natstest.JetStream(t, srv.URL)
	for _, tt := range tests {
		mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", live[tt.cert])
		f.sync(t, "web1")
		h := nats.Header{}
		for k, v := range newestBundle(t, js, tt.cert).Header {
			if !strings.HasPrefix(k, "Nats-") {
				h[k] = v
			}
		}
		for i := 0; i < len(tt.kv); i += 2 {
			h.Set(tt.kv[i], tt.kv[i+1])
		}
		junk := make([]byte, 512)
		rand.Read(junk)
		msg := nats.NewMsg(wire.Subject(tt.cert))
		msg.Header, msg.Data = h, junk
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := js.PublishMsg(ctx, msg)
		cancel()
		if err != nil {
			t.Fatalf("%s: publish the forged message: %v", tt.name, err)
		}
		res := certsyncCmd(t, "node", "sync", "--config", web1.Config, "--timeout", "30s")
		checkRefused(t, tt.name, res, tt.cert, "malformed envelope")

		le.Write(tt.cert, certOptions{})
		if res := certsyncCmd(t, "publish", "--config", f.Publisher, "--lineage", live[tt.cert]); res.Code != 0 {
			t.Errorf("%s: certsync publish of a renewal after the forged message: exit %d, want 0: the publisher trusted a header\n%s",
				tt.name, res.Code, res.Stderr)
			continue
		}
		f.sync(t, "web1")
		checkStaged(t, web1.StageDir, tt.cert, live[tt.cert])
	}
}
