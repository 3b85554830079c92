package publisher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/subscriber"
)

// groupCount is the group count layout chooses for nodes when only the
// number of recipients binds (the server's max payload is far away): the
// smallest count from ceil(nodes / capacity) whose groups each hold at
// most capacity nodes.
func groupCount(nodes []string, capacity int) int {
	nodes = slices.Sorted(slices.Values(nodes))
	for count := max(1, (len(nodes)+capacity-1)/capacity); ; count++ {
		if !slices.ContainsFunc(assignGroups(nodes, count), func(g []string) bool { return len(g) > capacity }) {
			return count
		}
	}
}

func namedNodes(prefix string, n int) []string {
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("%s%d", prefix, i+1))
	}
	return names
}

// TestAssignGroups: a node's group depends on its name and the group
// count alone, so one node more or less changes only its own group's
// members, and a change of count moves about 1/count of the nodes.
func TestAssignGroups(t *testing.T) {
	t.Parallel()
	nodes := namedNodes("web", 1000)
	before := assignGroups(nodes, 4)
	for k, g := range before {
		if len(g) < 200 || len(g) > 300 {
			t.Errorf("group %d of 4 holds %d of 1000 nodes", k, len(g))
		}
		for _, n := range g {
			if groupOf(n, 4) != k {
				t.Fatalf("%s in group %d, groupOf says %d", n, k, groupOf(n, 4))
			}
		}
	}
	added := assignGroups(append(slices.Clone(nodes), "new1"), 4)
	changed := 0
	for k := range added {
		if !slices.Equal(added[k], before[k]) {
			changed++
		}
	}
	if changed != 1 {
		t.Errorf("adding one node changed %d groups, want 1", changed)
	}
	moved := 0
	for _, n := range nodes {
		if groupOf(n, 4) != groupOf(n, 5) {
			moved++
		}
	}
	if moved < 120 || moved > 280 {
		t.Errorf("from 4 to 5 groups %d of 1000 nodes moved, want about 200", moved)
	}
}

// TestRendezvous: the rendezvous layout grows through counts, hashing
// each node with each group number once, and gives every node the group
// groupOf gives it at the count reached, whatever the counts it went
// through; fewestGroups is the count groupCount finds.
func TestRendezvous(t *testing.T) {
	t.Parallel()
	nodes := namedNodes("web", 3000) // past minHashChunk: on several goroutines
	slices.Sort(nodes)
	r := newRendezvous(nodes)
	for _, count := range []int{1, 2, 7, 7, 12} {
		r.grow(count)
		for i, n := range nodes {
			if r.group[i] != groupOf(n, count) {
				t.Fatalf("at %d groups, %s in group %d, groupOf says %d", count, n, r.group[i], groupOf(n, count))
			}
		}
	}
	if got, want := newRendezvous(nodes).fewestGroups(groupCapacity), groupCount(nodes, groupCapacity); got != want || got <= (3000+groupCapacity-1)/groupCapacity-1 {
		t.Errorf("fewestGroups = %d, groupCount %d", got, want)
	}
	for k, g := range assignGroups(nodes, 12) {
		if !slices.IsSorted(g) {
			t.Errorf("group %d is not sorted", k)
		}
	}
}

