package publisher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/testing/testkeys"
	"github.com/certsync/certsync/internal/wire"
)

// mixedNodes configures n nodes named prefix00001… (sorted as numbered)
// in f, X25519 and ssh-ed25519 in turn (see kindNodes).
func mixedNodes(f *fixture, prefix string, n int) ([]string, map[string]func() []age.Identity) {
	return kindNodes(f, prefix, n, "x25519", "ssh-ed25519")
}

// kindNodes configures n nodes named prefix00001… (sorted as numbered)
// in f, of the given kinds ("x25519", "ssh-ed25519") in turn, and returns
// their names and, by name, a function returning each node's identities
// as a node reads them from its key file (crypto.ParseIdentities:
// identities crypto can name, so Open uses the stanza index). The key
// files are made only when asked for, so a large fleet costs one key pair
// per node.
func kindNodes(f *fixture, prefix string, n int, kinds ...string) ([]string, map[string]func() []age.Identity) {
	f.t.Helper()
	names := make([]string, 0, n)
	ids := make(map[string]func() []age.Identity, n)
	for i := range n {
		name := fmt.Sprintf("%s%05d", prefix, i+1)
		names = append(names, name)
		if kinds[i%len(kinds)] == "x25519" {
			id := testkeys.X25519(f.t)
			f.cfg.Nodes[name] = id.Recipient().String()
			ids[name] = func() []age.Identity { return f.identities(name, []byte(id.String()+"\n")) }
			continue
		}
		k := testkeys.Ed25519(f.t)
		f.cfg.Nodes[name] = k.Line
		ids[name] = func() []age.Identity { return f.identities(name, k.PEM) }
	}
	return names, ids
}

// identities parses node's key file as a node does.
func (f *fixture) identities(node string, file []byte) []age.Identity {
	f.t.Helper()
	ids, err := crypto.ParseIdentities(file)
	if err != nil {
		f.t.Fatalf("the key file of %s: %v", node, err)
	}
	return ids
}

// sampleOf picks from a group's nodes (sorted) its first and last, its
// first X25519 and first ssh-ed25519 node (by the recipients configured
// for them), and one in the middle: every position and kind a group has.
func (f *fixture) sampleOf(nodes []string) []string {
	sample := []string{nodes[0], nodes[len(nodes)-1], nodes[len(nodes)/2]}
	for _, kind := range []string{"age1", "ssh-ed25519 "} {
		if i := slices.IndexFunc(nodes, func(n string) bool { return strings.HasPrefix(f.cfg.Nodes[n], kind) }); i >= 0 {
			sample = append(sample, nodes[i])
		}
	}
	slices.Sort(sample)
	return slices.Compact(sample)
}

