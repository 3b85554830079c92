package subscriber

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/loopback"

	dto "github.com/prometheus/client_model/go"

	"github.com/certsync/certsync/internal/testing/metricstest"
	"github.com/certsync/certsync/internal/testing/natstest"
)

// TestRunServesMetrics: with metrics_listen set, `node run` serves what it
// installed, received and refused in the Prometheus text format.
func TestRunServesMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c1 := e.issue(time.Hour)
	e.publishSealed("example.com", c1)

	addr := fmt.Sprintf("127.0.0.1:%d", loopback.FreePort(t))
	n := e.node(t.TempDir(), "example.com")
	n.cfg.MetricsListen = addr
	if n2 := e.node(t.TempDir(), "example.com"); n2.metrics != nil {
		t.Fatal("metrics are on without metrics_listen")
	}
	// New turns metrics on from the configuration; this node was made
	// without, so make them as New would.
	n.Node = mustNodeWithMetrics(t, n.Node)

	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node log:\n%s", n.logs.String())
		}
	})
	stop := startRun(t, n)
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	var families map[string]*dto.MetricFamily
	waitMetric := func(name string, labels map[string]string) {
		t.Helper()
		natstest.WaitFor(t, 30*time.Second, fmt.Sprintf("%s%v to be 1", name, labels), func() bool {
			var err error
			if families, err = metricstest.Scrape("http://" + addr + "/metrics"); err != nil {
				return false
			}
			v, _ := metricstest.Value(families[name], labels)
			return v == 1
		})
	}
	waitMetric("certsync_installs_total", map[string]string{"certificate": "example.com", "result": "success"})
	// The node's consumer exists now: a poisoned message reaches it.
	e.publish("example.com", []byte("not an envelope"), c1)
	waitMetric("certsync_refusals_total", map[string]string{"certificate": "example.com", "reason": "malformed"})
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"certsync_certificate_not_after_seconds", map[string]string{"certificate": "example.com"}, float64(c1.Leaf.NotAfter.Unix())},
		{"certsync_bundles_total", map[string]string{"outcome": "staged"}, 1},
		{"certsync_bundles_total", map[string]string{"outcome": "refused"}, 1},
		{"certsync_consumer_pending_messages", nil, 0},
		{"certsync_build_info", map[string]string{"node": nodeName, "version": "test"}, 1},
	} {
		got, ok := metricstest.Value(families[c.name], c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if v, ok := metricstest.Value(families["certsync_last_install_success_timestamp_seconds"], map[string]string{"certificate": "example.com"}); !ok || v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last install time = %v (present %v), want about now", v, ok)
	}
}

// TestRunRefusesBadMetricsAddress: a metrics_listen that cannot be opened
// stops `node run` at start with an error naming it; one that is no
// address at all is refused by New.
func TestRunRefusesBadMetricsAddress(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.node(t.TempDir(), "example.com")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	n.cfg.MetricsListen = busy.Addr().String()
	n.Node = mustNodeWithMetrics(t, n.Node)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = n.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("listening for metrics on %q", busy.Addr())) {
		t.Fatalf("Run = %v, want the metrics address refused", err)
	}

	n.cfg.MetricsListen = "127.0.0.1:notaport"
	if _, err := New(n.cfg, n.log); err == nil || !strings.Contains(err.Error(), `metrics_listen: want HOST:PORT with a numeric port from 1 to 65535, got "127.0.0.1:notaport"`) {
		t.Errorf("New with metrics_listen 127.0.0.1:notaport = %v, want it refused", err)
	}
}

// mustNodeWithMetrics remakes n with New, so that New's handling of
// MetricsListen applies, keeping its test hooks.
func mustNodeWithMetrics(t *testing.T, n *Node) *Node {
	t.Helper()
	m, err := New(n.cfg, n.log)
	if err != nil {
		t.Fatal(err)
	}
	if m.metrics == nil {
		t.Fatal("New made no metrics with metrics_listen set")
	}
	m.onStaged = n.onStaged
	return m
}

// TestMetricsKnownFromStart: a node with metrics exports every counter
// series of each configured certificate at 0 before it received anything:
// installs by result, bundles by outcome, refusals by reason.
func TestMetricsKnownFromStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.node(t.TempDir(), "example.com", "example.org")
	n.cfg.MetricsListen = "127.0.0.1:0"
	m := mustNodeWithMetrics(t, n.Node)

	rec := httptest.NewRecorder()
	m.metrics.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	families, err := metricstest.Parse(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	reasons := []string{"other", "clock"}
	for _, r := range refusalReasons {
		reasons = append(reasons, r.reason)
	}
	for _, cert := range []string{"example.com", "example.org"} {
		check := func(name, label, value string) {
			t.Helper()
			labels := map[string]string{"certificate": cert, label: value}
			if v, ok := metricstest.Value(families[name], labels); !ok || v != 0 {
				t.Errorf("%s%v = %v (present %v), want 0 from the start", name, labels, v, ok)
			}
		}
		for _, r := range []string{"success", "failed"} {
			check("certsync_installs_total", "result", r)
		}
		for _, o := range []Outcome{OutcomeStaged, OutcomeUnchanged, OutcomeSuperseded, OutcomeRefused, OutcomeFailed} {
			check("certsync_bundles_total", "outcome", string(o))
		}
		for _, r := range reasons {
			check("certsync_refusals_total", "reason", r)
		}
		if v, ok := metricstest.Value(families["certsync_rollout_waiting"], map[string]string{"certificate": cert}); !ok || v != 0 {
			t.Errorf("certsync_rollout_waiting{certificate=%q} = %v (present %v), want 0 from the start", cert, v, ok)
		}
	}
}

// TestRefusalReasonIsKnown: every reason refusalReason gives is one whose
// series a node starts with.
func TestRefusalReasonIsKnown(t *testing.T) {
	t.Parallel()
	known := map[string]bool{reasonOther: true}
	for _, r := range refusalReasons {
		if known[r.reason] {
			t.Errorf("reason %q listed twice", r.reason)
		}
		known[r.reason] = true
	}
	errs := []error{errors.New("something else"), fmt.Errorf("wrapped: %w", ErrDowngrade)}
	for _, r := range refusalReasons {
		errs = append(errs, permanent(fmt.Errorf("refusing: %w", r.err)))
	}
	for _, err := range errs {
		if got := refusalReason(err); !known[got] {
			t.Errorf("refusalReason(%v) = %q, not a known reason", err, got)
		}
	}
}