// TestLayoutPastMaxRecipients seals one certificate to 1,500 recipients,
// without NATS: more than one age header holds, and more than
// groupCapacity, so it is laid out in the fewest groups of at most
// groupCapacity (6 or more) of one version, and the last recipient of each
// group opens its group's envelope (and is no recipient of the next).
func TestLayoutPastMaxRecipients(t *testing.T) {
	t.Parallel()
	nodes := namedNodes("n", 1500)
	f := newFixture(t, "nats://127.0.0.1:1", map[string][]string{"example.com": nodes})
	p := f.publisher()
	j, err := p.prepare(f.lineage("example.com", f.issue("example.com", time.Time{})))
	if err != nil {
		t.Fatal(err)
	}
	s := &session{p: p, log: p.log}
	lay, err := s.layout(j, seal{version: 1735689600000}, nil, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := groupCount(nodes, groupCapacity)
	if want < 6 || lay.count != want || len(lay.groups) != want {
		t.Fatalf("%d recipients laid out in %d groups (%d non-empty), want %d (at least 6)", len(nodes), lay.count, len(lay.groups), want)
	}
	for k, g := range lay.groups {
		if g.subject != wire.GroupSubject(k, "example.com") || len(g.nodes) > groupCapacity {
			t.Fatalf("group %d: subject %s, %d nodes, want at most %d", k, g.subject, len(g.nodes), groupCapacity)
		}
		last := g.nodes[len(g.nodes)-1]
		h, b, err := crypto.Open(g.env, []crypto.PublicKey{f.signer.Public()}, []age.Identity{f.ids[last]})
		if err != nil || h.Group != (crypto.Group{Index: k, Count: want}) || h.Version != 1735689600000 || b.Name != "example.com" {
			t.Fatalf("group %d opened by its last recipient %s: %+v, %v", k, last, h, err)
		}
		other := lay.groups[(k+1)%len(lay.groups)].nodes[0]
		if _, _, err := crypto.Open(g.env, []crypto.PublicKey{f.signer.Public()}, []age.Identity{f.ids[other]}); !errors.Is(err, crypto.ErrNotRecipient) {
			t.Errorf("group %d opened by %s of the other group: %v, want ErrNotRecipient", k, other, err)
		}
	}
}

// groupNode is a real node (subscriber.Node) of a fixture.
type groupNode struct {
	name string
	node *subscriber.Node
	// results are every message result of its syncs, installs its
	// installs.
	results  []subscriber.Result
	installs []subscriber.InstallResult
}

// realNode makes node name a subscriber.Node holding example.com.
func (f *fixture) realNode(name string) *groupNode {
	f.t.Helper()
	return f.realNodeWith(name, []age.Identity{f.ids[name]})
}

// realNodeWith is realNode with the given identities.
func (f *fixture) realNodeWith(name string, ids []age.Identity) *groupNode {
	f.t.Helper()
	root := f.t.TempDir()
	n, err := subscriber.New(subscriber.Config{
		Node:       name,
		NATS:       natsconn.Options{URL: f.url},
		Identities: ids,
		Trusted:    []crypto.PublicKey{f.signer.Public()},
		StageDir:   filepath.Join(root, "stage"),
		Certificates: map[string]subscriber.Certificate{
			"example.com": {Name: "example.com", InstallDir: filepath.Join(root, "live", "example.com")},
		},
		Version: "test",
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		f.t.Fatalf("node %s: %v", name, err)
	}
	return &groupNode{name: name, node: n}
}

// syncTo syncs n until it has received a bundle of version stored after
// stream sequence after and installed that version, and fails on any
// refusal or failure.
func (n *groupNode) syncTo(t *testing.T, version, after uint64) {
	t.Helper()
	natstest.WaitFor(t, 30*time.Second, fmt.Sprintf("%s installing version %d", n.name, version), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		rep, err := n.node.Sync(ctx)
		if err != nil {
			t.Fatalf("%s: Sync: %v", n.name, err)
		}
		n.results = append(n.results, rep.Results...)
		n.installs = append(n.installs, rep.Installs...)
		for _, r := range rep.Results {
			if r.Outcome == subscriber.OutcomeRefused || r.Outcome == subscriber.OutcomeFailed {
				t.Fatalf("%s: %s seq %d %s: %v", n.name, r.Subject, r.Sequence, r.Outcome, r.Err)
			}
		}
		for _, r := range rep.Installs {
			if r.Outcome == subscriber.InstallFailed {
				t.Fatalf("%s: install of version %d failed: %v", n.name, r.Version, r.Err)
			}
		}
		received := slices.ContainsFunc(n.results, func(r subscriber.Result) bool {
			return !r.Rollout && r.Sequence > after && r.Version == version
		})
		st, err := n.node.Stage().Read("example.com")
		return received && err == nil && st != nil && st.Version == version && n.installed(version) == 1
	})
}

// lastSeq is the stream's last sequence.
func (f *fixture) lastSeq() uint64 {
	f.t.Helper()
	st := f.stream()
	if st == nil {
		return 0
	}
	return st.CachedInfo().State.LastSeq
}

// installed counts the installs of version n made.
func (n *groupNode) installed(version uint64) int {
	c := 0
	for _, r := range n.installs {
		if r.Outcome == subscriber.InstallInstalled && r.Version == version {
			c++
		}
	}
	return c
}

// subjectsOfResults are the subjects n received bundles on, sorted, each
// once.
func (n *groupNode) subjectsOfResults() []string {
	var subjects []string
	for _, r := range n.results {
		if !r.Rollout {
			subjects = append(subjects, r.Subject)
		}
	}
	slices.Sort(subjects)
	return slices.Compact(subjects)
}

// bundleMsgs are the messages the stream holds on the bundle and group
// subjects, by subject.
func (f *fixture) bundleMsgs() map[string]uint64 {
	f.t.Helper()
	st := f.stream()
	if st == nil {
		return nil
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter("certsync.>"))
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string]uint64{}
	for subj, n := range info.State.Subjects {
		if _, _, err := wire.ParseBundleSubject(subj); err == nil {
			out[subj] = n
		}
	}
	return out
}

