package publisher

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/internal/wire"
)

// checkProtected checks that the named stream refuses purges, message
// deletes and roll-ups.
func checkProtected(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	st, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	c := st.CachedInfo().Config
	if !c.DenyPurge || !c.DenyDelete || c.AllowRollup {
		t.Errorf("stream %s: deny_purge %v, deny_delete %v, allow_rollup %v; want true, true, false", name, c.DenyPurge, c.DenyDelete, c.AllowRollup)
	}
	return c
}

// TestPublishProtectsStreams: on a server without permissions, publish
// creates the stream and the bucket protected, and upgrades ones made as
// certsync made them before (purges allowed; the bucket with
// CreateKeyValue's roll-ups), keeping what they hold; js.KeyValue and the
// status reader work on the bucket it made.
func TestPublishProtectsStreams(t *testing.T) {
	t.Parallel()
	for _, old := range []bool{false, true} {
		name := map[bool]string{false: "new", true: "old"}[old]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, runServer(t), map[string][]string{"example.com": {"web1"}})
			js := f.js()
			ctx := context.Background()
			if old {
				cfg := wire.StreamConfig(wire.StreamOptions{})
				cfg.DenyPurge, cfg.DenyDelete = false, false
				if _, err := js.CreateStream(ctx, cfg); err != nil {
					t.Fatal(err)
				}
				kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: wire.StatusBucket, History: 1,
					MaxValueSize: wire.MaxStatusValueSize, MaxBytes: wire.MaxStatusBytes, Storage: jetstream.FileStorage})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := kv.Put(ctx, wire.StatusKey("web1", "example.com"), []byte(`{"node":"web1","state":"staged"}`)); err != nil {
					t.Fatal(err)
				}
			}
			f.publish(f.lineage("example.com", f.issue("example.com", time.Time{})))
			checkProtected(t, js, wire.Stream)
			c := checkProtected(t, js, wire.StatusStream)
			if !slices.Equal(c.Subjects, []string{wire.StatusSubjects}) || !c.AllowDirect || c.MaxMsgsPerSubject != 1 ||
				c.MaxBytes != wire.MaxStatusBytes || c.MaxMsgSize != wire.MaxStatusValueSize || c.Discard != jetstream.DiscardNew {
				t.Errorf("status stream %+v, not the key/value layout", c)
			}
			if old != strings.Contains(f.logs.String(), "stream_updated") {
				t.Errorf("old streams %v, but stream_updated logged %v:\n%s", old, !old, f.logs)
			}
			kv, err := js.KeyValue(ctx, wire.StatusBucket)
			if err != nil {
				t.Fatalf("binding the bucket publish made: %v", err)
			}
			if _, err := kv.Put(ctx, wire.StatusKey("web2", "example.com"), []byte(`{"node":"web2"}`)); err != nil {
				t.Fatalf("a put: %v", err)
			}
			if err := kv.Delete(ctx, wire.StatusKey("web2", "example.com")); err != nil {
				t.Fatalf("a delete marker: %v", err)
			}
			fleet, err := f.publisher().Fleet(ctx)
			if err != nil {
				t.Fatalf("reading the status: %v", err)
			}
			if n := len(fleet.Records); n != map[bool]int{false: 0, true: 1}[old] {
				t.Errorf("status records %+v, want the one written before the upgrade, if any", fleet.Records)
			}
		})
	}
}

// TestPublishRefusesForeignSettings: a stream or bucket with sources, a
// mirror's traits, republish or a subject transform is refused with
// ErrRefusedSettings naming them; publish stores nothing and leaves the
// stream as it is.
func TestPublishRefusesForeignSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, stream, want string
		add                func(*jetstream.StreamConfig)
	}{
		{"republish", wire.Stream, "republish", func(c *jetstream.StreamConfig) {
			c.RePublish = &jetstream.RePublish{Source: wire.Subjects, Destination: wire.StatusSubjectPrefix + "web1.>"}
		}},
		{"subject transform", wire.Stream, "a subject transform", func(c *jetstream.StreamConfig) {
			c.SubjectTransform = &jetstream.SubjectTransformConfig{Source: wire.Subjects, Destination: wire.Subjects}
		}},
		{"sources", wire.StatusStream, "sources", func(c *jetstream.StreamConfig) {
			c.Sources = []*jetstream.StreamSource{{Name: "OTHER"}}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, runServer(t), map[string][]string{"example.com": {"web1"}})
			js := f.js()
			ctx := context.Background()
			for _, cfg := range []jetstream.StreamConfig{wire.StreamConfig(wire.StreamOptions{}), wire.StatusStreamConfig(1)} {
				if cfg.Name == tc.stream {
					tc.add(&cfg)
				}
				if _, err := js.CreateStream(ctx, cfg); err != nil {
					t.Fatal(err)
				}
			}
			st, _ := js.Stream(ctx, tc.stream)
			before := st.CachedInfo().Config
			_, err := f.publisher().Publish(ctx, f.lineage("example.com", f.issue("example.com", time.Time{})))
			if !errors.Is(err, ErrRefusedSettings) || !strings.Contains(err.Error(), `"`+tc.stream+`"`) || !strings.Contains(err.Error(), " "+tc.want+",") {
				t.Fatalf("publish: %v, want %v naming %s and %s", err, ErrRefusedSettings, tc.stream, tc.want)
			}
			if n := f.count("example.com"); n != 0 {
				t.Errorf("%d bundles stored", n)
			}
			st, _ = js.Stream(ctx, tc.stream)
			if after := st.CachedInfo().Config; after.RePublish == nil && after.SubjectTransform == nil && len(after.Sources) == 0 ||
				after.DenyPurge != before.DenyPurge {
				t.Errorf("stream %s changed: %+v", tc.stream, after)
			}
		})
	}
}

