package authconf_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/authconf"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/testing/acmetest"
	"github.com/certsync/certsync/internal/testing/logtest"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/treetest"
	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/subscriber"
)

// denyTimeout bounds an action the server refuses: NATS drops a forbidden
// publish and reports it to the error handler, so the request times out.
const denyTimeout = 2 * time.Second

// denied checks that err is a failure that Explain turns into a clear
// permissions violation naming subject.
func denied(t *testing.T, nc *natsconn.Conn, err error, subject string) {
	t.Helper()
	if err == nil {
		t.Fatalf("allowed, want a permissions violation on %q", subject)
	}
	// The violation reaches the error handler asynchronously.
	natstest.WaitFor(t, 5*time.Second, "the permissions violation", func() bool {
		return errors.Is(nc.LastAsyncError(), nats.ErrPermissionViolation)
	})
	msg := nc.Explain(err).Error()
	if !strings.Contains(strings.ToLower(msg), "permissions violation") || !strings.Contains(msg, `"`+subject+`"`) {
		t.Fatalf("error %q does not explain the permissions violation on %q", msg, subject)
	}
}

// JetStream's error codes for what the stream and the bucket refuse
// whoever asks (nats-server's JSStreamRollupFailedErrF, …).
const (
	errCodeRollupRefused = 10111 // "rollup not permitted"
	errCodePurgeRefused  = 10110 // "stream purge not permitted"
	errCodeDeleteRefused = 10057 // "message delete not permitted"
)

// refused checks that err is the JetStream error code: an action the
// server's permissions allow but the stream's own settings refuse. Some
// calls (DeleteMsg) keep only the text of the server's error.
func refused(t *testing.T, err error, code jetstream.ErrorCode) {
	t.Helper()
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == code {
		return
	}
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("err_code=%d ", code)) {
		t.Fatalf("got %v, want JetStream error %d", err, code)
	}
}

// rollup publishes body to subject with the header Nats-Rollup: value and
// waits for the stream's answer.
func rollup(ctx context.Context, js jetstream.JetStream, subject, value string) error {
	msg := nats.NewMsg(subject)
	msg.Data = []byte(`{"node":"web1"}`)
	msg.Header.Set(jetstream.MsgRollup, value)
	_, err := js.PublishMsg(ctx, msg)
	return err
}

