package crypto

import (
	"fmt"
	"testing"
	"time"

	"filippo.io/age"
)

// benchRecipients returns n recipients of one kind, the identity of the
// last one (opening as the last recipient is the worst case for X25519
// without the stanza index, which tries every stanza in turn), and the seal
// option the publisher gives Seal for them (the signed seal record), so
// that sizes are those of a published envelope.
func benchRecipients(b *testing.B, kind string, n int) ([]age.Recipient, []age.Identity, SealOption) {
	b.Helper()
	rs := make([]age.Recipient, 0, n)
	texts := make([]string, 0, n)
	var last []age.Identity
	for i := range n {
		var rec string
		var idFile []byte
		switch kind {
		case "x25519":
			rec, idFile = x25519Pair(b)
		case "ssh-ed25519":
			rec, idFile = sshEd25519Pair(b)
		}
		rs = append(rs, mustRecipients(b, rec)...)
		texts = append(texts, rec)
		if i == n-1 {
			last = mustIdentities(b, idFile)
		}
	}
	return rs, last, WithRecipientsDigest(RecipientsDigest(texts))
}

var benchSizes = []int{1, 100, 1000}

// BenchmarkSeal seals as the publisher does (seal record, stanza index).
// Run it with -cpu 1,2: the file key is wrapped on up to GOMAXPROCS
// goroutines, so the -2 rows of 1,000 recipients should take at most 0.6x
// the -1 rows.
func BenchmarkSeal(b *testing.B) {
	bundle := newTestBundle(b, "example.com", time.Now().Add(-time.Hour).Truncate(time.Second))
	key := mustSigningKey(b)
	for _, kind := range []string{"x25519", "ssh-ed25519"} {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/recipients=%d", kind, n), func(b *testing.B) {
				rs, _, record := benchRecipients(b, kind, n)
				var size int
				// A b.N loop, not b.Loop: with b.Loop, Go 1.26's
				// testing package measures a benchmark's first -cpu
				// value at the GOMAXPROCS the run before it left, so
				// with -cpu 1,2 both rows ran on 2 cores.
				b.ResetTimer()
				for range b.N {
					env, err := Seal(bundle, key, rs, record)
					if err != nil {
						b.Fatal(err)
					}
					size = len(env)
				}
				b.ReportMetric(float64(size), "envelope_bytes")
			})
		}
	}
}

// BenchmarkOpen opens as the last recipient an envelope sealed as the
// publisher does, with the stanza index. What grows with the recipients
// (the signature's hash over the whole envelope, the header's scan and
// MAC) puts one envelope of 1,000 at about 3x one of 1; the publisher
// seals at most 256 per envelope, and the publisher's BenchmarkOpenGroups
// holds the target of at most 2x.
func BenchmarkOpen(b *testing.B) {
	benchOpen(b, benchSizes)
}

// BenchmarkOpenWithoutIndex opens as the last recipient an envelope sealed
// without the stanza index, as format 2 publishers did before it and format
// 1 ones always: X25519 identities try every stanza in turn. For
// comparison with BenchmarkOpen.
func BenchmarkOpenWithoutIndex(b *testing.B) {
	benchOpen(b, []int{1, 1000}, withoutIndex())
}

func benchOpen(b *testing.B, sizes []int, opts ...SealOption) {
	bundle := newTestBundle(b, "example.com", time.Now().Add(-time.Hour).Truncate(time.Second))
	key := mustSigningKey(b)
	trusted := []PublicKey{key.Public()}
	for _, kind := range []string{"x25519", "ssh-ed25519"} {
		for _, n := range sizes {
			b.Run(fmt.Sprintf("%s/recipients=%d", kind, n), func(b *testing.B) {
				rs, ids, record := benchRecipients(b, kind, n)
				env, err := Seal(bundle, key, rs, append([]SealOption{record}, opts...)...)
				if err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for range b.N { // not b.Loop: see BenchmarkSeal
					if _, _, err := Open(env, trusted, ids); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(env)), "envelope_bytes")
			})
		}
	}
}

// BenchmarkVerify measures the signature check alone, which a node runs on
// every superseded version it skips.
func BenchmarkVerify(b *testing.B) {
	bundle := newTestBundle(b, "example.com", time.Now().Add(-time.Hour).Truncate(time.Second))
	key := mustSigningKey(b)
	rs, _, record := benchRecipients(b, "x25519", 1000)
	env, err := Seal(bundle, key, rs, record)
	if err != nil {
		b.Fatal(err)
	}
	trusted := []PublicKey{key.Public()}
	b.ResetTimer()
	for range b.N { // not b.Loop: see BenchmarkSeal
		if _, err := Verify(env, trusted); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(env)), "envelope_bytes")
}
