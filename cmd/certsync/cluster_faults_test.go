package main

// The commands on a three-server cluster (stream replicas 3) whose stream
// has no leader when they start: each succeeds once the cluster has
// elected one, within its timeout, because each of its requests has its
// own short deadline and is sent again.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/treetest"
	"github.com/certsync/certsync/internal/wire"
)

// reloadCounter makes a reload command that appends the certificate's name
// and fingerprint to a file, one line per install, and gives the lines.
func reloadCounter(t testing.TB, dir string) (script string, lines func() []string) {
	t.Helper()
	script = filepath.Join(dir, "reload.sh")
	log := filepath.Join(dir, "reloads.log")
	body := "#!/bin/sh\necho \"$CERTSYNC_NAME $CERTSYNC_FINGERPRINT\" >> " + log + "\n"
	treetest.WriteFile(t, script, []byte(body), 0o755)
	return script, func() []string {
		data, _ := os.ReadFile(log)
		return strings.Split(strings.TrimSpace(string(data)), "\n")
	}
}

// runDone is what a certsync run started by goCertsync left, and when it
// ended.
type runDone struct {
	cliResult
	args  []string
	ended time.Time
	err   error // certsync could not run, or ran past cmdTimeout
}

// goCertsync runs certsync with args to completion in the background.
func goCertsync(args ...string) <-chan runDone {
	out := make(chan runDone, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		defer cancel()
		bin, err := exec.LookPath("certsync")
		if err != nil {
			out <- runDone{args: args, err: err}
			return
		}
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = procEnv(nil)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err = cmd.Run()
		d := runDone{cliResult: cliResult{Stdout: stdout.String(), Stderr: stderr.String()}, args: args, ended: time.Now()}
		var exit *exec.ExitError
		switch {
		case ctx.Err() != nil:
			d.err = ctx.Err()
		case errors.As(err, &exit):
			d.Code = exit.ExitCode()
		case err != nil:
			d.err = err
		}
		out <- d
	}()
	return out
}