// TestNodeLeastPrivilege runs a server on the generated configuration and
// checks what a node's credential may and may not do: through the certsync
// client, raw JetStream calls and the nats CLI.
func TestNodeLeastPrivilege(t *testing.T) {
	t.Parallel()
	f := newFleet(t, map[string][]string{
		"example.com": {"web1"},
		"other.com":   {"web2"},
	}, "")
	f.publish("example.com", time.Time{})
	f.publish("other.com", time.Time{})

	// The allowed path through the certsync client: web1 stages its
	// bundle and reports its status.
	logs := &logtest.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := f.node("web1", logs).Sync(ctx)
	if err != nil {
		t.Fatalf("web1 Sync: %v", err)
	}
	if err := rep.Err(); err != nil || rep.Count(subscriber.OutcomeStaged) != 1 {
		t.Fatalf("web1 Sync: %d staged, %v; want 1 staged", rep.Count(subscriber.OutcomeStaged), err)
	}
	if strings.Contains(strings.ToLower(logs.String()), "permissions violation") {
		t.Errorf("web1's sync met a permissions violation:\n%s", logs)
	}
	_, admin := f.connect(authconf.AdminUser)
	adminKV, err := admin.KeyValue(ctx, wire.StatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := adminKV.Get(ctx, wire.StatusKey("web1", "example.com"))
	if err != nil {
		t.Fatalf("web1's status: %v", err)
	}
	var st wire.Status
	if err := json.Unmarshal(e.Value(), &st); err != nil || st.State != wire.StateInstalled {
		t.Fatalf("web1's status %s (%v), want installed", e.Value(), err)
	}
	// web2's status record, for web1 to try to read and overwrite.
	web2Key := wire.StatusKey("web2", "other.com")
	if _, err := adminKV.Put(ctx, web2Key, []byte(`{"node":"web2"}`)); err != nil {
		t.Fatal(err)
	}
	// A renewal for web1 to pull with the nats CLI.
	f.publish("example.com", time.Now().Add(-30*time.Second))
	stream, err := admin.Stream(ctx, wire.Stream)
	if err != nil {
		t.Fatal(err)
	}
	msgs := stream.CachedInfo().State.Msgs

	t.Run("allowed", func(t *testing.T) {
		t.Parallel()
		_, js := f.connect("web1")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := js.Consumer(ctx, wire.Stream, wire.ConsumerName("web1")); err != nil {
			t.Errorf("binding its own consumer: %v", err)
		}
		kv, err := js.KeyValue(ctx, wire.StatusBucket)
		if err != nil {
			t.Fatalf("binding the status bucket: %v", err)
		}
		if _, err := kv.Get(ctx, wire.StatusKey("web1", "example.com")); err != nil {
			t.Errorf("reading its own status: %v", err)
		}
		if _, err := kv.Put(ctx, wire.StatusKey("web1", "extra.com"), []byte(`{}`)); err != nil {
			t.Errorf("writing its own status: %v", err)
		}
	})

	forbidden := []struct {
		name    string
		subject string // the subject the server refuses
		do      func(ctx context.Context, nc *natsconn.Conn, js jetstream.JetStream) error
	}{
		{"publish a bundle", wire.Subject("example.com"), func(ctx context.Context, _ *natsconn.Conn, js jetstream.JetStream) error {
			_, err := js.Publish(ctx, wire.Subject("example.com"), []byte("forged"))
			return err
		}},
		{"publish a recipient group's bundle", wire.GroupSubject(0, "example.com"), func(ctx context.Context, _ *natsconn.Conn, js jetstream.JetStream) error {
			_, err := js.Publish(ctx, wire.GroupSubject(0, "example.com"), []byte("forged"))
			return err
		}},
		{"publish a rollout record", wire.RolloutSubject("example.com"), func(ctx context.Context, _ *natsconn.Conn, js jetstream.JetStream) error {
			_, err := js.Publish(ctx, wire.RolloutSubject("example.com"), rolloutRecord(t, f, "example.com"))
			return err
		}},
		{"bind another node's consumer", "$JS.API.CONSUMER.INFO.CERTSYNC.node-web2", func(ctx context.Context, _ *natsconn.Conn, js jetstream.JetStream) error {
			_, err := js.Consumer(ctx, wire.Stream, wire.ConsumerName("web2"))
			return err
		}},
		{"pull another node's consumer", "$JS.API.CONSUMER.MSG.NEXT.CERTSYNC.node-web2", func(ctx context.Context, nc *natsconn.Conn, _ jetstream.JetStream) error {
			_, err := nc.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT.CERTSYNC.node-web2", []byte(`{"batch":1}`))
			return err
		}},
		{"create a consumer", "$JS.API.CONSUMER.CREATE.CERTSYNC.node-web3", func(ctx context.Context, _ *natsconn.Conn, js jetstream.JetStream) error {
			_, err := js.CreateConsumer(ctx, wire.Stream, wire.ConsumerConfig("web3", []string{"other.com"}, true))
			return err
		}},
		{"widen its own consumer", "$JS.API.CONSUMER.CREATE.CERTSYNC.node-web1", func(ctx context.Context, _ *natsconn.Conn, js jetstream.JetStream) error {
			_, err := js.UpdateConsumer(ctx, wire.Stream, wire.ConsumerConfig("web1", []string{"example.com", "other.com"}, true))
			return err
		}},
		{"delete its own consumer", "$JS.API.CONSUMER.DELETE.CERTSYNC.node-web1", func(ctx context.Context, _ *natsconn.Conn, js jetstream.JetStream) error {
			return js.DeleteConsumer(ctx, wire.Stream, wire.ConsumerName("web1"))
		}},
		{"read the stream", "$JS.API.DIRECT.GET.CERTSYNC.certsync.bundle.other.com", func(ctx context.Context, nc *natsconn.Conn, _ jetstream.JetStream) error {
			_, err := nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.CERTSYNC.certsync.bundle.other.com", nil)
			return err
		}},
		{"read another node's status", "$JS.API.DIRECT.GET.KV_certsync-status.$KV.certsync-status." + web2Key, func(ctx context.Context, _ *natsconn.Conn, js jetstream.JetStream) error {
			kv, err := js.KeyValue(ctx, wire.StatusBucket)
			if err != nil {
				return err
			}
			_, err = kv.Get(ctx, web2Key)
			return err
		}},
		{"read status by sequence", "$JS.API.STREAM.MSG.GET.KV_certsync-status", func(ctx context.Context, nc *natsconn.Conn, _ jetstream.JetStream) error {
			_, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_certsync-status", []byte(`{"last_by_subj":"$KV.certsync-status.`+web2Key+`"}`))
			return err
		}},
		{"write another node's status", "$KV.certsync-status." + web2Key, func(ctx context.Context, _ *natsconn.Conn, js jetstream.JetStream) error {
			kv, err := js.KeyValue(ctx, wire.StatusBucket)
			if err != nil {
				return err
			}
			_, err = kv.Put(ctx, web2Key, []byte(`{"node":"web2","state":"installed"}`))
			return err
		}},
		{"read another node's inbox", wire.NodeInboxPrefix("web2") + ".>", func(ctx context.Context, nc *natsconn.Conn, _ jetstream.JetStream) error {
			sub, err := nc.SubscribeSync(wire.NodeInboxPrefix("web2") + ".>")
			if err != nil {
				return err
			}
			_, err = sub.NextMsgWithContext(ctx)
			return err
		}},
	}
	for _, tc := range forbidden {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nc, js := f.connect("web1")
			ctx, cancel := context.WithTimeout(context.Background(), denyTimeout)
			defer cancel()
			denied(t, nc, tc.do(ctx, nc, js), tc.subject)
		})
	}

	// Subjects the node may publish to, refused by the bucket itself: one
	// put to its own key with Nats-Rollup: all would purge every node's
	// record; sub, and the key/value purge that sends it, its own key's.
	web1Key := wire.StatusKey("web1", "example.com")
	for _, value := range []string{jetstream.MsgRollupAll, jetstream.MsgRollupSubject} {
		t.Run("roll up the bucket ("+value+")", func(t *testing.T) {
			t.Parallel()
			_, js := f.connect("web1")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			refused(t, rollup(ctx, js, wire.StatusSubjectPrefix+web1Key, value), errCodeRollupRefused)
		})
	}
	t.Run("purge its own key", func(t *testing.T) {
		t.Parallel()
		_, js := f.connect("web1")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		kv, err := js.KeyValue(ctx, wire.StatusBucket)
		if err != nil {
			t.Fatal(err)
		}
		refused(t, kv.Purge(ctx, web1Key), errCodeRollupRefused)
	})

	t.Run("nats CLI", func(t *testing.T) {
		t.Parallel()
		tool := acmetest.RequireTool(t, "nats")
		for _, args := range [][]string{
			{"consumer", "info", wire.Stream, wire.ConsumerName("web1")},
			{"kv", "get", wire.StatusBucket, wire.StatusKey("web1", "example.com")},
			{"kv", "put", wire.StatusBucket, wire.StatusKey("web1", "cli.com"), "{}"},
			{"consumer", "next", wire.Stream, wire.ConsumerName("web1"), "--ack"},
		} {
			if out, errOut, err := f.natsCLI(tool, "web1", args...); err != nil || strings.Contains(strings.ToLower(errOut), "violation") {
				t.Errorf("nats %s as web1: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if info, err := stream.Consumer(ctx, wire.ConsumerName("web1")); err != nil {
			t.Error(err)
		} else if ci := info.CachedInfo(); ci.NumPending != 0 || ci.NumAckPending != 0 || ci.Delivered.Stream != ci.AckFloor.Stream {
			t.Errorf("after nats consumer next --ack: %d pending, %d unacknowledged, want none", ci.NumPending, ci.NumAckPending)
		}
		for _, tc := range []struct {
			args    []string
			subject string
		}{
			{[]string{"pub", wire.Subject("example.com"), "forged"}, wire.Subject("example.com")},
			{[]string{"pub", wire.RolloutSubject("example.com"), "forged"}, wire.RolloutSubject("example.com")},
			{[]string{"consumer", "info", wire.Stream, wire.ConsumerName("web2")}, "$JS.API.CONSUMER.INFO.CERTSYNC.node-web2"},
			{[]string{"consumer", "next", wire.Stream, wire.ConsumerName("web2")}, "$JS.API.CONSUMER.MSG.NEXT.CERTSYNC.node-web2"},
			{[]string{"consumer", "add", wire.Stream, "node-web3", "--pull", "--filter", wire.Subject("other.com"), "--defaults"}, "$JS.API.CONSUMER.INFO.CERTSYNC.node-web3"},
			{[]string{"kv", "get", wire.StatusBucket, web2Key}, "$JS.API.DIRECT.GET.KV_certsync-status.$KV.certsync-status." + web2Key},
			{[]string{"kv", "put", wire.StatusBucket, web2Key, "forged"}, "$KV.certsync-status." + web2Key},
			{[]string{"sub", wire.NodeInboxPrefix("web2") + ".>", "--count", "1"}, wire.NodeInboxPrefix("web2") + ".>"},
		} {
			out, errOut, err := f.natsCLI(tool, "web1", tc.args...)
			line := strings.ToLower(errOut)
			if !strings.Contains(line, "permissions violation") || !strings.Contains(errOut, tc.subject) {
				t.Errorf("nats %s as web1 (%v): stderr does not tell the permissions violation on %q:\n%s%s",
					strings.Join(tc.args, " "), err, tc.subject, out, errOut)
			}
		}
		for _, args := range [][]string{
			{"pub", "--jetstream", "-H", "Nats-Rollup:all", wire.StatusSubjectPrefix + web1Key, "{}"},
			{"pub", "--jetstream", "-H", "Nats-Rollup:sub", wire.StatusSubjectPrefix + web1Key, "{}"},
			{"kv", "purge", wire.StatusBucket, web1Key, "-f"},
		} {
			if out, errOut, err := f.natsCLI(tool, "web1", args...); err == nil || !strings.Contains(errOut, "rollup not permitted") {
				t.Errorf("nats %s as web1 (%v): stderr does not say the roll-up was refused:\n%s%s",
					strings.Join(args, " "), err, out, errOut)
			}
		}
	})

	t.Cleanup(func() {
		// Nothing forbidden changed anything: no bundle added, web2's
		// status as it was, no consumer but the nodes'.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != msgs {
			t.Errorf("stream holds %d messages, want %d", info.State.Msgs, msgs)
		}
		if e, err := adminKV.Get(ctx, web2Key); err != nil {
			t.Errorf("web2's status: %v", err)
		} else if string(e.Value()) != `{"node":"web2"}` {
			t.Errorf("web2's status changed: %s", e.Value())
		}
		// No roll-up or purge took web1's own record either.
		if e, err := adminKV.Get(ctx, web1Key); err != nil {
			t.Errorf("web1's status after the roll-ups: %v", err)
		} else if !strings.Contains(string(e.Value()), `"node":"web1"`) {
			t.Errorf("web1's status after the roll-ups: %s", e.Value())
		}
		var names []string
		for name := range stream.ListConsumers(ctx).Info() {
			names = append(names, name.Name)
		}
		if strings.Join(names, ",") != "node-web1,node-web2" {
			t.Errorf("consumers %v, want node-web1 and node-web2", names)
		}
	})
}

