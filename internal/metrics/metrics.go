// Package metrics holds the Prometheus metrics of `certsync node run` and
// serves them in the text exposition format on the node's metrics_listen
// address. Metrics live in their own registry, never the global one, so a
// process (or a test) may hold several nodes.
//
// Names follow Prometheus conventions: the certsync_ prefix, _total for
// counters, _seconds for times (Unix timestamps included). Labels carry only
// certificate names, outcomes and refusal reasons: never a secret.
//
// Every counter series a node can have is there from the start, at 0 (see
// Known), as Prometheus advises for metrics whose labels are known in
// advance: rate() and increase() then see the first failure, and an alert
// on it fires, instead of a series that appears at 1 and has no increase.
// The gauges of an installed certificate appear once one is installed,
// since 0 would read as a certificate expired in 1970.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Node is the set of metrics of one node. The zero value is not usable;
// create it with New. A nil *Node is valid and records nothing, so callers
// need no checks when metrics are off.
type Node struct {
	reg *prometheus.Registry

	notAfter      *prometheus.GaugeVec
	installs      *prometheus.CounterVec
	lastInstall   *prometheus.GaugeVec
	scheduled     *prometheus.GaugeVec
	held          *prometheus.GaugeVec
	bundles       *prometheus.CounterVec
	refusals      *prometheus.CounterVec
	pending       prometheus.Gauge
	lastProcessed prometheus.Gauge

	// known are the configured certificates, once Known was called; a
	// label for any other name is UnknownCertificate.
	known map[string]bool
}

// Results of an install, the result label of certsync_installs_total.
const (
	ResultSuccess = "success"
	ResultFailed  = "failed"
)

// UnknownCertificate is the certificate label of what a node records for a
// name it is not configured with (a bundle on another certificate's
// subject, or on a subject that names none), once Known was called. It
// cannot be a certificate name, which starts with a letter or digit, and it
// bounds the series a node holds whatever the stream brings it.
const UnknownCertificate = "_unknown"

