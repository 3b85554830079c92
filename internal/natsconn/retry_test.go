package natsconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestOverall(t *testing.T) {
	t.Parallel()
	cause := errors.New("no success within the 50ms timeout")
	parent, cancelParent := context.WithTimeout(context.Background(), time.Hour)
	defer cancelParent()
	ctx, cancel := Overall(parent, 50*time.Millisecond, cause)
	defer cancel()
	if _, ok := ctx.Deadline(); ok {
		t.Fatal("Overall's context has a deadline: a JetStream request under it would wait for all of it")
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Overall's context did not end after its timeout")
	}
	if got := context.Cause(ctx); got != cause {
		t.Errorf("cause %v, want %v", got, cause)
	}

	// The parent's end ends it, with the parent's cause; so does cancel.
	stopped, stop := context.WithCancelCause(context.Background())
	ctx, cancel = Overall(stopped, 0, nil)
	defer cancel()
	why := errors.New("stopped")
	stop(why)
	<-ctx.Done()
	if got := context.Cause(ctx); got != why {
		t.Errorf("cause %v after the parent ended, want %v", got, why)
	}
	ctx, cancel = Overall(context.Background(), time.Hour, nil)
	cancel()
	if ctx.Err() == nil {
		t.Error("cancel did not end Overall's context")
	}
}

func TestTransient(t *testing.T) {
	t.Parallel()
	api := func(code int, errCode jetstream.ErrorCode) error {
		return fmt.Errorf("reading stream: %w", &jetstream.APIError{Code: code, ErrorCode: errCode, Description: "x"})
	}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{fmt.Errorf("storing: %w", nats.ErrTimeout), true},
		{nats.ErrNoResponders, true},
		{jetstream.ErrNoStreamResponse, true},
		{nats.ErrConnectionReconnecting, true},
		{api(503, 10008), true}, // JetStream system temporarily unavailable
		{jetstream.ErrJetStreamNotEnabled, true},
		{api(500, 10009), true},  // cluster can not handle request (not the leader)
		{api(400, 10005), true},  // no suitable peers for placement
		{api(500, 10118), true},  // stream is offline
		{api(500, 10119), true},  // consumer is offline (just created on a cluster, or its server down)
		{api(429, 10210), true},  // too many atomic batches in flight
		{api(429, 10211), true},  // too many fast batches in flight
		{api(429, 10167), true},  // too many requests (the stream's ingest queue is full)
		{api(404, 10059), false}, // stream not found
		{api(400, 10199), false}, // atomic batch too large: the publisher's to mend
		{jetstream.ErrConsumerNotFound, false},
		{api(400, 10071), false}, // wrong last sequence: the publisher's to judge
		{ErrDenied, false},
		{nats.ErrConnectionClosed, false},
		{context.Canceled, false},
		{errors.New("refused"), false},
	} {
		if got := Transient(c.err); got != c.want {
			t.Errorf("Transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestRetry(t *testing.T) {
	t.Parallel()
	c := &Conn{}
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()

	// Passing failures are tried again until fn succeeds.
	tries := 0
	err := c.Retry(ctx, log, "test", nil, func(context.Context) error {
		if tries++; tries < 3 {
			return fmt.Errorf("reading: %w", nats.ErrNoResponders)
		}
		return nil
	})
	if err != nil || tries != 3 {
		t.Fatalf("Retry: %v after %d tries, want success after 3", err, tries)
	}

	// Any other failure is returned at once, as it is.
	tries = 0
	refused := errors.New("refused")
	if err := c.Retry(ctx, log, "test", nil, func(context.Context) error { tries++; return refused }); err != refused || tries != 1 {
		t.Fatalf("Retry: %v after %d tries, want %v after 1", err, tries, refused)
	}

	// retry chooses what is passing.
	tries = 0
	err = c.Retry(ctx, log, "test", func(err error) bool { return errors.Is(err, refused) }, func(context.Context) error {
		if tries++; tries < 2 {
			return refused
		}
		return nil
	})
	if err != nil || tries != 2 {
		t.Fatalf("Retry with its own rule: %v after %d tries", err, tries)
	}

	// When ctx ends, the last failure fn met is returned (not the
	// cancellation of the request ctx's end cut short), with why.
	cause := errors.New("no success within the 300ms timeout")
	octx, cancel := Overall(ctx, 300*time.Millisecond, cause)
	defer cancel()
	err = c.Retry(octx, log, "test", nil, func(ctx context.Context) error {
		rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		<-rctx.Done() // a request nobody answers, until its own deadline or ctx's end
		return fmt.Errorf("reading stream: %w", rctx.Err())
	})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, cause) || errors.Is(err, context.Canceled) {
		t.Fatalf("Retry after its context ended: %v; want the request's deadline and the cause", err)
	}
}

// TestBackoff: each delay is in the upper half of one that doubles
// from the base to the cap, and a reset starts again from the base.
func TestBackoff(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		rand func(int64) int64
	}{
		{"lowest", func(int64) int64 { return 0 }},
		{"highest", func(n int64) int64 { return n - 1 }},
		{"random", rand.New(rand.NewPCG(3, 4)).Int64N},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := NewBackoff(time.Second, time.Minute)
			b.rand = tc.rand
			want := time.Second
			for i := range 10 {
				d := b.Next()
				if d < want/2 || d >= want {
					t.Errorf("delay %d: %v, want in [%v, %v)", i+1, d, want/2, want)
				}
				want = min(2*want, time.Minute)
			}
			b.Reset()
			if d := b.Next(); d < 500*time.Millisecond || d >= time.Second {
				t.Errorf("after reset: %v, want in [500ms, 1s)", d)
			}
		})
	}
}