// TestPublishGroups: with a group capacity of 3, seven real nodes are
// sealed in groups of at most 3, one version, each group on its own
// subject with its group record; each node's consumer filters its own
// group's subject, is delivered that one message, and the node stages and
// installs it, and opens no other group's envelope.
func TestPublishGroups(t *testing.T) {
	t.Parallel()
	nodes := namedNodes("web", 7)
	f := newFixture(t, runServer(t), map[string][]string{"example.com": nodes})
	p := f.groupedPublisher()
	res, err := p.Publish(context.Background(), f.lineage("example.com", f.issue("example.com", time.Time{})))
	if err != nil {
		t.Fatal(err)
	}
	count := groupCount(nodes, testGroupCapacity)
	if res.Groups != count || count < 3 || res.Action != Published {
		t.Fatalf("result %+v, want published in %d groups", res, count)
	}
	msgs := f.bundleMsgs()
	if msgs[wire.Subject("example.com")] != 0 {
		t.Errorf("the bundle subject holds %d messages, want none", msgs[wire.Subject("example.com")])
	}
	groups := assignGroups(nodes, count)
	for k, g := range groups {
		subject := wire.GroupSubject(k, "example.com")
		if len(g) == 0 {
			if msgs[subject] != 0 {
				t.Errorf("empty group %d: %d messages", k, msgs[subject])
			}
			continue
		}
		if msgs[subject] != 1 || !slices.Contains(res.Stored, subject) {
			t.Fatalf("group %d: %d messages on %s (stored %v), want 1", k, msgs[subject], subject, res.Stored)
		}
		msg := f.lastOn(subject)
		if got, want := msg.Header.Get(wire.HeaderGroup), fmt.Sprintf("%d/%d", k, count); got != want {
			t.Errorf("group %d: %s %q, want %q", k, wire.HeaderGroup, got, want)
		}
		if got := msg.Header.Get(wire.HeaderRecipients); got != p.nodesDigest(g) {
			t.Errorf("group %d: recipients header %s, want its nodes' digest", k, got)
		}
		for _, n := range nodes {
			_, _, err := crypto.Open(msg.Data, []crypto.PublicKey{f.signer.Public()}, []age.Identity{f.ids[n]})
			if in := slices.Contains(g, n); in != (err == nil) {
				t.Errorf("group %d opened by %s: %v (in the group: %v)", k, n, err, in)
			}
		}
	}
	for _, name := range nodes {
		n := f.realNode(name)
		n.syncTo(t, res.Version, 0)
		subject := wire.GroupSubject(groupOf(name, count), "example.com")
		if got := n.subjectsOfResults(); !slices.Equal(got, []string{subject}) {
			t.Errorf("%s received bundles on %v, want only %s", name, got, subject)
		}
		if got := filterSubjects(*f.consumer(name)); !slices.Equal(got, []string{subject, wire.RolloutSubject("example.com")}) {
			t.Errorf("%s's consumer filters %v, want its group's subject", name, got)
		}
		c, err := f.js().Consumer(context.Background(), wire.Stream, wire.ConsumerName(name))
		if err != nil {
			t.Fatal(err)
		}
		if d := c.CachedInfo().Delivered.Consumer; d != 1 {
			t.Errorf("%s's consumer delivered %d messages, want 1", name, d)
		}
	}
	// Status and inspect read across the subjects.
	fleet, err := p.Fleet(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if b := fleet.Newest["example.com"]; b.Version != res.Version || b.Groups != count {
		t.Errorf("the fleet's newest bundle %+v, want version %d of %d groups", b, res.Version, count)
	}
	for _, row := range fleet.Rows(HealthOptions{}) {
		if row.State != wire.StateInstalled || row.Behind {
			t.Errorf("status row %+v, want installed, not behind", row)
		}
	}
	// plan reads the newest bundle across the groups, sealed to every
	// configured node.
	rows, err := p.Plan(context.Background(), PlanOptions{})
	if err != nil || len(rows) != len(nodes) {
		t.Fatalf("Plan = %d rows, %v", len(rows), err)
	}
	for _, r := range rows {
		if !r.CanTake || r.Version != res.Version || r.Action != PlanNothing {
			t.Errorf("plan row %+v, want nothing to do with version %d", r, res.Version)
		}
	}
	infos, err := p.Bundles(context.Background(), []string{"example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != len(res.Stored) {
		t.Fatalf("inspect lists %d bundles, want %d", len(infos), len(res.Stored))
	}
	for _, b := range infos {
		if b.Subject != wire.GroupSubject(b.Group, "example.com") || b.Groups != count || b.Version != res.Version {
			t.Errorf("inspect: %+v", b)
		}
	}
}

// TestGroupsAddRemoveNode: one node added to, then removed from, a
// certificate sealed in groups re-seals that node's group only; the other
// groups are unchanged (no new message on their subjects), and the
// version stays.
func TestGroupsAddRemoveNode(t *testing.T) {
	t.Parallel()
	nodes := namedNodes("web", 7)
	f := newFixture(t, runServer(t), map[string][]string{"example.com": nodes})
	p := f.publisher()
	p.groupCapacity = 4
	count := groupCount(nodes, 4)
	res, err := p.Publish(context.Background(), f.lineage("example.com", f.issue("example.com", time.Time{})))
	if err != nil || res.Groups != count {
		t.Fatalf("Publish = %+v, %v; want %d groups", res, err, count)
	}
	// A node whose arrival keeps the group count.
	var added string
	for i := range 100 {
		if cand := fmt.Sprintf("new%d", i); groupCount(append(slices.Clone(nodes), cand), 4) == count {
			added = cand
			break
		}
	}
	f.addNode(added)
	for _, step := range []struct {
		what  string
		nodes []string
	}{
		{"adding " + added, append(slices.Clone(nodes), added)},
		{"removing " + added, nodes},
	} {
		f.cfg.Certificates["example.com"] = step.nodes
		p := f.publisher()
		p.groupCapacity = 4
		before := f.bundleMsgs()
		report, err := p.Republish(context.Background(), nil)
		if err != nil || len(report.Results) != 1 {
			t.Fatalf("%s: Republish = %+v, %v", step.what, report, err)
		}
		got := report.Results[0]
		want := wire.GroupSubject(groupOf(added, count), "example.com")
		if got.Action != Published || got.Version != res.Version || got.Groups != count || !slices.Equal(got.Stored, []string{want}) {
			t.Errorf("%s: %+v, want %s alone stored again, version %d", step.what, got, want, res.Version)
		}
		after := f.bundleMsgs()
		for subj, n := range after {
			if grew := n - before[subj]; subj != want && grew != 0 || subj == want && grew != 1 {
				t.Errorf("%s: %s holds %d messages, %d before", step.what, subj, n, before[subj])
			}
		}
	}
}

// TestGroupsLayoutChange: real nodes stay on the newest version while
// the certificate goes from one envelope to two groups and back (nodes
// added, then removed, with renewals between), each node's consumer
// following its group: nothing is refused, and each version is installed
// once on each node.
func TestGroupsLayoutChange(t *testing.T) {
	t.Parallel()
	core := namedNodes("web", 3)
	f := newFixture(t, runServer(t), map[string][]string{"example.com": core})
	extra := namedNodes("more", 2)
	for _, n := range extra {
		f.addNode(n)
	}
	all := append(slices.Clone(core), extra...)
	if groupCount(core, 3) != 1 || groupCount(all, 3) < 2 {
		t.Fatalf("the layout of the test: %d and %d groups", groupCount(core, 3), groupCount(all, 3))
	}
	real := map[string]*groupNode{}
	for _, n := range all {
		real[n] = f.realNode(n)
	}
	ctx := context.Background()
	var versions []uint64
	step := func(what string, nodes []string, renew bool, wantGroups int) {
		t.Helper()
		f.cfg.Certificates["example.com"] = nodes
		p := f.groupedPublisher()
		if renew {
			f.lineage("example.com", f.issue("example.com", time.Time{}))
		}
		after := f.lastSeq()
		report, err := p.Republish(ctx, nil)
		if err != nil || len(report.Results) != 1 {
			t.Fatalf("%s: Republish = %+v, %v", what, report, err)
		}
		res := report.Results[0]
		if res.Groups != wantGroups || res.Action != Published {
			t.Fatalf("%s: %+v, want published in %d groups", what, res, wantGroups)
		}
		if renew {
			versions = append(versions, res.Version)
		} else if res.Version != versions[len(versions)-1] {
			t.Fatalf("%s: version %d, want the newest's %d kept", what, res.Version, versions[len(versions)-1])
		}
		for _, n := range nodes {
			real[n].syncTo(t, res.Version, after)
		}
	}
	step("one envelope", core, true, 1)
	step("two groups", all, false, groupCount(all, 3))
	step("a renewal in groups", all, true, groupCount(all, 3))
	step("one envelope again", core, false, 1)
	step("a renewal in one envelope", core, true, 1)
	for _, n := range all {
		for _, v := range versions {
			want := 1
			if !slices.Contains(core, n) && v == versions[2] {
				want = 0 // not a recipient then
			}
			if got := real[n].installed(v); got != want {
				t.Errorf("%s installed version %d %d times, want %d", n, v, got, want)
			}
		}
	}
}

// TestGroupsByPayload: a server with a small max_payload makes groups by
// size (the recipient capacity is age's), every message within it; a
// server whose max_payload no envelope for one node fits is refused
// before anything is stored, naming max_payload.
func TestGroupsByPayload(t *testing.T) {
	t.Parallel()
	nodes := namedNodes("web", 7)
	// The size of an envelope to one node, to set the servers' limits by.
	probe := newFixture(t, "nats://127.0.0.1:1", map[string][]string{"example.com": nodes})
	b := probe.lineage("example.com", probe.issue("example.com", time.Time{}))
	pp := probe.publisher()
	j, err := pp.prepare(b)
	if err != nil {
		t.Fatal(err)
	}
	d := seal{version: 1735689600000}
	one, err := (&session{p: pp}).sealGroup(j, d, pp.newGroup(j, 0, 2, nodes[:1]))
	if err != nil {
		t.Fatal(err)
	}
	_, room := envelopeLimit(j, d, 1<<20)

	t.Run("groups", func(t *testing.T) {
		t.Parallel()
		opts := natstest.Options(t.TempDir())
		opts.MaxPayload = int32(len(one) + room + 3*100) // about four X25519 recipients
		f := newFixture(t, natstest.URL(natstest.Start(t, opts)), map[string][]string{"example.com": nodes})
		f.ids, f.cfg.Nodes = probe.ids, probe.cfg.Nodes
		res, err := f.publisher().Publish(context.Background(), b)
		if err != nil {
			t.Fatal(err)
		}
		if res.Groups < 2 {
			t.Fatalf("%+v, want groups", res)
		}
		for _, subj := range res.Stored {
			msg := f.lastOn(subj)
			if size := len(msg.Data); size > int(opts.MaxPayload)-room {
				t.Errorf("%s: %d bytes, over %d", subj, size, int(opts.MaxPayload)-room)
			}
		}
	})
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		opts := natstest.Options(t.TempDir())
		opts.MaxPayload = int32(len(one) + room - 1)
		f := newFixture(t, natstest.URL(natstest.Start(t, opts)), map[string][]string{"example.com": nodes})
		f.ids, f.cfg.Nodes = probe.ids, probe.cfg.Nodes
		_, err := f.publisher().Publish(context.Background(), b)
		if err == nil || !strings.HasPrefix(err.Error(), "refusing to publish") || !strings.Contains(err.Error(), "max_payload") ||
			!strings.Contains(err.Error(), fmt.Sprint(opts.MaxPayload)) || strings.Contains(err.Error(), "\n") {
			t.Fatalf("Publish = %v, want one line refusing it, naming max_payload", err)
		}
		if msgs := f.bundleMsgs(); len(msgs) != 0 {
			t.Errorf("the stream holds %v after the refusal, want nothing", msgs)
		}
	})
}