// New makes the metrics of node, reporting certsync's version in
// certsync_build_info.
func New(node, version string) *Node {
	reg := prometheus.NewRegistry()
	m := &Node{
		reg: reg,
		notAfter: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "certsync_certificate_not_after_seconds",
			Help: "Expiry (not-after, Unix time) of the certificate installed for each certificate name.",
		}, []string{"certificate"}),
		installs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certsync_installs_total",
			Help: "Install attempts by certificate and result (success, failed).",
		}, []string{"certificate", "result"}),
		lastInstall: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "certsync_last_install_success_timestamp_seconds",
			Help: "Unix time of the last successful install of each certificate.",
		}, []string{"certificate"}),
		scheduled: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "certsync_install_scheduled_timestamp_seconds",
			Help: "Unix time the staged bundle of each certificate will be installed on its own: its schedule's window, its not-before, or the next retry of a failed install; absent when none waits.",
		}, []string{"certificate"}),
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "certsync_rollout_waiting",
			Help: "1 while the staged bundle of each certificate is held by its rollout and not released to this node (it installs once released, or at its expiry deadline), else 0.",
		}, []string{"certificate"}),
		bundles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certsync_bundles_total",
			Help: "Messages decided (bundles and rollout records), by certificate and outcome (staged, unchanged, superseded, refused, failed; a rollout record kept counts as staged).",
		}, []string{"certificate", "outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certsync_refusals_total",
			Help: "Bundles and rollout records refused, by certificate and reason.",
		}, []string{"certificate", "reason"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "certsync_consumer_pending_messages",
			Help: "Bundle messages waiting on this node's consumer (consumer lag).",
		}),
		lastProcessed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "certsync_last_bundle_processed_timestamp_seconds",
			Help: "Unix time this node last decided on a bundle message.",
		}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "certsync_build_info",
		Help:        "certsync's version and the node's name; always 1.",
		ConstLabels: prometheus.Labels{"version": version, "node": node},
	})
	build.Set(1)
	reg.MustRegister(m.notAfter, m.installs, m.lastInstall, m.scheduled, m.held, m.bundles, m.refusals, m.pending, m.lastProcessed, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Known makes every counter series of the given certificates at 0: for
// each certificate, certsync_installs_total for each result,
// certsync_bundles_total for each of outcomes and certsync_refusals_total
// for each of reasons (the caller's fixed lists), and
// certsync_rollout_waiting at 0. From then on a name not
// among certificates is recorded as UnknownCertificate. Call it once,
// before the node records anything.
func (m *Node) Known(certificates, outcomes, reasons []string) {
	if m == nil {
		return
	}
	m.known = make(map[string]bool, len(certificates))
	for _, c := range certificates {
		m.known[c] = true
		for _, r := range []string{ResultSuccess, ResultFailed} {
			m.installs.WithLabelValues(c, r)
		}
		for _, o := range outcomes {
			m.bundles.WithLabelValues(c, o)
		}
		for _, r := range reasons {
			m.refusals.WithLabelValues(c, r)
		}
		m.held.WithLabelValues(c).Set(0)
	}
}

// certificate is the certificate label of name.
func (m *Node) certificate(name string) string {
	if m.known != nil && !m.known[name] {
		return UnknownCertificate
	}
	return name
}

// Bundle counts one decided bundle message and, for a refusal, its reason.
func (m *Node) Bundle(certificate, outcome, reason string, at time.Time) {
	if m == nil {
		return
	}
	certificate = m.certificate(certificate)
	m.bundles.WithLabelValues(certificate, outcome).Inc()
	if reason != "" {
		m.refusals.WithLabelValues(certificate, reason).Inc()
	}
	m.lastProcessed.Set(unix(at))
}

// Installed records the certificate now in service for a name.
func (m *Node) Installed(certificate string, notAfter time.Time) {
	if m == nil {
		return
	}
	m.notAfter.WithLabelValues(m.certificate(certificate)).Set(unix(notAfter))
}

// Install counts an install attempt; a success also sets its time.
func (m *Node) Install(certificate string, ok bool, at time.Time) {
	if m == nil {
		return
	}
	certificate = m.certificate(certificate)
	if !ok {
		m.installs.WithLabelValues(certificate, ResultFailed).Inc()
		return
	}
	m.installs.WithLabelValues(certificate, ResultSuccess).Inc()
	m.lastInstall.WithLabelValues(certificate).Set(unix(at))
}

// Scheduled records when the staged bundle of a certificate will be
// installed on its own; a zero at means none waits.
func (m *Node) Scheduled(certificate string, at time.Time) {
	if m == nil {
		return
	}
	if at.IsZero() {
		m.scheduled.DeleteLabelValues(certificate)
		return
	}
	m.scheduled.WithLabelValues(certificate).Set(unix(at))
}

// RolloutWaiting records whether the staged bundle of a certificate is
// held by its rollout, not released to this node.
func (m *Node) RolloutWaiting(certificate string, waiting bool) {
	if m == nil {
		return
	}
	v := 0.0
	if waiting {
		v = 1
	}
	m.held.WithLabelValues(m.certificate(certificate)).Set(v)
}

// Pending sets the consumer lag: messages not yet delivered to this node.
func (m *Node) Pending(n uint64) {
	if m == nil {
		return
	}
	m.pending.Set(float64(n))
}

// Handler serves the metrics in the Prometheus text format.
func (m *Node) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Listen opens the metrics address, so that a bad one fails at start.
func Listen(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for metrics on %q: %w", addr, err)
	}
	return l, nil
}

// Serve serves /metrics on l until ctx ends, then shuts down and returns
// nil; it returns an error if serving fails.
func (m *Node) Serve(ctx context.Context, l net.Listener, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	log.Info("metrics_listening", "addr", l.Addr().String())
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		<-done
		return nil
	}
	return fmt.Errorf("serving metrics: %w", err)
}

func unix(t time.Time) float64 {
	return float64(t.UnixNano()) / 1e9
}
