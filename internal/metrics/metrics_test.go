package metrics

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/metrics/metricstest"
)

func TestServeTextFormat(t *testing.T) {
	t.Parallel()
	m := New("web1", "v1.2.3")
	notAfter := time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)
	at := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	m.Installed("example.com", notAfter)
	m.Install("example.com", true, at)
	m.Install("example.com", false, at)
	m.Bundle("example.com", "staged", "", at)
	m.Bundle("example.com", "refused", "bad_signature", at)
	m.Pending(3)
	m.Scheduled("example.com", notAfter)
	m.Scheduled("other.example", at)
	m.Scheduled("other.example", time.Time{})

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- m.Serve(ctx, l, slog.New(slog.DiscardHandler)) }()

	families, err := metricstest.Scrape("http://" + l.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"certsync_certificate_not_after_seconds", map[string]string{"certificate": "example.com"}, float64(notAfter.Unix())},
		{"certsync_installs_total", map[string]string{"certificate": "example.com", "result": "success"}, 1},
		{"certsync_installs_total", map[string]string{"certificate": "example.com", "result": "failed"}, 1},
		{"certsync_last_install_success_timestamp_seconds", map[string]string{"certificate": "example.com"}, float64(at.Unix())},
		{"certsync_bundles_total", map[string]string{"outcome": "refused"}, 1},
		{"certsync_refusals_total", map[string]string{"certificate": "example.com", "reason": "bad_signature"}, 1},
		{"certsync_consumer_pending_messages", nil, 3},
		{"certsync_install_scheduled_timestamp_seconds", map[string]string{"certificate": "example.com"}, float64(notAfter.Unix())},
		{"certsync_build_info", map[string]string{"version": "v1.2.3", "node": "web1"}, 1},
	} {
		got, ok := metricstest.Value(families[c.name], c.labels)
		if !ok {
			t.Errorf("%s%v missing", c.name, c.labels)
			continue
		}
		if got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := metricstest.Value(families["certsync_install_scheduled_timestamp_seconds"], map[string]string{"certificate": "other.example"}); ok {
		t.Error("a certificate with nothing waiting has a scheduled install time")
	}
	if _, ok := families["go_goroutines"]; !ok {
		t.Error("go runtime metrics missing")
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after its context ended")
	}
}

func TestNilRecordsNothing(t *testing.T) {
	t.Parallel()
	var m *Node
	m.Installed("x", time.Now())
	m.Install("x", true, time.Now())
	m.Bundle("x", "refused", "malformed", time.Now())
	m.Pending(1)
}

func TestListenRefusesBadAddress(t *testing.T) {
	t.Parallel()
	_, err := Listen("127.0.0.1:notaport")
	if err == nil || !strings.Contains(err.Error(), `listening for metrics on "127.0.0.1:notaport"`) {
		t.Fatalf("Listen = %v, want a listen error", err)
	}
}
