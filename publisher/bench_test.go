package publisher

import (
	"context"
	"fmt"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/testing/natstest"
)

// groupBenchSizes are the fleet sizes of the group benchmarks: one node
// (one envelope, for comparison), then past groupCapacity (256), so sealed
// in groups; from 2,048 on, past age's 1,024 recipients per header too.
var groupBenchSizes = []int{1, 1000, 2048, 5000, 10_000}

// benchJob prepares a certificate for n nodes of one kind, as publish
// does, and returns the session that lays it out, the job and the
// identities of its nodes.
func benchJob(b *testing.B, kind string, n int) (*session, *job, map[string]func() []age.Identity) {
	b.Helper()
	f := newFixture(b, "nats://127.0.0.1:1", nil)
	nodes, ids := kindNodes(f, "node", n, kind)
	f.cfg.Certificates["example.com"] = nodes
	p := f.publisher()
	j, err := p.prepare(f.lineage("example.com", f.issue("example.com", time.Time{})))
	if err != nil {
		b.Fatal(err)
	}
	return &session{p: p, log: p.log}, j, ids
}

// benchPayload is the max payload the benchmarks lay out for: the NATS
// server's default, 1 MiB.
const benchPayload = 1 << 20

// BenchmarkSealGroups seals one version of a certificate into its
// recipient groups as publish does (session.layout: the group count, one
// crypto.Seal per group, each wrapping on up to GOMAXPROCS goroutines).
// Run it with -cpu 1,2. It reports the groups and node_bytes, the largest
// group's envelope: the most a node downloads per renewal.
func BenchmarkSealGroups(b *testing.B) {
	for _, kind := range []string{"x25519", "ssh-ed25519"} {
		for _, n := range groupBenchSizes {
			b.Run(fmt.Sprintf("%s/recipients=%d", kind, n), func(b *testing.B) {
				s, j, _ := benchJob(b, kind, n)
				d := seal{version: 1735689600000}
				var lay *layout
				b.ResetTimer()
				for range b.N { // not b.Loop: see crypto's BenchmarkSeal
					j.sealed = nil
					var err error
					if lay, err = s.layout(j, d, nil, benchPayload); err != nil {
						b.Fatal(err)
					}
				}
				largest := 0
				for _, g := range lay.groups {
					largest = max(largest, len(g.env))
				}
				b.ReportMetric(float64(lay.count), "groups")
				b.ReportMetric(float64(largest), "node_bytes")
			})
		}
	}
}

// BenchmarkOpenGroups opens, as the last recipient of the last group, a
// certificate sealed into groups as publish does, with crypto.Open and the
// node's identity as read from its key file: the recipients=10000 rows
// should take at most 2x the recipients=1 rows of the same kind. It
// reports envelope_bytes, the size of that group's envelope: what the node
// downloads per renewal.
func BenchmarkOpenGroups(b *testing.B) {
	for _, kind := range []string{"x25519", "ssh-ed25519"} {
		for _, n := range groupBenchSizes {
			b.Run(fmt.Sprintf("%s/recipients=%d", kind, n), func(b *testing.B) {
				s, j, ids := benchJob(b, kind, n)
				lay, err := s.layout(j, seal{version: 1735689600000}, nil, benchPayload)
				if err != nil {
					b.Fatal(err)
				}
				g := lay.groups[len(lay.groups)-1]
				id := ids[g.nodes[len(g.nodes)-1]]()
				trusted := []crypto.PublicKey{s.p.cfg.SigningKey.Public()}
				b.ResetTimer()
				for range b.N { // not b.Loop: see crypto's BenchmarkSeal
					if _, _, err := crypto.Open(g.env, trusted, id); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(g.env)), "envelope_bytes")
			})
		}
	}
}

// BenchmarkPublishGroups publishes renewals of a certificate for 1,100
// nodes (X25519 and ssh-ed25519 in turn) through a real server, its
// stream and consumers made by a first publish before timing starts, in
// groups of at most 256 (groupCapacity) and of at most 1,024 (age's
// limit, as before groupCapacity): what more groups cost a publish (more
// subjects read, more messages stored). Each op seals and stores every
// group. Run it with -benchtime 3x: the first publish and the server's
// shutdown with 1,100 consumers take tens of seconds.
func BenchmarkPublishGroups(b *testing.B) {
	for _, capacity := range []int{groupCapacity, crypto.MaxRecipients} {
		b.Run(fmt.Sprintf("capacity=%d", capacity), func(b *testing.B) {
			f := newFixture(b, natstest.URL(natstest.RunServer(b)), nil)
			f.cfg.Timeout = 2 * time.Minute
			nodes, _ := mixedNodes(f, "node", 1100)
			f.cfg.Certificates["example.com"] = nodes
			p := f.publisher()
			p.groupCapacity = capacity
			ctx := context.Background()
			if _, err := p.Publish(ctx, f.lineage("example.com", f.issue("example.com", time.Time{}))); err != nil {
				b.Fatal(err)
			}
			lineages := make([]*crypto.Bundle, b.N)
			for i := range lineages {
				lineages[i] = f.lineage("example.com", f.issue("example.com", time.Time{}))
			}
			var res *Result
			b.ResetTimer()
			for i := range b.N { // not b.Loop: see crypto's BenchmarkSeal
				var err error
				if res, err = p.Publish(ctx, lineages[i]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(res.Groups), "groups")
		})
	}
}
