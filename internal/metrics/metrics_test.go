package metrics

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/certsync/certsync/internal/testing/metricstest"
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
	m.Known([]string{"x"}, []string{"refused"}, []string{"malformed"})
}

func TestListenRefusesBadAddress(t *testing.T) {
	t.Parallel()
	_, err := Listen("127.0.0.1:notaport")
	if err == nil || !strings.Contains(err.Error(), `listening for metrics on "127.0.0.1:notaport"`) {
		t.Fatalf("Listen = %v, want a listen error", err)
	}
}

// TestKnownSeriesStartAtZero: after Known, every counter series of each
// configured certificate is exported at 0 before anything happened, and a
// name the node is not configured with gets no series of its own.
func TestKnownSeriesStartAtZero(t *testing.T) {
	t.Parallel()
	m := New("web1", "v1.2.3")
	certs := []string{"example.com", "example.org"}
	outcomes := []string{"staged", "refused"}
	reasons := []string{"bad_signature", "other"}
	m.Known(certs, outcomes, reasons)

	families := scrape(t, m)
	type series struct {
		name   string
		labels map[string]string
	}
	var want []series
	for _, c := range certs {
		for _, r := range []string{ResultSuccess, ResultFailed} {
			want = append(want, series{"certsync_installs_total", map[string]string{"certificate": c, "result": r}})
		}
		for _, o := range outcomes {
			want = append(want, series{"certsync_bundles_total", map[string]string{"certificate": c, "outcome": o}})
		}
		for _, r := range reasons {
			want = append(want, series{"certsync_refusals_total", map[string]string{"certificate": c, "reason": r}})
		}
	}
	for _, s := range want {
		if v, ok := metricstest.Value(families[s.name], s.labels); !ok || v != 0 {
			t.Errorf("%s%v = %v (present %v), want 0 from the start", s.name, s.labels, v, ok)
		}
	}
	for name, n := range map[string]int{
		"certsync_installs_total": len(certs) * 2,
		"certsync_bundles_total":  len(certs) * len(outcomes),
		"certsync_refusals_total": len(certs) * len(reasons),
	} {
		if got := len(families[name].GetMetric()); got != n {
			t.Errorf("%s has %d series, want %d", name, got, n)
		}
	}
	if _, ok := families["certsync_certificate_not_after_seconds"]; ok {
		t.Error("certsync_certificate_not_after_seconds is exported before any install")
	}

	// A bundle of a certificate the node does not hold, and one whose
	// subject names none: counted, under one label for all such names.
	at := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	m.Bundle("evil.example", "refused", "unknown_certificate", at)
	m.Bundle("", "refused", "wrong_subject", at)
	m.Bundle("example.com", "staged", "", at)
	families = scrape(t, m)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"certsync_bundles_total", map[string]string{"certificate": UnknownCertificate, "outcome": "refused"}, 2},
		{"certsync_refusals_total", map[string]string{"certificate": UnknownCertificate, "reason": "unknown_certificate"}, 1},
		{"certsync_refusals_total", map[string]string{"certificate": UnknownCertificate, "reason": "wrong_subject"}, 1},
		{"certsync_bundles_total", map[string]string{"certificate": "example.com", "outcome": "staged"}, 1},
	} {
		if got, ok := metricstest.Value(families[c.name], c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "certificate" && (l.GetValue() == "evil.example" || l.GetValue() == "") {
					t.Errorf("%s has a series for certificate %q", f.GetName(), l.GetValue())
				}
			}
		}
	}
}

// scrape reads what m's handler serves.
func scrape(t *testing.T, m *Node) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	families, err := metricstest.Parse(rec.Body)
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	return families
}