// TestPublisherLeastPrivilege checks what the publisher's credential may
// not do: write a node's status; delete, purge, create or update the
// stream or the bucket (an update could turn roll-ups on, or add a source
// or republish that copies its bundles into the status bucket, which is
// forging every node's status); delete a message; roll up the stream
// through a subject it may publish to. Through the certsync client and the
// nats CLI; the stream, the bucket and their settings stay as they were.
func TestPublisherLeastPrivilege(t *testing.T) {
	t.Parallel()
	f := newFleet(t, map[string][]string{"example.com": {"web1"}}, "")
	f.publish("example.com", time.Time{})
	key := wire.StatusKey("web1", "example.com")
	_, admin := f.connect(authconf.AdminUser)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	adminKV, err := admin.KeyValue(ctx, wire.StatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adminKV.Put(ctx, key, []byte(`{"node":"web1"}`)); err != nil {
		t.Fatal(err)
	}
	// What it may do beside publishing bundles: store a rollout record
	// (the controller's, and republish's copy for a node that gains a
	// certificate).
	pubNC, pubJS := f.connect(authconf.PublisherUser)
	if _, err := pubJS.Publish(ctx, wire.RolloutSubject("example.com"), rolloutRecord(t, f, "example.com")); err != nil {
		t.Fatalf("the publisher storing a rollout record: %v", err)
	}
	// And a recipient group's envelope (a certificate one envelope cannot
	// hold), on its group subject.
	if _, err := pubJS.Publish(ctx, wire.GroupSubject(1, "example.com"), []byte("a group's envelope")); err != nil {
		t.Fatalf("the publisher storing on a group subject: %v", err)
	}
	// And a certificate's groups as one atomic batch, as the publisher
	// stores them (publisher's storeBatch): the first message published
	// without a reply, the last with the commit, acknowledged for both.
	first := nats.NewMsg(wire.GroupSubject(2, "example.com"))
	first.Data = []byte("group 2's envelope")
	first.Header.Set("Nats-Batch-Id", "leastprivilege")
	first.Header.Set("Nats-Batch-Sequence", "1")
	if err := pubNC.PublishMsg(first); err != nil {
		t.Fatal(err)
	}
	commit := nats.NewMsg(wire.GroupSubject(3, "example.com"))
	commit.Data = []byte("group 3's envelope")
	commit.Header.Set("Nats-Batch-Id", "leastprivilege")
	commit.Header.Set("Nats-Batch-Sequence", "2")
	commit.Header.Set("Nats-Batch-Commit", "1")
	ack, err := pubJS.PublishMsg(ctx, commit)
	if err != nil {
		t.Fatalf("the publisher storing two groups as one atomic batch: %v", err)
	}
	st, err := admin.Stream(ctx, wire.Stream)
	if err != nil {
		t.Fatal(err)
	}
	for subject, seq := range map[string]uint64{wire.GroupSubject(2, "example.com"): ack.Sequence - 1, wire.GroupSubject(3, "example.com"): ack.Sequence} {
		if m, err := st.GetLastMsgForSubject(ctx, subject); err != nil || m.Sequence != seq {
			t.Errorf("%s after the batch: %v, %v; want it at sequence %d", subject, m, err, seq)
		}
	}
	before := streamInfos(t, admin)

	// A stream update, or a create, that would make the publisher's
	// bundles land in the status bucket: a source from CERTSYNC with a
	// subject transform, or republish.
	intoStatus := []jetstream.SubjectTransformConfig{{Source: wire.SubjectPrefix + "*", Destination: wire.StatusSubjectPrefix + "web1.{{wildcard(1)}}"}}
	sourced := wire.StatusStreamConfig(1)
	sourced.Sources = []*jetstream.StreamSource{{Name: wire.Stream, SubjectTransforms: intoStatus}}
	republished := wire.StreamConfig(wire.StreamOptions{})
	republished.RePublish = &jetstream.RePublish{Source: wire.SubjectPrefix + "*", Destination: wire.StatusSubjectPrefix + "web1.{{wildcard(1)}}"}
	forge := jetstream.StreamConfig{Name: "FORGE", Storage: jetstream.FileStorage,
		Sources: []*jetstream.StreamSource{{Name: wire.Stream, SubjectTransforms: intoStatus}}}

	forbidden := []struct {
		name    string
		subject string
		do      func(ctx context.Context, js jetstream.JetStream) error
	}{
		{"write a node's status", wire.StatusSubjectPrefix + key, func(ctx context.Context, js jetstream.JetStream) error {
			kv, err := js.KeyValue(ctx, wire.StatusBucket)
			if err != nil {
				return err
			}
			_, err = kv.Put(ctx, key, []byte("forged"))
			return err
		}},
		{"delete the stream", "$JS.API.STREAM.DELETE.CERTSYNC", func(ctx context.Context, js jetstream.JetStream) error {
			return js.DeleteStream(ctx, wire.Stream)
		}},
		{"purge the stream", "$JS.API.STREAM.PURGE.CERTSYNC", func(ctx context.Context, js jetstream.JetStream) error {
			s, err := js.Stream(ctx, wire.Stream)
			if err != nil {
				return err
			}
			return s.Purge(ctx)
		}},
		{"delete a bundle", "$JS.API.STREAM.MSG.DELETE.CERTSYNC", func(ctx context.Context, js jetstream.JetStream) error {
			s, err := js.Stream(ctx, wire.Stream)
			if err != nil {
				return err
			}
			return s.DeleteMsg(ctx, 1)
		}},
		{"turn roll-ups on", "$JS.API.STREAM.UPDATE.CERTSYNC", func(ctx context.Context, js jetstream.JetStream) error {
			cfg := wire.StreamConfig(wire.StreamOptions{})
			cfg.AllowRollup, cfg.DenyPurge = true, false
			_, err := js.UpdateStream(ctx, cfg)
			return err
		}},
		{"republish bundles into the bucket", "$JS.API.STREAM.UPDATE.CERTSYNC", func(ctx context.Context, js jetstream.JetStream) error {
			_, err := js.UpdateStream(ctx, republished)
			return err
		}},
		{"source bundles into the bucket", "$JS.API.STREAM.UPDATE.KV_certsync-status", func(ctx context.Context, js jetstream.JetStream) error {
			_, err := js.UpdateStream(ctx, sourced)
			return err
		}},
		{"create the bucket with a source", "$JS.API.STREAM.CREATE.KV_certsync-status", func(ctx context.Context, js jetstream.JetStream) error {
			_, err := js.CreateStream(ctx, sourced)
			return err
		}},
		{"create a stream with a source", "$JS.API.STREAM.CREATE.FORGE", func(ctx context.Context, js jetstream.JetStream) error {
			_, err := js.CreateStream(ctx, forge)
			return err
		}},
		{"purge the bucket", "$JS.API.STREAM.PURGE.KV_certsync-status", func(ctx context.Context, js jetstream.JetStream) error {
			s, err := js.Stream(ctx, wire.StatusStream)
			if err != nil {
				return err
			}
			return s.Purge(ctx)
		}},
		{"delete a status record", "$JS.API.STREAM.MSG.DELETE.KV_certsync-status", func(ctx context.Context, js jetstream.JetStream) error {
			s, err := js.Stream(ctx, wire.StatusStream)
			if err != nil {
				return err
			}
			return s.DeleteMsg(ctx, 1)
		}},
		{"delete the bucket", "$JS.API.STREAM.DELETE.KV_certsync-status", func(ctx context.Context, js jetstream.JetStream) error {
			return js.DeleteKeyValue(ctx, wire.StatusBucket)
		}},
	}
	for _, tc := range forbidden {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nc, js := f.connect(authconf.PublisherUser)
			ctx, cancel := context.WithTimeout(context.Background(), denyTimeout)
			defer cancel()
			denied(t, nc, tc.do(ctx, js), tc.subject)
		})
	}
	// A subject the publisher may publish to, refused by the stream: one
	// bundle with Nats-Rollup: all would purge every other.
	for _, value := range []string{jetstream.MsgRollupAll, jetstream.MsgRollupSubject} {
		t.Run("roll up the stream ("+value+")", func(t *testing.T) {
			t.Parallel()
			_, js := f.connect(authconf.PublisherUser)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			refused(t, rollup(ctx, js, wire.Subject("example.com"), value), errCodeRollupRefused)
		})
	}

	t.Run("nats CLI", func(t *testing.T) {
		t.Parallel()
		tool := acmetest.RequireTool(t, "nats")
		dir := t.TempDir()
		writeJSON := func(name string, v any) string {
			data, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, name)
			treetest.WriteFile(t, path, data, 0o600)
			return path
		}
		cases := []struct {
			args    []string
			subject string // the permissions violation; "" for a refusal by the stream
		}{
			{[]string{"stream", "purge", wire.Stream, "-f"}, "$JS.API.STREAM.PURGE.CERTSYNC"},
			{[]string{"stream", "rm", wire.Stream, "-f"}, "$JS.API.STREAM.DELETE.CERTSYNC"},
			{[]string{"stream", "rmm", wire.Stream, "1", "-f"}, "$JS.API.STREAM.MSG.DELETE.CERTSYNC"},
			// nats stream edit first reads the account's JetStream API
			// level ($JS.API.INFO), since the stream takes atomic batches
			// (a nats-server 2.12 setting); the publisher may not read it,
			// so the edit stops there. The update request itself, sent
			// as is, is refused below (nats req).
			{[]string{"stream", "edit", wire.Stream, "--allow-rollup", "--no-deny-purge", "-f"}, "$JS.API.INFO"},
			{[]string{"stream", "edit", wire.Stream, "--config", writeJSON("republish.json", republished), "-f"}, "$JS.API.INFO"},
			{[]string{"req", "--no-templates", "$JS.API.STREAM.UPDATE.CERTSYNC", string(readFile(t, writeJSON("republish.json", republished)))}, "$JS.API.STREAM.UPDATE.CERTSYNC"},
			{[]string{"stream", "add", "FORGE", "--config", writeJSON("forge.json", forge)}, "$JS.API.STREAM.CREATE.FORGE"},
			// nats stream asks on a terminal before it touches a bucket's
			// stream; nats req sends the same API request without asking.
			{[]string{"req", "--no-templates", "$JS.API.STREAM.UPDATE.KV_certsync-status", string(readFile(t, writeJSON("sourced.json", sourced)))}, "$JS.API.STREAM.UPDATE.KV_certsync-status"},
			{[]string{"req", "--no-templates", "$JS.API.STREAM.PURGE.KV_certsync-status", ""}, "$JS.API.STREAM.PURGE.KV_certsync-status"},
			{[]string{"kv", "rm", wire.StatusBucket, "-f"}, "$JS.API.STREAM.DELETE.KV_certsync-status"},
			{[]string{"kv", "put", wire.StatusBucket, key, "forged"}, wire.StatusSubjectPrefix + key},
			{[]string{"pub", "--jetstream", "-H", "Nats-Rollup:all", wire.Subject("example.com"), "x"}, ""},
		}
		for _, tc := range cases {
			t.Run(strings.Join(tc.args[:3], " "), func(t *testing.T) {
				t.Parallel()
				// nats req exits 0 when its request times out, so stderr
				// says whether it was refused (and Cleanup that nothing
				// changed).
				out, errOut, err := f.natsCLI(tool, authconf.PublisherUser, tc.args...)
				switch {
				case tc.subject == "" && !strings.Contains(errOut, "rollup not permitted"):
					t.Errorf("nats %s as the publisher (%v): stderr does not say the roll-up was refused:\n%s%s",
						strings.Join(tc.args, " "), err, out, errOut)
				case tc.subject != "" && (!strings.Contains(strings.ToLower(errOut), "permissions violation") || !strings.Contains(errOut, `"`+tc.subject+`"`)):
					t.Errorf("nats %s as the publisher (%v): stderr does not tell the permissions violation on %q:\n%s%s",
						strings.Join(tc.args, " "), err, tc.subject, out, errOut)
				}
			})
		}
	})

	t.Cleanup(func() {
		// Nothing changed: the same bundles, records and settings, and no
		// other stream.
		after := streamInfos(t, admin)
		for name, b := range before {
			a, ok := after[name]
			switch {
			case !ok:
				t.Errorf("stream %s is gone", name)
			case a.State.Msgs != b.State.Msgs || a.State.FirstSeq != b.State.FirstSeq:
				t.Errorf("stream %s holds messages %d-%d (%d), want %d-%d (%d)", name,
					a.State.FirstSeq, a.State.LastSeq, a.State.Msgs, b.State.FirstSeq, b.State.LastSeq, b.State.Msgs)
			case !reflect.DeepEqual(a.Config, b.Config):
				t.Errorf("stream %s settings changed:\n%+v\nwant\n%+v", name, a.Config, b.Config)
			}
		}
		if len(after) != len(before) {
			t.Errorf("streams %v, want only %v", slices.Sorted(maps.Keys(after)), slices.Sorted(maps.Keys(before)))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if e, err := adminKV.Get(ctx, key); err != nil || string(e.Value()) != `{"node":"web1"}` {
			t.Errorf("web1's status after the publisher's attempts: %v", err)
		}
	})
}

