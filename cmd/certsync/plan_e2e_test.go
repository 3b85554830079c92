package main

// `certsync plan` says what each node will do with the newest bundle, and
// then the nodes do just that: an immediate node installs, a windowed one
// waits for its window (and reports that time), a manual one only stages,
// a node whose install of the version failed holds it, a node held for its
// rollout wave waits until the controller releases it, and a node that
// never reported cannot take it.

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/publisher"
)

func TestPlanE2E(t *testing.T) {
	t.Parallel()
	const (
		plain = "example.com"  // no rollout policy
		held  = "held.example" // canary c1, then everyone
	)
	srv := startServer(t)
	lin := newLineages(t)
	f := newFleet(t, fleetOptions{URL: srv.URL, Lineages: lin.Live(), Certificates: map[string][]string{
		plain: {"imm", "win", "man", "bad"},
		held:  {"c1", "c2"},
	}})
	f.PublisherConfig.Certificates = nil
	writeYAML(t, f.Publisher, map[string]any{
		"nats": f.PublisherConfig.NATS, "signing_key": f.PublisherConfig.SigningKey, "lineages": lin.Live(),
		"nodes": f.PublisherConfig.Nodes,
		"certificates": map[string]any{
			plain: []string{"imm", "win", "man", "bad"},
			held:  map[string]any{"nodes": []string{"c1", "c2"}, "rollout": map[string]any{"canary": []string{"c1"}, "soak": "0s"}},
		},
	})
	settings := map[string]map[string]string{
		"imm": {}, "win": {"schedule": "0 3 * * *"}, "man": {"schedule": "manual"}, "bad": {"check": "false"},
		"c1": {}, "c2": {},
	}
	for name, s := range settings {
		n := f.Nodes[name]
		cert := plain
		if strings.HasPrefix(name, "c") {
			cert = held
		}
		writeNodeConfig(t, n.Config, nodeConfig{
			Name: name, NATS: natsConfig{URL: srv.URL}, Identity: filepath.Join(filepath.Dir(n.Config), "node.key"),
			TrustedPublishers: []string{f.Signing}, StageDir: n.StageDir, Certificates: map[string]map[string]string{cert: s},
		})
	}
	sync := func(names ...string) {
		t.Helper()
		for _, n := range names {
			certsyncCmd(t, "node", "sync", "--config", f.Nodes[n].Config, "--timeout", "30s")
		}
	}
	all := []string{"imm", "win", "man", "bad", "c1", "c2"}

	// A first version everywhere, so that every node has something in
	// service and has reported its schedule (bad's check fails: nothing).
	live, _ := lin.Write(plain, certOptions{})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", live)
	heldLive, _ := lin.Write(held, certOptions{})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", heldLive)
	sync(all...)
	mustCertsync(t, "node", "install", "--config", f.Nodes["man"].Config)

	// The renewal, before any node has seen it.
	live, v2 := lin.Write(plain, certOptions{})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", live)
	rows := plan(t, f.Publisher, 0)
	want := map[string]string{
		"imm/" + plain: publisher.PlanInstallNow, "win/" + plain: publisher.PlanInstallAt,
		"man/" + plain: publisher.PlanStageOnly, "bad/" + plain: publisher.PlanInstallNow,
		"c1/" + held: publisher.PlanWaitWave, "c2/" + held: publisher.PlanWaitWave,
	}
	checkPlan(t, rows, want)
	if w := rows["c1/"+held].Wave; w == nil || *w != 0 {
		t.Errorf("c1's wave = %v, want 0 (the canary)", w)
	}
	if w := rows["c2/"+held].Wave; w == nil || *w != 1 {
		t.Errorf("c2's wave = %v, want 1", w)
	}
	winAt := rows["win/"+plain].At
	if winAt.IsZero() || winAt.Before(time.Now()) || winAt.After(time.Now().Add(25*time.Hour)) || winAt.In(time.Local).Hour() != 3 {
		t.Errorf("win installs at %v, want its next 03:00", winAt)
	}

	// What then happens: imm installs, win stages and reports that same
	// time, man stages, bad fails, the held ones wait.
	sync(all...)
	st := statusRows(t, f.Publisher, plain)
	if st["imm"].InstalledFingerprint != fingerprintOf(v2.Leaf) {
		t.Errorf("imm did not install v2: %+v", st["imm"])
	}
	for _, n := range []string{"win", "man", "bad"} {
		if st[n].InstalledFingerprint == fingerprintOf(v2.Leaf) || st[n].StagedFingerprint != fingerprintOf(v2.Leaf) {
			t.Errorf("%s: want v2 staged, not installed: %+v", n, st[n])
		}
	}
	if rec := statusRecord(t, f.Publisher, "win", plain); rec["install_at"] == nil || !sameTime(rec["install_at"], winAt) {
		t.Errorf("win reports install_at %v, plan said %v", rec["install_at"], winAt)
	}
	if !strings.Contains(st["bad"].Error, "check") {
		t.Errorf("bad: want its check's failure, got %+v", st["bad"])
	}

	// Now bad holds v2 (the plan says so, and a sync does not try again);
	// the canary of the held certificate is released by one controller
	// pass, c2 still waits.
	mustCertsync(t, "rollout", "run", "--once", "--config", f.Publisher)
	rows = plan(t, f.Publisher, 0)
	checkPlan(t, rows, map[string]string{
		"imm/" + plain: publisher.PlanNothing, "win/" + plain: publisher.PlanInstallAt,
		"man/" + plain: publisher.PlanStageOnly, "bad/" + plain: publisher.PlanHold,
		"c1/" + held: publisher.PlanInstallNow, "c2/" + held: publisher.PlanWaitWave,
	})
	sync(all...)
	heldRows := statusRows(t, f.Publisher, held)
	if heldRows["c1"].InstalledFingerprint == "" || heldRows["c1"].InstalledFingerprint != heldRows["c1"].StagedFingerprint {
		t.Errorf("c1 (released) did not install: %+v", heldRows["c1"])
	}
	if heldRows["c2"].Rollout != "waiting" {
		t.Errorf("c2 (wave 1) does not wait: %+v", heldRows["c2"])
	}
	if st := statusRows(t, f.Publisher, plain)["bad"]; st.InstalledFingerprint == fingerprintOf(v2.Leaf) {
		t.Errorf("bad installed a held failed version")
	}

	// A node added to the configuration that never reported cannot take
	// it: plan exits 1 and says so.
	f.PublisherConfig.Nodes["gone"] = keygenNode(t, filepath.Join(f.Dir, "gone.key"))
	writeYAML(t, f.Publisher, map[string]any{
		"nats": f.PublisherConfig.NATS, "signing_key": f.PublisherConfig.SigningKey, "lineages": lin.Live(),
		"nodes": f.PublisherConfig.Nodes,
		"certificates": map[string]any{
			plain: []string{"imm", "win", "man", "bad", "gone"},
			held:  map[string]any{"nodes": []string{"c1", "c2"}, "rollout": map[string]any{"canary": []string{"c1"}, "soak": "0s"}},
		},
	})
	rows = plan(t, f.Publisher, 1)
	if r := rows["gone/"+plain]; r.Action != publisher.PlanMissing || r.CanTake {
		t.Errorf("gone: %+v, want missing, cannot take", r)
	}
}

