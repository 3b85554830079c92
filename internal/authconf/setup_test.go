package authconf_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/internal/authconf"
	"github.com/certsync/certsync/internal/testing/logtest"
	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/publisher"
	"github.com/certsync/certsync/subscriber"
)

// errCodeInvalidConfig is JetStream's "stream configuration … invalid".
const errCodeInvalidConfig = 10052

// checkProtected checks that the stream and the bucket refuse purges,
// deletes and roll-ups, and have no sources, mirror or republish.
func checkProtected(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	for name, info := range streamInfos(t, js) {
		c := info.Config
		if !c.DenyPurge || !c.DenyDelete || c.AllowRollup || len(c.Sources) > 0 || c.Mirror != nil || c.RePublish != nil {
			t.Errorf("stream %s: deny_purge %v, deny_delete %v, allow_rollup %v, sources %d, mirror %v, republish %v; want denied, denied, off, none",
				name, c.DenyPurge, c.DenyDelete, c.AllowRollup, len(c.Sources), c.Mirror, c.RePublish)
		}
	}
}

// TestSetupFirstRun is the first setup under least privilege: the
// publisher may not create the stream or the bucket, so its publish fails
// with one error that says so; setup with its credential fails the same
// way; setup with the admin's creates both, protected, and the publisher
// and the nodes then work.
func TestSetupFirstRun(t *testing.T) {
	t.Parallel()
	f := newFleetWithoutSetup(t, map[string][]string{"example.com": {"web1"}}, "")
	_, _, err := f.tryPublish("example.com", time.Time{})
	if !errors.Is(err, publisher.ErrNotSetUp) || !strings.Contains(err.Error(), `stream "CERTSYNC"`) || !strings.Contains(err.Error(), "may not create it") {
		t.Fatalf("publish before setup: %v, want %v naming the stream", err, publisher.ErrNotSetUp)
	}
	if err := f.setup(authconf.PublisherUser); !errors.Is(err, publisher.ErrNotSetUp) {
		t.Fatalf("setup with the publisher's credential: %v, want %v", err, publisher.ErrNotSetUp)
	}
	_, admin := f.connect(authconf.AdminUser)
	if infos := streamInfos(t, admin); len(infos) != 0 {
		t.Fatalf("streams after the publisher's attempts: %d, want none", len(infos))
	}

	if err := f.setup(authconf.AdminUser); err != nil {
		t.Fatalf("setup with the admin's credential: %v", err)
	}
	infos := streamInfos(t, admin)
	if len(infos) != 2 || infos[wire.Stream] == nil || infos[wire.StatusStream] == nil {
		t.Fatalf("streams after setup: %v, want %s and %s", infos, wire.Stream, wire.StatusStream)
	}
	checkProtected(t, admin)
	if err := f.setup(authconf.AdminUser); err != nil {
		t.Fatalf("setup again: %v", err)
	}

	f.publish("example.com", time.Time{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	logs := &logtest.Buffer{}
	rep, err := f.node("web1", logs).Sync(ctx)
	if err != nil || rep.Err() != nil || rep.Count(subscriber.OutcomeStaged) != 1 {
		t.Fatalf("web1 Sync after setup: %v, %v; want 1 staged\n%s", err, rep, logs)
	}
	kv, err := admin.KeyValue(ctx, wire.StatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, wire.StatusKey("web1", "example.com")); err != nil {
		t.Errorf("web1's status after setup: %v", err)
	}

	// publisher.yaml's history changes: the publisher may not apply it,
	// says so, and publishes all the same; setup applies it.
	f.stream.History = 7
	f.publish("example.com", time.Now().Add(-30*time.Second)) // a renewal: a later version
	if ev := f.logs.Events("stream_settings_differ"); len(ev) != 1 || ev[0]["changed"] != "history" || !strings.Contains(fmt.Sprint(ev[0]["hint"]), "certsync setup") {
		t.Errorf("publish with another history logged stream_settings_differ %v, want once, for history, naming certsync setup:\n%s", ev, f.logs)
	}
	if h := streamInfos(t, admin)[wire.Stream].Config.MaxMsgsPerSubject; h != 5 {
		t.Errorf("history %d after the publisher's publish, want 5", h)
	}
	if err := f.setup(authconf.AdminUser); err != nil {
		t.Fatalf("setup with history 7: %v", err)
	}
	if h := streamInfos(t, admin)[wire.Stream].Config.MaxMsgsPerSubject; h != 7 {
		t.Errorf("history %d after setup, want 7", h)
	}
	checkProtected(t, admin)
}

// withOldStream returns a fleet whose web1 gets example.com, not set up,
// on a server where the admin created the CERTSYNC stream as an earlier
// certsync made it: today's configuration, changed by old. It returns the
// admin's JetStream too, and a context bounding the test's calls.
func withOldStream(t *testing.T, old func(*jetstream.StreamConfig)) (*fleet, jetstream.JetStream, context.Context) {
	t.Helper()
	f := newFleetWithoutSetup(t, map[string][]string{"example.com": {"web1"}}, "")
	_, admin := f.connect(authconf.AdminUser)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	cfg := wire.StreamConfig(wire.StreamOptions{})
	old(&cfg)
	if _, err := admin.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return f, admin, ctx
}

// TestSetupUpgrades runs setup on a stream and a bucket made as certsync
// made them before it protected them (purges allowed, the bucket with
// CreateKeyValue's roll-ups): the publisher refuses to publish on them,
// setup turns the protections on and keeps what they hold, and then
// nobody, the admin included, may purge, delete or roll up. The server
// never lets the protections be turned off again. Sources and republish
// found on them are refused, named, and left alone.
func TestSetupUpgrades(t *testing.T) {
	t.Parallel()
	f, admin, ctx := withOldStream(t, func(old *jetstream.StreamConfig) { old.DenyPurge, old.DenyDelete = false, false })
	// The bucket as the previous StatusBucketConfig had it.
	kv, err := admin.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: wire.StatusBucket, History: 1, MaxValueSize: wire.MaxStatusValueSize,
		MaxBytes: wire.MaxStatusBytes, Storage: jetstream.FileStorage, Replicas: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	web2Key := wire.StatusKey("web2", "example.com")
	if _, err := kv.Put(ctx, web2Key, []byte(`{"node":"web2"}`)); err != nil {
		t.Fatal(err)
	}
	if info := streamInfos(t, admin)[wire.StatusStream]; !info.Config.AllowRollup || info.Config.DenyPurge {
		t.Fatalf("the old bucket: allow_rollup %v, deny_purge %v; the test needs the old settings", info.Config.AllowRollup, info.Config.DenyPurge)
	}

	_, _, err = f.tryPublish("example.com", time.Time{})
	if !errors.Is(err, publisher.ErrNotSetUp) || !strings.Contains(err.Error(), "deny_purge") || !strings.Contains(err.Error(), "deny_delete") {
		t.Fatalf("publish on the old stream: %v, want %v naming deny_purge and deny_delete", err, publisher.ErrNotSetUp)
	}
	if info := streamInfos(t, admin)[wire.Stream]; info.State.Msgs != 0 {
		t.Fatalf("the refused publish stored %d messages", info.State.Msgs)
	}

	if err := f.setup(authconf.AdminUser); err != nil {
		t.Fatalf("setup on the old stream and bucket: %v", err)
	}
	checkProtected(t, admin)
	if e, err := kv.Get(ctx, web2Key); err != nil || string(e.Value()) != `{"node":"web2"}` {
		t.Fatalf("web2's record after the upgrade: %v", err)
	}
	f.publish("example.com", time.Time{})

	// Now refused to every credential: the node's roll-up of the bucket,
	// the admin's purges and deletes.
	_, web1 := f.connect("web1")
	refused(t, rollup(ctx, web1, wire.StatusSubjectPrefix+wire.StatusKey("web1", "example.com"), jetstream.MsgRollupAll), errCodeRollupRefused)
	for _, name := range []string{wire.Stream, wire.StatusStream} {
		st, err := admin.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		refused(t, st.Purge(ctx), errCodePurgeRefused)
		refused(t, st.DeleteMsg(ctx, st.CachedInfo().State.FirstSeq), errCodeDeleteRefused)
		cfg := st.CachedInfo().Config
		cfg.DenyPurge = false
		_, err = admin.UpdateStream(ctx, cfg)
		refused(t, err, errCodeInvalidConfig)
		cfg.DenyPurge, cfg.DenyDelete = true, false
		_, err = admin.UpdateStream(ctx, cfg)
		refused(t, err, errCodeInvalidConfig)
	}
	if e, err := kv.Get(ctx, web2Key); err != nil || string(e.Value()) != `{"node":"web2"}` {
		t.Fatalf("web2's record after the refused roll-up and purge: %v", err)
	}
	// A key is still deleted the key/value way, with a delete marker.
	if err := kv.Delete(ctx, web2Key); err != nil {
		t.Fatalf("deleting web2's record with a delete marker: %v", err)
	}
	if _, err := kv.Get(ctx, web2Key); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("web2's record after kv.Delete: %v, want %v", err, jetstream.ErrKeyNotFound)
	}

	// Settings certsync never removes by itself.
	for _, tc := range []struct {
		stream, want string
		add          func(*jetstream.StreamConfig)
	}{
		{wire.Stream, "republish", func(c *jetstream.StreamConfig) {
			c.RePublish = &jetstream.RePublish{Source: wire.Subjects, Destination: "copies.>"}
		}},
		{wire.StatusStream, "sources", func(c *jetstream.StreamConfig) {
			c.Sources = []*jetstream.StreamSource{{Name: wire.Stream, SubjectTransforms: []jetstream.SubjectTransformConfig{
				{Source: wire.SubjectPrefix + "*", Destination: wire.StatusSubjectPrefix + "web1.{{wildcard(1)}}"}}}}
		}},
	} {
		st, err := admin.Stream(ctx, tc.stream)
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		tc.add(&cfg)
		if _, err := admin.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		before := streamInfos(t, admin)[tc.stream].Config
		err = f.setup(authconf.AdminUser)
		if !errors.Is(err, publisher.ErrRefusedSettings) || !strings.Contains(err.Error(), `"`+tc.stream+`"`) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("setup on %s with %s: %v, want %v naming both", tc.stream, tc.want, err, publisher.ErrRefusedSettings)
		}
		if _, _, err := f.tryPublish("example.com", time.Time{}); !errors.Is(err, publisher.ErrRefusedSettings) {
			t.Errorf("publish on %s with %s: %v, want %v", tc.stream, tc.want, err, publisher.ErrRefusedSettings)
		}
		if after := streamInfos(t, admin)[tc.stream].Config; after.RePublish == nil && len(after.Sources) == 0 || after.Description != before.Description {
			t.Errorf("setup changed %s: %+v", tc.stream, after)
		}
		// The admin takes it off by hand; setup is content again.
		cfg.RePublish, cfg.Sources = nil, nil
		if _, err := admin.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		if err := f.setup(authconf.AdminUser); err != nil {
			t.Errorf("setup once %s is off %s: %v", tc.want, tc.stream, err)
		}
	}
	checkProtected(t, admin)
}