// rolloutRecord is a rollout record of the fleet's publisher releasing
// every node, for the newest bundle of name.
func rolloutRecord(t *testing.T, f *fleet, name string) []byte {
	t.Helper()
	now := time.Now().UTC()
	data, err := crypto.SignRollout(&crypto.RolloutRecord{Name: name, Version: uint64(now.UnixMilli()), Fingerprint: crypto.FingerprintOf([]byte(name)),
		Generation: 1, State: crypto.RolloutRunning, All: true, Time: now, WaveStarted: now}, f.signer)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// readFile returns the content of the file at path.
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// streamInfos returns the information of every stream of the account.
func streamInfos(t *testing.T, js jetstream.JetStream) map[string]*jetstream.StreamInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	infos := map[string]*jetstream.StreamInfo{}
	l := js.ListStreams(ctx)
	for info := range l.Info() {
		infos[info.Config.Name] = info
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return infos
}

// TestNodeAckFormatV2 runs a node on a server that uses nats-server's v2
// ack subjects ($JS.ACK.<domain>.<account>.<stream>.<consumer>.…): its
// acknowledgements must be allowed too.
func TestNodeAckFormatV2(t *testing.T) {
	t.Parallel()
	f := newFleet(t, map[string][]string{"example.com": {"web1"}}, "feature_flags {\n  js_ack_fc_v2: true\n}\n")
	f.publish("example.com", time.Time{})
	logs := &logtest.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := f.node("web1", logs).Sync(ctx)
	if err != nil || rep.Err() != nil || rep.Count(subscriber.OutcomeStaged) != 1 {
		t.Fatalf("web1 Sync: %v, %v; want 1 staged", err, rep)
	}
	_, admin := f.connect(authconf.AdminUser)
	c, err := admin.Consumer(ctx, wire.Stream, wire.ConsumerName("web1"))
	if err != nil {
		t.Fatal(err)
	}
	if ci := c.CachedInfo(); ci.NumAckPending != 0 || ci.AckFloor.Stream == 0 {
		t.Fatalf("consumer: %d unacknowledged, ack floor %d; want all acknowledged\n%s", ci.NumAckPending, ci.AckFloor.Stream, logs)
	}
}