// TestLayoutTenThousand seals one certificate to 10,000 recipients,
// X25519 and ssh-ed25519 in turn, through the publisher's own group
// layout at the default max payload of 1 MiB (no NATS: layout is given
// the payload a server announces): one version in groups of at most
// groupCapacity, each node in exactly one group, every envelope
// within the limit. A sample of each group's nodes (its first and last,
// both kinds) opens its group's envelope with crypto.Open; a node of
// another group, and strangers of both kinds, get ErrNotRecipient from the
// stanza index, before any stanza is tried.
//
// It seals 10,000 stanzas, which takes 15 to 20 s of CPU under -race:
// -short skips it (CI runs without -short).
func TestLayoutTenThousand(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("seals to 10,000 recipients; run without -short")
	}
	const n, payload = 10_000, 1 << 20
	f := newFixture(t, "nats://127.0.0.1:1", nil)
	nodes, ids := mixedNodes(f, "node", n)
	_, strangers := mixedNodes(newFixture(t, "nats://127.0.0.1:1", nil), "stranger", 2)
	f.cfg.Certificates["example.com"] = nodes
	p := f.publisher()
	b := f.lineage("example.com", f.issue("example.com", time.Time{}))
	j, err := p.prepare(b)
	if err != nil {
		t.Fatal(err)
	}
	const version = 1735689600000
	d := seal{version: version}
	lay, err := (&session{p: p, log: p.log}).layout(j, d, nil, payload)
	if err != nil {
		t.Fatal(err)
	}
	limit, _ := envelopeLimit(j, d, payload)
	// Each group is sealed once: a count whose groups do not all hold
	// their recipients is passed over before anything is sealed.
	if len(j.sealed) != len(lay.groups) {
		t.Errorf("layout sealed %d envelopes for %d groups, want one each", len(j.sealed), len(lay.groups))
	}
	if want := groupCount(nodes, groupCapacity); lay.count != want || len(lay.groups) != lay.count {
		t.Fatalf("%d recipients laid out in %d groups (%d non-empty), want %d, none empty", n, lay.count, len(lay.groups), want)
	}
	seen := map[string]int{}
	for k, g := range lay.groups {
		if g.subject != wire.GroupSubject(k, "example.com") || g.rec != (crypto.Group{Index: k, Count: lay.count}) {
			t.Fatalf("group %d: subject %s, record %v", k, g.subject, g.rec)
		}
		if len(g.nodes) > groupCapacity || len(g.env) > limit {
			t.Errorf("group %d: %d nodes, %d bytes; want at most %d and %d", k, len(g.nodes), len(g.env), groupCapacity, limit)
		}
		for _, node := range g.nodes {
			if prev, ok := seen[node]; ok {
				t.Fatalf("%s in groups %d and %d", node, prev, k)
			}
			seen[node] = k
		}
	}
	if len(seen) != n {
		t.Fatalf("the groups hold %d of the %d nodes", len(seen), n)
	}
	trusted := []crypto.PublicKey{f.signer.Public()}
	notIndexed := func(what string, env []byte, id []age.Identity) {
		t.Helper()
		_, _, err := crypto.Open(env, trusted, id)
		if !errors.Is(err, crypto.ErrNotRecipient) || !strings.Contains(err.Error(), "not in the stanza index") {
			t.Errorf("%s: Open = %v, want ErrNotRecipient from the stanza index", what, err)
		}
	}
	for k, g := range lay.groups {
		for _, node := range f.sampleOf(g.nodes) {
			h, got, err := crypto.Open(g.env, trusted, ids[node]())
			if err != nil {
				t.Fatalf("group %d opened by %s (%.11s…): %v", k, node, f.cfg.Nodes[node], err)
			}
			if h.Version != version || h.Group != g.rec || got.Name != "example.com" || !bytes.Equal(got.PrivKey, b.PrivKey) {
				t.Errorf("group %d opened by %s: version %d, group %v, bundle %q", k, node, h.Version, h.Group, got.Name)
			}
		}
		other := lay.groups[(k+1)%len(lay.groups)].nodes[0]
		notIndexed(fmt.Sprintf("group %d opened by %s of group %d", k, other, seen[other]), g.env, ids[other]())
		for name, id := range strangers {
			notIndexed(fmt.Sprintf("group %d opened by %s", k, name), g.env, id())
		}
	}
}

// TestPublishPastMaxConsumers publishes a certificate for 1,100 nodes,
// X25519 and ssh-ed25519 in turn, through a real server with its
// defaults: past groupCapacity and age's 1,024 recipients, so in groups,
// and past the 1,000 consumers nats-server allows a stream that sets no
// MaxConsumers of its own. Every node gets its consumer on its group's subject, and a sample
// of real nodes (subscriber.Node.Sync, what certsync node sync runs) from
// every group, its first and last included, stages and installs it from
// its group's subject alone.
func TestPublishPastMaxConsumers(t *testing.T) {
	t.Parallel()
	const n = 1100
	f := newFixture(t, runServer(t), nil)
	f.cfg.Timeout = 2 * time.Minute
	nodes, ids := mixedNodes(f, "node", n)
	f.cfg.Certificates["example.com"] = nodes
	ctx := context.Background()
	res, err := f.publisher().Publish(ctx, f.lineage("example.com", f.issue("example.com", time.Time{})))
	if err != nil {
		t.Fatal(err)
	}
	count := groupCount(nodes, groupCapacity)
	if res.Action != Published || res.Groups != count || count < 2 || len(res.Stored) != count {
		t.Fatalf("result %+v, want published in %d groups", res, count)
	}
	st, err := f.js().Stream(ctx, wire.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().State.Consumers; got != n {
		t.Fatalf("the stream has %d consumers, want one per node: %d", got, n)
	}
	for k, group := range assignGroups(nodes, count) {
		subject := wire.GroupSubject(k, "example.com")
		for _, name := range f.sampleOf(group) {
			node := f.realNodeWith(name, ids[name]())
			node.syncTo(t, res.Version, 0)
			if got := node.subjectsOfResults(); !slices.Equal(got, []string{subject}) {
				t.Errorf("%s of group %d received bundles on %v, want only %s", name, k, got, subject)
			}
		}
	}
}