// TestGroupsNeedSetup: a stream set up before recipient groups refuses a
// certificate that needs them, before anything is stored, with the setup
// hint; once Setup added the group subjects it publishes.
func TestGroupsNeedSetup(t *testing.T) {
	t.Parallel()
	nodes := namedNodes("web", 7)
	f := newFixture(t, runServer(t), map[string][]string{"example.com": nodes})
	old := wire.StreamConfig(wire.StreamOptions{})
	old.Subjects = []string{wire.Subjects, wire.RolloutSubjects}
	if _, err := f.js().CreateStream(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	b := f.lineage("example.com", f.issue("example.com", time.Time{}))
	p := f.groupedPublisher()
	ctx, cancel := p.bound(context.Background())
	defer cancel()
	s := asIs(t, ctx, p)
	if !s.rollouts || s.groups {
		t.Fatalf("the old stream: rollout subjects %v, group subjects %v; want only the first", s.rollouts, s.groups)
	}
	j, err := p.prepare(b)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = s.publish(ctx, j, false)
	if !errors.Is(err, ErrNotSetUp) || !strings.Contains(err.Error(), "certsync setup") || !strings.Contains(err.Error(), wire.GroupSubjects) {
		t.Fatalf("publish on a stream without the group subjects = %v, want ErrNotSetUp with the setup hint", err)
	}
	if msgs := f.bundleMsgs(); len(msgs) != 0 {
		t.Errorf("the stream holds %v after the refusal, want nothing", msgs)
	}
	if err := p.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if res, err := p.Publish(context.Background(), b); err != nil || res.Groups < 2 {
		t.Fatalf("after setup: %+v, %v", res, err)
	}
}

// TestLayoutCheck: the check that guards every layout before anything is
// sealed into the stream refuses, in one line naming the node or group,
// a node in two groups, a node in none or not of the certificate, a group
// over the capacity (or over age's limit whatever the capacity), an empty
// one, an envelope over the size limit, and groups out of order.
func TestLayoutCheck(t *testing.T) {
	t.Parallel()
	nodes := namedNodes("web", 6)
	g := func(k int, env []byte, nodes ...string) *group {
		return &group{rec: crypto.Group{Index: k, Count: 3}, subject: wire.GroupSubject(k, "example.com"), nodes: nodes, env: env}
	}
	many := namedNodes("n", crypto.MaxRecipients+1)
	for _, tc := range []struct {
		name     string
		nodes    []string
		lay      *layout
		capacity int
		want     string
	}{
		{"valid", nodes, &layout{count: 3, groups: []*group{g(0, nil, "web1", "web4"), g(1, []byte("x"), "web2", "web5"), g(2, nil, "web3", "web6")}}, 3, ""},
		{"one envelope", nodes, &layout{count: 1, groups: []*group{{subject: wire.Subject("example.com"), nodes: nodes}}}, 6, ""},
		{"a node in two groups", nodes, &layout{count: 3, groups: []*group{g(0, nil, "web1", "web2", "web4"), g(1, nil, "web2", "web5"), g(2, nil, "web3", "web6")}}, 3,
			"node web2 is in groups 0 and 1"},
		{"a node in no group", nodes, &layout{count: 3, groups: []*group{g(0, nil, "web1", "web4"), g(1, nil, "web2", "web5"), g(2, nil, "web3")}}, 3,
			"node web6 is in no group"},
		{"a node not of the certificate", nodes[:5], &layout{count: 3, groups: []*group{g(0, nil, "web1", "web4"), g(1, nil, "web2", "web5"), g(2, nil, "web3", "web6")}}, 3,
			"node web6 in group 2 is not a node of the certificate"},
		{"a group over the capacity", nodes, &layout{count: 3, groups: []*group{g(0, nil, "web1", "web2", "web3", "web4"), g(1, nil, "web5"), g(2, nil, "web6")}}, 3,
			"group 0 holds 4 nodes, want 1 to 3"},
		{"a group over age's limit", many, &layout{count: 1, groups: []*group{{subject: wire.Subject("example.com"), nodes: many}}}, 2 * crypto.MaxRecipients,
			fmt.Sprintf("group 0 holds %d nodes, want 1 to %d", crypto.MaxRecipients+1, crypto.MaxRecipients)},
		{"an empty group", nodes, &layout{count: 3, groups: []*group{g(0, nil, nodes...), g(1, nil)}}, 6,
			"group 1 holds 0 nodes, want 1 to 6"},
		{"an envelope over the limit", nodes, &layout{count: 3, groups: []*group{g(0, nil, "web1", "web4"), g(1, make([]byte, 101), "web2", "web5"), g(2, nil, "web3", "web6")}}, 3,
			"group 1's envelope is 101 bytes, over the limit of 100"},
		{"groups out of order", nodes, &layout{count: 3, groups: []*group{g(1, nil, "web1", "web4"), g(0, nil, "web2", "web5"), g(2, nil, "web3", "web6")}}, 3,
			"group 0 after group 1"},
		{"a group of another count", nodes, &layout{count: 2, groups: []*group{g(0, nil, "web1", "web2", "web4"), g(1, nil, "web3", "web5", "web6")}}, 3,
			"group 0/3 in a layout of 2 groups"},
	} {
		err := tc.lay.check(tc.nodes, tc.capacity, 100)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n")):
			t.Errorf("%s: check = %v, want one line saying %q", tc.name, err, tc.want)
		}
	}
}