// plan runs `certsync plan --json`, checks its exit status, and returns
// its rows by "node/certificate".
func plan(t *testing.T, config string, wantCode int) map[string]publisher.PlanRow {
	t.Helper()
	res := certsyncCmd(t, "plan", "--json", "--config", config)
	if res.Code != wantCode {
		t.Fatalf("plan: exit %d, want %d\n%s%s", res.Code, wantCode, res.Stdout, res.Stderr)
	}
	var rows []publisher.PlanRow
	if err := json.Unmarshal([]byte(res.Stdout), &rows); err != nil {
		t.Fatalf("plan --json: %v\n%s", err, res.Stdout)
	}
	out := map[string]publisher.PlanRow{}
	for _, r := range rows {
		out[r.Node+"/"+r.Certificate] = r
	}
	return out
}

// checkPlan checks each row's action.
func checkPlan(t *testing.T, rows map[string]publisher.PlanRow, want map[string]string) {
	t.Helper()
	for key, action := range want {
		if got := rows[key]; got.Action != action {
			t.Errorf("plan for %s: %s (%s), want %s", key, got.Action, got.Why, action)
		}
	}
}

// statusRecord is the JSON row of `certsync status --json` of node and
// name, as a map.
func statusRecord(t *testing.T, config, node, name string) map[string]any {
	t.Helper()
	return statusRow(t, config, node, name)
}

// sameTime tells whether the RFC 3339 text v is at the second of want.
func sameTime(v any, want time.Time) bool {
	s, _ := v.(string)
	got, err := time.Parse(time.RFC3339, s)
	return err == nil && got.Equal(want.Truncate(time.Second))
}