// TestClusterCommandsWithoutLeader starts publish, republish, status,
// inspect, node sync and node run while the stream has no leader (two of
// its three servers were killed), then brings one server back: each
// command succeeds once the cluster has elected a leader, within its
// timeout; the stream holds each renewal once, and the nodes install each
// once.
func TestClusterCommandsWithoutLeader(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	le := newLineages(t)
	com, _ := le.Write("example.com", certOptions{})
	le.Write("example.org", certOptions{})
	f := newFleet(t, fleetOptions{
		URL:          c.URLs,
		Lineages:     le.Live(),
		Certificates: map[string][]string{"example.com": {"web1", "web2"}, "example.org": {"web1", "web2"}},
		Replicas:     3,
		// Every node is served while any two servers are up only when
		// its consumer is replicated too: with the default of one, a
		// node whose consumer's server stays down waits for it
		// (docs/OPERATIONS.md, "Many nodes").
		ConsumerReplicas: 3,
	})
	reloads := map[string]func() []string{}
	for name, n := range f.Nodes {
		script, lines := reloadCounter(t, filepath.Dir(n.Config))
		reloads[name] = lines
		editYAML(t, n.Config, func(doc map[string]any) {
			for _, cert := range doc["certificates"].(map[string]any) {
				cert.(map[string]any)["reload"] = script
			}
		})
	}
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", com)
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", filepath.Join(le.Live(), "example.org"))
	f.sync(t, "web1")
	f.sync(t, "web2")
	first := inspectBundles(t, f.Publisher)

	// Renewals: example.com for publish, example.org for republish.
	le.Write("example.com", certOptions{})
	le.Write("example.org", certOptions{})

	leader := c.WaitStreamLeader(wire.Stream, 30*time.Second)
	other := (leader + 1) % 3
	left := 3 - leader - other
	c.Kill(leader)
	c.Kill(other)
	start := time.Now()
	commands := []struct {
		name string
		args []string
		// ok says whether the run did its job; status may exit 1 for what
		// it reports (a node behind while the renewals go out).
		ok func(d runDone) bool
	}{
		{"publish", []string{"publish", "--config", f.Publisher, "--lineage", com}, nil},
		{"republish", []string{"republish", "--config", f.Publisher, "example.org"}, nil},
		{"status", []string{"status", "--json", "--config", f.Publisher}, func(d runDone) bool {
			var rows []map[string]any
			bad := d.errorLines()
			return json.Unmarshal([]byte(d.Stdout), &rows) == nil && len(rows) == 4 &&
				(d.Code == 0 || len(bad) == 1 && strings.Contains(bad[0], "unhealthy"))
		}},
		{"inspect", []string{"inspect", "--json", "--config", f.Publisher}, func(d runDone) bool {
			var rows []inspectRow
			return d.Code == 0 && json.Unmarshal([]byte(d.Stdout), &rows) == nil && len(rows) >= len(first)
		}},
		{"node sync", []string{"node", "sync", "--config", f.Nodes["web1"].Config, "--timeout", "50s"}, nil},
	}
	done := make([]<-chan runDone, len(commands))
	for i, cmd := range commands {
		done[i] = goCertsync(cmd.args...)
	}
	run := startCertsync(t, nil, "node", "run", "--config", f.Nodes["web2"].Config)
	// Every command is connected to the one server left, and asking a
	// stream that has no quorum.
	natstest.WaitFor(t, 30*time.Second, "the six commands to connect to the server left", func() bool {
		return c.Servers()[left].NumClients() >= len(commands)+1
	})
	// node run found the status bucket unanswered (opening it, or, when
	// the lookup was answered before the quorum went, writing to it): it
	// must ask again soon.
	natstest.WaitFor(t, 30*time.Second, "node run (web2) to find the status bucket unanswered", func() bool {
		log := run.Log()
		return len(logEvents(log, "status_unavailable")) > 0 || len(logEvents(log, "status_write_failed")) > 0
	})
	c.Restart(other)
	back := time.Now()
	for i, cmd := range commands {
		d := <-done[i]
		ok := d.err == nil && d.Code == 0
		if cmd.ok != nil {
			ok = d.err == nil && cmd.ok(d)
		}
		if !ok {
			t.Errorf("certsync %s started without a stream leader: exit %d, %v\nstderr:\n%s", cmd.name, d.Code, d.err, d.Stderr)
			continue
		}
		t.Logf("certsync %s: done %v after the start, %v after a server came back", cmd.name,
			d.ended.Sub(start).Round(time.Millisecond), d.ended.Sub(back).Round(time.Millisecond))
	}

	// The renewals went out once each, and every node installs them once.
	rows := inspectBundles(t, f.Publisher)
	var names []string
	for _, r := range rows {
		names = append(names, r.Name)
	}
	slices.Sort(names)
	if want := []string{"example.com", "example.com", "example.org", "example.org"}; !slices.Equal(names, want) {
		t.Fatalf("the stream holds bundles of %v, want %v", names, want)
	}
	natstest.WaitFor(t, 30*time.Second, "node run (web2) to install both renewals", func() bool {
		return len(reloads["web2"]()) == 4
	})
	// node run reports what it installed, although the status bucket did
	// not answer when it started.
	renewed := map[string]string{}
	for _, r := range rows {
		if r.Sequence > newest(t, first).Sequence {
			renewed[r.Name] = r.Fingerprint
		}
	}
	kv := statusBucket(t, c.URLs)
	natstest.WaitFor(t, 30*time.Second, "web2's status records to show both renewals installed", func() bool {
		for name, fp := range renewed {
			st, ok := readStatus(kv, "web2", name)
			if !ok || st.InstalledFingerprint != fp {
				return false
			}
		}
		return true
	})
	if code := run.Stop(t); code != 0 {
		t.Errorf("node run exited %d\n%s", code, run.Log())
	} else {
		t.Logf("certsync node run: installed both renewals %v after a server came back", time.Since(back).Round(time.Millisecond))
	}
	f.sync(t, "web1")
	var want []string
	for _, r := range rows {
		want = append(want, r.Name+" "+r.Fingerprint)
	}
	slices.Sort(want)
	for name, lines := range reloads {
		got := slices.Sorted(slices.Values(lines()))
		if !slices.Equal(got, want) {
			t.Errorf("node %s installed %v, want each of %v once", name, got, want)
		}
	}
}

// statusBucket opens the status bucket at url with a test client.
func statusBucket(t testing.TB, url string) jetstream.KeyValue {
	t.Helper()
	js := natstest.JetStream(t, url)
	var kv jetstream.KeyValue
	natstest.WaitFor(t, 30*time.Second, "the status bucket", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		kv, err = js.KeyValue(ctx, wire.StatusBucket)
		return err == nil
	})
	return kv
}

// readStatus reads node's status record of certificate name, if any.
func readStatus(kv jetstream.KeyValue, node, name string) (wire.Status, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := kv.Get(ctx, wire.StatusKey(node, name))
	if err != nil {
		return wire.Status{}, false
	}
	var st wire.Status
	return st, json.Unmarshal(e.Value(), &st) == nil
}