// TestLayoutTooManyGroups: a certificate whose nodes need more than
// wire.MaxGroups groups of the capacity is refused by layout, in one line
// naming both limits and the cure (not max_payload, which is not what
// binds), before anything is sealed.
func TestLayoutTooManyGroups(t *testing.T) {
	t.Parallel()
	nodes := namedNodes("web", wire.MaxGroups+1)
	f := newFixture(t, "nats://127.0.0.1:1", map[string][]string{"example.com": nodes})
	p := f.publisher()
	p.groupCapacity = 1
	j, err := p.prepare(f.lineage("example.com", f.issue("example.com", time.Time{})))
	if err != nil {
		t.Fatal(err)
	}
	_, err = (&session{p: p, log: p.log}).layout(j, seal{version: 1735689600000}, nil, 1<<20)
	var r refusal
	want := fmt.Sprintf("%d nodes need more than %d recipient groups of at most 1 recipients each: seal part of them in another certificate", len(nodes), wire.MaxGroups)
	if !errors.As(err, &r) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "max_payload") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("layout of %d nodes in groups of 1 = %v, want a refusal saying %q", len(nodes), err, want)
	}
	if len(j.sealed) != 0 {
		t.Errorf("%d envelopes sealed before the refusal, want none", len(j.sealed))
	}
}