// TestStreamUpdate checks which differences ensureStream may let be under
// least privilege (changed only) and which it must fix or fail on (unsafe).
func TestStreamUpdate(t *testing.T) {
	t.Parallel()
	bundles, status := wire.StreamConfig(wire.StreamOptions{}), wire.StatusStreamConfig(1)
	want := bundles
	tests := []struct {
		name            string
		edit            func(*jetstream.StreamConfig)
		changed, unsafe string
		status          bool
	}{
		{"same", func(*jetstream.StreamConfig) {}, "", "", false},
		{"history", func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 9 }, "history", "", false},
		{"max age", func(c *jetstream.StreamConfig) { c.MaxAge = time.Hour }, "max_age", "", false},
		{"operator's byte limit kept", func(c *jetstream.StreamConfig) { c.MaxBytes = 1 << 30 }, "", "", false},
		{"purges", func(c *jetstream.StreamConfig) { c.DenyPurge = false }, "deny_purge", "deny_purge", false},
		{"deletes", func(c *jetstream.StreamConfig) { c.DenyDelete = false }, "deny_delete", "deny_delete", false},
		{"roll-ups", func(c *jetstream.StreamConfig) { c.AllowRollup, c.DenyPurge = true, false }, "allow_rollup,deny_purge", "allow_rollup,deny_purge", false},
		{"subjects", func(c *jetstream.StreamConfig) { c.Subjects = append(c.Subjects, "more.>") }, "subjects", "subjects", false},
		{"direct", func(c *jetstream.StreamConfig) { c.AllowDirect = true }, "allow_direct", "allow_direct", false},
		{"status same", func(*jetstream.StreamConfig) {}, "", "", true},
		{"status history", func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 9 }, "history", "", true},
		{"status byte limit raised", func(c *jetstream.StreamConfig) { c.MaxBytes = 1 << 40 }, "max_bytes", "max_bytes", true},
		{"status byte limit off", func(c *jetstream.StreamConfig) { c.MaxBytes = -1 }, "max_bytes", "max_bytes", true},
		{"status message size raised", func(c *jetstream.StreamConfig) { c.MaxMsgSize = 1 << 20 }, "max_msg_size", "max_msg_size", true},
		{"status discards old", func(c *jetstream.StreamConfig) { c.Discard = jetstream.DiscardOld }, "discard", "discard", true},
		{"bundles discard new", func(c *jetstream.StreamConfig) { c.Discard = jetstream.DiscardNew }, "discard", "", false},
	}
	for _, tc := range tests {
		want := bundles
		if tc.status {
			want = status
		}
		cur := want
		cur.Subjects = slices.Clone(want.Subjects)
		tc.edit(&cur)
		p := streamUpdate(cur, want)
		if got := strings.Join(p.changed, ","); got != tc.changed {
			t.Errorf("%s: changed %q, want %q", tc.name, got, tc.changed)
		}
		if got := strings.Join(p.unsafe, ","); got != tc.unsafe {
			t.Errorf("%s: unsafe %q, want %q", tc.name, got, tc.unsafe)
		}
		if p.upd.DenyPurge != true || p.upd.DenyDelete != true || p.upd.AllowRollup || !slices.Equal(p.upd.Subjects, want.Subjects) {
			t.Errorf("%s: update %+v does not protect the stream", tc.name, p.upd)
		}
		if tc.status && (p.upd.MaxBytes != want.MaxBytes || p.upd.MaxMsgSize != want.MaxMsgSize) {
			t.Errorf("%s: update keeps max_bytes %d, max_msg_size %d", tc.name, p.upd.MaxBytes, p.upd.MaxMsgSize)
		}
		if len(p.refused) != 0 {
			t.Errorf("%s: refused %v", tc.name, p.refused)
		}
	}
	cur := want
	cur.Sources = []*jetstream.StreamSource{{Name: "X"}}
	cur.Mirror = &jetstream.StreamSource{Name: "Y"}
	cur.RePublish = &jetstream.RePublish{Source: ">", Destination: "x.>"}
	cur.SubjectTransform = &jetstream.SubjectTransformConfig{Source: ">", Destination: "y.>"}
	cur.AllowMsgSchedules = true
	cur.SubjectDeleteMarkerTTL = time.Minute
	if got := strings.Join(streamUpdate(cur, want).refused, ", "); got != "sources, a mirror, republish, a subject transform, message schedules, subject delete markers" {
		t.Errorf("refused %q", got)
	}
}