// TestSetupAddsRolloutSubjects is the upgrade to rollouts under least
// privilege: on a stream set up before them (only certsync.bundle.>), the
// publisher, which may not update the stream, still publishes a
// certificate without a rollout policy (and says setup has something to
// do), but refuses to publish a held one, naming certsync setup; the
// admin's setup adds certsync.rollout.>, and the next publish seals it
// held and gives the node's consumer the rollout subject.
func TestSetupAddsRolloutSubjects(t *testing.T) {
	t.Parallel()
	f, admin, ctx := withOldStream(t, func(old *jetstream.StreamConfig) { old.Subjects = []string{wire.Subjects} })
	if _, err := admin.CreateStream(ctx, wire.StatusStreamConfig(1)); err != nil {
		t.Fatal(err)
	}

	f.publish("example.com", time.Time{})
	if ev := f.logs.Events("stream_settings_differ"); len(ev) != 1 || ev[0]["changed"] != "subjects" {
		t.Errorf("publish on the stream without rollout subjects logged stream_settings_differ %v, want once, for subjects:\n%s", ev, f.logs)
	}
	consumerSubjects := func() []string {
		t.Helper()
		c, err := admin.Consumer(ctx, wire.Stream, wire.ConsumerName("web1"))
		if err != nil {
			t.Fatal(err)
		}
		return c.CachedInfo().Config.FilterSubjects
	}
	if got := consumerSubjects(); strings.Join(got, ",") != wire.Subject("example.com") {
		t.Errorf("web1's consumer filters %v, want the bundle subject only", got)
	}
	msgs := streamInfos(t, admin)[wire.Stream].State.Msgs

	f.rollout = &publisher.RolloutPolicy{}
	_, _, err := f.tryPublish("example.com", time.Now())
	if !errors.Is(err, publisher.ErrNotSetUp) || !strings.Contains(err.Error(), "certsync setup") ||
		!strings.Contains(err.Error(), wire.RolloutSubjects) || !strings.HasPrefix(err.Error(), `refusing to publish certificate "example.com"`) {
		t.Fatalf("a held publish on the stream without rollout subjects: %v, want %v naming %s and certsync setup", err, publisher.ErrNotSetUp, wire.RolloutSubjects)
	}
	if n := streamInfos(t, admin)[wire.Stream].State.Msgs; n != msgs {
		t.Errorf("the refused publish stored %d messages", n-msgs)
	}

	if err := f.setup(authconf.AdminUser); err != nil {
		t.Fatalf("setup: %v", err)
	}
	if got := streamInfos(t, admin)[wire.Stream].Config.Subjects; strings.Join(got, ",") != wire.Subjects+","+wire.RolloutSubjects+","+wire.GroupSubjects {
		t.Fatalf("subjects after setup %v, want the bundle, rollout and group subjects", got)
	}
	_, res, err := f.tryPublish("example.com", time.Now())
	if err != nil || !res.Hold {
		t.Fatalf("a held publish after setup: %+v, %v; want published, held", res, err)
	}
	if got := consumerSubjects(); strings.Join(got, ",") != wire.Subject("example.com")+","+wire.RolloutSubject("example.com") {
		t.Errorf("web1's consumer filters %v after setup, want the bundle and rollout subjects", got)
	}
}