// TestPublishListsConsumersOnce: a publish of a certificate in recipient
// groups reads the stream's consumer listing once, although it brings the
// consumers in line before the layout is known and again after, and a
// republish of two such certificates reads it once for both. Counted on
// the server's consumer list API subject, which every listing page is a
// request to.
func TestPublishListsConsumersOnce(t *testing.T) {
	t.Parallel()
	nodes := namedNodes("web", 7)
	f := newFixture(t, runServer(t), map[string][]string{"example.com": nodes, "example.org": nodes})
	p := f.groupedPublisher()
	ctx := context.Background()
	for _, name := range []string{"example.com", "example.org"} {
		if _, err := p.Publish(ctx, f.lineage(name, f.issue(name, time.Time{}))); err != nil {
			t.Fatal(err)
		}
	}
	nc, err := nats.Connect(f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	lists := make(chan *nats.Msg, 1000)
	sub, err := nc.ChanSubscribe(jetstream.DefaultAPIPrefix+"CONSUMER.LIST."+wire.Stream, lists)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// listed is how many listing requests there were since the last
	// call: the server relays them before it answers the flush, and the
	// client queues them in the channel before it reads the answer.
	listed := func() int {
		t.Helper()
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		n := len(lists)
		for range n {
			<-lists
		}
		return n
	}

	res, err := p.Publish(ctx, f.lineage("example.com", f.issue("example.com", time.Time{})))
	if err != nil || res.Action != Published || res.Groups < 2 {
		t.Fatalf("renewal: %+v, %v; want published in groups", res, err)
	}
	if got := listed(); got != 1 {
		t.Errorf("a renewal in %d groups listed the consumers %d times, want 1", res.Groups, got)
	}
	if _, err := p.Republish(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := listed(); got != 1 {
		t.Errorf("a republish of two certificates in groups listed the consumers %d times, want 1", got)
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
}

// TestPublishGroupsAtomic: a certificate's groups are stored as one atomic
// batch. When one group's subject moved on after it was read (another
// publisher stored there), none of the groups is stored; the publish,
// reading again, stores them all, at consecutive sequences. On a stream
// set up without atomic batches they are stored one by one, every node
// served, until certsync setup turns the batches on.
func TestPublishGroupsAtomic(t *testing.T) {
	t.Parallel()
	nodes := namedNodes("web", 7)
	f := newFixture(t, runServer(t), map[string][]string{"example.com": nodes})
	p := f.groupedPublisher()
	ctx, cancel := p.bound(context.Background())
	defer cancel()
	if _, err := p.Publish(ctx, f.lineage("example.com", f.issue("example.com", time.Time{}))); err != nil {
		t.Fatal(err)
	}
	s, err := p.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if err := s.ensure(ctx, p.cfg.Stream, false); err != nil {
		t.Fatal(err)
	}
	if !s.atomic {
		t.Fatal("the stream certsync made does not take atomic batches")
	}
	renewal := f.lineage("example.com", f.issue("example.com", time.Time{}))
	j, err := p.prepare(renewal)
	if err != nil {
		t.Fatal(err)
	}
	heads, err := s.readHeads(ctx, "example.com")
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.decide(ctx, j, heads)
	if err != nil {
		t.Fatal(err)
	}
	lay, err := s.layout(j, d, heads, s.nc.Conn.MaxPayload())
	if err != nil || len(lay.groups) < 3 {
		t.Fatalf("layout: %v, %v; want 3 groups or more", lay, err)
	}
	// Another writer stores on the second group's subject after it was read.
	moved := lay.groups[1].subject
	if _, err := f.js().Publish(ctx, moved, []byte("not a bundle")); err != nil {
		t.Fatal(err)
	}
	before := f.bundleMsgs()
	for i, r := range s.storeGroups(ctx, j, d, lay.groups) {
		if !wrongLastSequence(r.err) {
			t.Errorf("group %d (%s): %v, want every group refused for the wrong last sequence of %s", i, r.g.subject, r.err, moved)
		}
	}
	if after := f.bundleMsgs(); !maps.Equal(before, after) {
		t.Fatalf("the stream holds %v after the refused batch, want %v as before", after, before)
	}

	res, err := p.Publish(ctx, renewal)
	if err != nil || res.Action != Published || len(res.Stored) != len(lay.groups) {
		t.Fatalf("publish again: %+v, %v; want every group stored", res, err)
	}
	var seqs []uint64
	for _, g := range lay.groups {
		seqs = append(seqs, f.lastOn(g.subject).Sequence)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Errorf("groups stored at sequences %v, want consecutive (one batch)", seqs)
			break
		}
	}
	if seqs[len(seqs)-1] != res.Sequence {
		t.Errorf("result sequence %d, want the batch's last, %d", res.Sequence, seqs[len(seqs)-1])
	}
	for _, name := range f.sampleOf(nodes) {
		f.realNode(name).syncTo(t, res.Version, 0)
	}
}

// TestPublishGroupsWithoutAtomicBatches: on a stream set up before atomic
// batches (and a credential that may not change it) a certificate's groups
// are stored one by one and every node receives its own; certsync setup
// turns the batches on.
func TestPublishGroupsWithoutAtomicBatches(t *testing.T) {
	t.Parallel()
	nodes := namedNodes("web", 7)
	f := newFixture(t, runServer(t), map[string][]string{"example.com": nodes})
	p, ctx, s := f.withoutAtomicBatches()
	j, err := p.prepare(f.lineage("example.com", f.issue("example.com", time.Time{})))
	if err != nil {
		t.Fatal(err)
	}
	res, plan, err := s.publish(ctx, j, false)
	if err != nil || res.Action != Published || res.Groups < 3 || len(res.Stored) != res.Groups {
		t.Fatalf("publish: %+v, %v; want every group stored", res, err)
	}
	if err := s.createConsumers(ctx, s.wantOf(j), plan.missing); err != nil {
		t.Fatal(err)
	}
	for _, name := range f.sampleOf(nodes) {
		f.realNode(name).syncTo(t, res.Version, 0)
	}
	if err := p.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st, err := f.js().Stream(context.Background(), wire.Stream); err != nil || !st.CachedInfo().Config.AllowAtomicPublish {
		t.Fatalf("after setup: %v; want the stream to take atomic batches", err)
	}
}

// testGroupCapacity is the group capacity of the tests' grouped
// publishers (groupedPublisher): 7 nodes make 3 groups or more.
const testGroupCapacity = 3

// groupedPublisher is f's publisher, its groups at most testGroupCapacity
// nodes each.
func (f *fixture) groupedPublisher() *Publisher {
	f.t.Helper()
	p := f.publisher()
	p.groupCapacity = testGroupCapacity
	return p
}

// withoutAtomicBatches creates the stream as certsync made it before atomic
// batches, and returns f's grouped publisher and a session of it on that
// stream as it is (asIs), within the publisher's timeout.
func (f *fixture) withoutAtomicBatches() (*Publisher, context.Context, *session) {
	t := f.t
	t.Helper()
	old := wire.StreamConfig(wire.StreamOptions{})
	old.AllowAtomicPublish = false
	if _, err := f.js().CreateStream(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	p := f.groupedPublisher()
	ctx, cancel := p.bound(context.Background())
	t.Cleanup(cancel)
	s := asIs(t, ctx, p)
	if s.atomic {
		t.Fatal("the old stream takes atomic batches")
	}
	return p, ctx, s
}

// asIs is a session of p on the stream as it is: publish on the tests' open
// server would upgrade an old stream itself (ensure), so this session takes
// it as ensure leaves it for a credential that may not update it.
func asIs(t testing.TB, ctx context.Context, p *Publisher) *session {
	t.Helper()
	s, err := p.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	st, err := s.js.Stream(ctx, wire.Stream)
	if err != nil {
		t.Fatal(err)
	}
	s.use(st)
	return s
}
