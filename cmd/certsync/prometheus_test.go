package main

// Metrics that monitoring accepts: what `node run` serves on metrics_listen
// passes Prometheus' own linter, and the alert rules that ship in
// deploy/prometheus load and fire on the series they are written for.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.yaml.in/yaml/v3"

	"github.com/certsync/certsync/internal/testing/acmetest"
	"github.com/certsync/certsync/internal/testing/loopback"
	"github.com/certsync/certsync/internal/testing/metricstest"
	"github.com/certsync/certsync/internal/testing/natstest"
)

// alertsDir holds the shipped alert rules and their unit tests.
const alertsDir = "../../deploy/prometheus"

// TestNodeRunMetricsPromtool: `node run` with two certificates, one
// published and installed, serves every counter of both from the start (at
// 0 for what has not happened), every metric the shipped alert rules read,
// and nothing `promtool check metrics` complains about.
func TestNodeRunMetricsPromtool(t *testing.T) {
	t.Parallel()
	promtool := acmetest.RequireTool(t, "promtool")
	srv := startServer(t)
	le := newLineages(t)
	lineage, _ := le.Write("example.com", certOptions{})
	f := newFleet(t, fleetOptions{
		URL:          srv.URL,
		Lineages:     le.Live(),
		Certificates: map[string][]string{"example.com": {"web1"}, "example.org": {"web1"}},
	})
	web1 := f.Nodes["web1"]
	addr := loopback.FreeAddr(t)
	editYAML(t, web1.Config, func(cfg map[string]any) { cfg["metrics_listen"] = addr })
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
	node := startCertsync(t, nil, "node", "run", "--config", web1.Config)
	node.WaitLog(t, stageTimeout, "metrics_listening")

	var text []byte
	var families map[string]*dto.MetricFamily
	installed := map[string]string{"certificate": "example.com", "result": "success"}
	// The install is counted, then the not-after of what is in service is
	// set: wait for both.
	natstest.WaitFor(t, stageTimeout, "web1 to count the install of example.com and serve its not-after", func() bool {
		var err error
		if text, err = getMetrics("http://" + addr + "/metrics"); err != nil {
			return false
		}
		if families, err = metricstest.Parse(bytes.NewReader(text)); err != nil {
			t.Fatalf("parse /metrics: %v", err)
		}
		v, _ := metricstest.Value(families["certsync_installs_total"], installed)
		_, served := metricstest.Value(families["certsync_certificate_not_after_seconds"], map[string]string{"certificate": "example.com"})
		return v == 1 && served
	})

	// example.org was never published: its counters are there, at 0.
	for _, c := range []struct{ name, label, value string }{
		{"certsync_installs_total", "result", "success"},
		{"certsync_installs_total", "result", "failed"},
		{"certsync_bundles_total", "outcome", "staged"},
		{"certsync_bundles_total", "outcome", "refused"},
		{"certsync_refusals_total", "reason", "bad_signature"},
		{"certsync_refusals_total", "reason", "other"},
	} {
		labels := map[string]string{"certificate": "example.org", c.label: c.value}
		if v, ok := metricstest.Value(families[c.name], labels); !ok || v != 0 {
			t.Errorf("%s%v = %v (present %v), want 0 before anything happened", c.name, labels, v, ok)
		}
	}
	for _, name := range alertMetrics(t) {
		if families[name] == nil {
			t.Errorf("the alert rules read %s, which node run does not serve", name)
		}
	}

	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("promtool check metrics: %v\n%s\nmetrics:\n%s", err, out, text)
	}
	if code := node.Stop(t); code != 0 {
		t.Errorf("node run exited with status %d after SIGTERM", code)
	}
}

// getMetrics returns what url serves.
func getMetrics(url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("getting %s: %s", url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 4<<20))
}

// TestAlertRules: the shipped rules pass `promtool check rules`, their
// unit tests pass `promtool test rules`, and each alert is shown firing by
// at least one of them.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	promtool := acmetest.RequireTool(t, "promtool")
	rules := filepath.Join(alertsDir, "certsync-alerts.yml")
	tests := filepath.Join(alertsDir, "certsync-alerts.test.yml")
	for _, args := range [][]string{{"check", "rules", rules}, {"test", "rules", tests}} {
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		out, err := exec.CommandContext(ctx, promtool, args...).CombinedOutput()
		cancel()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	var ruleFile struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, rules, &ruleFile)
	var testFile struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, tests, &testFile)
	fired := map[string]bool{}
	for _, tc := range testFile.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fired[a.Alertname] = true
			}
		}
	}
	var alerts []string
	for _, g := range ruleFile.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if !fired[r.Alert] {
				t.Errorf("no test in %s shows %s firing", tests, r.Alert)
			}
		}
	}
	if len(alerts) == 0 {
		t.Fatalf("%s holds no alert", rules)
	}
}

// alertMetrics returns the certsync metric names the shipped alert rules
// read.
func alertMetrics(t testing.TB) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(alertsDir, "certsync-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile(`\bcertsync_[a-z_]+`).FindAllString(string(data), -1) {
		if !slices.Contains(names, m) {
			names = append(names, m)
		}
	}
	if len(names) == 0 {
		t.Fatal("the alert rules read no certsync metric")
	}
	return names
}

func readYAML(t testing.TB, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
}
