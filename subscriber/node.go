package subscriber

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/internal/metrics"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/wire"
)

const (
	// maxBatch bounds how many messages one batch holds; it matches the
	// consumer's MaxAckPending.
	maxBatch = 1000
	// batchWait is how long Run waits for the rest of a batch the server
	// announced (NumPending > 0) before it processes what it has.
	batchWait = 2 * time.Second
	// retryBase and retryMax bound the delay before a message that failed
	// for a transient reason is delivered again.
	retryBase = 5 * time.Second
	retryMax  = 5 * time.Minute
	// rebindMax caps the wait between attempts to bind the consumer in Run.
	rebindMax = time.Minute
	// natsTimeout bounds each JetStream call that Sync and Run make
	// (consumer lookup, acks, status writes).
	natsTimeout = 10 * time.Second
	// emptyWait is how long Sync waits for a message when the consumer
	// says none is pending (see fetchPending).
	emptyWait = 300 * time.Millisecond
	// statusRetry is how soon Run writes its records again after one
	// could not be written.
	statusRetry = 10 * time.Second
)

// Node receives the bundles of one node's certificates from its durable
// consumer, checks them and stages them. Sync and Run may be called in turn;
// a Node serialises the batches it processes.
type Node struct {
	cfg   Config
	log   *slog.Logger
	stage *Stage
	names []string // configured certificate names, sorted

	mu sync.Mutex // held while a batch is processed

	status statusWriter

	installers map[string]*installer // by certificate name
	wake       chan struct{}         // something was staged: Run's scheduler looks again
	planned    map[string]string     // scheduler: the plan last logged per certificate
	metrics    *metrics.Node         // nil unless MetricsListen is set
	stageErr   error                 // why the stage folder is unsafe; stage is nil then

	// onStaged, when set (tests), is called after a bundle is staged.
	onStaged func(*Staged)
	// retryBase and retryMax bound the delay before a message that failed
	// for a transient reason is delivered again (retryBase and retryMax
	// unless a test sets them).
	retryBase, retryMax time.Duration
}

// New checks cfg and applies its defaults (Config.Validate), and opens the
// stage folder (creating it, and removing what a crash left behind). It
// does not connect to NATS. The caller's Certificates map is not changed.
func New(cfg Config, log *slog.Logger) (*Node, error) {
	cfg.Certificates = maps.Clone(cfg.Certificates)
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("configuring node %q: %w", cfg.Node, err)
	}
	if len(cfg.Identities) == 0 {
		return nil, fmt.Errorf("configuring node %q: no identity to open bundles with", cfg.Node)
	}
	names := slices.Sorted(maps.Keys(cfg.Certificates))
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// An unsafe stage folder still makes a Node, so that Sync and Run can
	// report the refusal in the status bucket before they fail with it.
	stage, err := OpenStage(cfg.StageDir, log)
	if err != nil && !errors.Is(err, ErrUnsafePath) {
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, stage: stage, stageErr: err, names: names,
		installers: map[string]*installer{},
		wake:       make(chan struct{}, 1), planned: map[string]string{},
		retryBase: retryBase, retryMax: retryMax}
	if cfg.MetricsListen != "" {
		n.metrics = metrics.New(cfg.Node, cfg.Version)
		n.knownMetrics()
	}
	for name, c := range cfg.Certificates {
		n.installers[name] = &installer{c: c, log: log, now: cfg.Now, node: cfg.Node}
	}
	n.status.init(n, cfg, names, log)
	return n, nil
}

// Stage is the node's stage folder.
func (n *Node) Stage() *Stage { return n.stage }

// Sync makes one pass: it connects, binds the node's consumer, receives
// every bundle pending on it, decides on each (stage, skip or refuse),
// acknowledges them, writes the node's status records and returns what
// happened. ctx bounds the whole pass, connecting included: give it a
// deadline. Sync fails only when it cannot do its job (NATS unreachable,
// consumer missing); refused bundles are in the report (see Report.Failed).
func (n *Node) Sync(ctx context.Context) (*Report, error) {
	if n.stageErr != nil {
		return nil, n.reportUnsafeStage(ctx)
	}
	nc, err := natsconn.Connect(ctx, n.natsOptions(), n.log)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc.Conn)
	if err != nil {
		return nil, fmt.Errorf("opening jetstream: %w", err)
	}
	cons, err := n.bind(ctx, js, nc)
	if err != nil {
		return nil, err
	}
	rep := &Report{}
	for {
		msgs, more, err := fetchPending(ctx, cons)
		if err != nil {
			return rep, nc.Explain(fmt.Errorf("fetching from consumer %q: %w", wire.ConsumerName(n.cfg.Node), err))
		}
		if len(msgs) > 0 {
			rep.Results = append(rep.Results, n.process(ctx, js, msgs)...)
		}
		if !more {
			break
		}
	}
	rep.Installs, rep.Scheduled = n.installDue(ctx)
	n.status.writeAll(ctx, js)
	return rep, nil
}

// fetchPending fetches what the consumer holds for the node now, up to
// maxBatch messages, and says whether more is pending. It asks the server
// how many messages are pending and waits for exactly those (a no-wait
// request can miss a message stored a moment ago), then takes what is
// ready for redelivery.
func fetchPending(ctx context.Context, cons jetstream.Consumer) (msgs []jetstream.Msg, more bool, err error) {
	ictx, cancel := context.WithTimeout(ctx, natsTimeout)
	info, err := cons.Info(ictx)
	cancel()
	if err != nil {
		return nil, false, err
	}
	pending := info.NumPending
	for len(msgs) < maxBatch {
		room := min(maxBatch-len(msgs), 256)
		var batch jetstream.MessageBatch
		if pending > 0 {
			batch, err = cons.Fetch(int(min(pending, uint64(room))), jetstream.FetchMaxWait(natsTimeout))
		} else if len(msgs) == 0 {
			// The server acknowledges a publish before it counts the
			// message as pending on each consumer, so "nothing pending"
			// right after a publish may be wrong: wait a little for it.
			batch, err = cons.Fetch(room, jetstream.FetchMaxWait(emptyWait))
		} else {
			batch, err = cons.FetchNoWait(room)
		}
		if err != nil {
			return msgs, false, err
		}
		got := 0
		for m := range batch.Messages() {
			msgs = append(msgs, m)
			got++
			pending = 0
			if md, err := m.Metadata(); err == nil {
				pending = md.NumPending
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return msgs, false, err
		}
		if got == 0 {
			return msgs, false, nil
		}
	}
	return msgs, true, nil
}

// Run is the node daemon: it connects (waiting as long as it takes), binds
// the node's consumer and processes bundles as they arrive, in batches of
// what the server has pending, so a node that was away stages only the
// newest of each certificate. It survives server restarts and lost
// connections, rebinding the consumer when needed, and refreshes its status
// records every StatusInterval. It returns nil once ctx ends, and an error
// only when it cannot start (such as a refused login).
func (n *Node) Run(ctx context.Context) error {
	if n.stageErr != nil {
		return n.reportUnsafeStage(ctx)
	}
	waitMetrics, err := n.serveMetrics(ctx)
	if err != nil {
		return err
	}
	defer waitMetrics()
	n.observeInstalled()
	nc, err := natsconn.Connect(ctx, n.natsOptions(), n.log)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc.Conn)
	if err != nil {
		return fmt.Errorf("opening jetstream: %w", err)
	}
	n.log.Info("node_started", "node", n.cfg.Node, "certificates", n.names)

	var wg sync.WaitGroup
	wg.Go(func() { n.refresh(ctx, js) })
	wg.Go(func() { n.scheduler(ctx, js) })
	defer wg.Wait()

	wait := time.Second
	for {
		cons, err := n.bind(ctx, js, nc)
		if err == nil {
			var got bool
			got, err = n.consume(ctx, js, cons)
			if got {
				wait = time.Second
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		n.log.Warn("consumer_unavailable", "consumer", wire.ConsumerName(n.cfg.Node), "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(wait*2, rebindMax)
	}
}

// refresh writes every status record now and every StatusInterval until
// ctx ends, and again statusRetry after a record could not be written.
func (n *Node) refresh(ctx context.Context, js jetstream.JetStream) {
	for {
		n.status.writeAll(ctx, js)
		wait := n.cfg.StatusInterval
		select {
		case <-n.status.retry:
			wait = min(wait, statusRetry)
		default:
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-n.status.retry:
			t.Stop()
			select {
			case <-ctx.Done():
				return
			case <-time.After(statusRetry):
			}
		}
	}
}

// consume processes messages from cons until ctx ends or the pull
// subscription fails for good (the consumer was deleted, say). It reports
// whether it received anything.
func (n *Node) consume(ctx context.Context, js jetstream.JetStream, cons jetstream.Consumer) (bool, error) {
	it, err := cons.Messages()
	if err != nil {
		return false, fmt.Errorf("pulling from consumer %q: %w", wire.ConsumerName(n.cfg.Node), err)
	}
	defer it.Stop()
	got := false
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return got, fmt.Errorf("pulling from consumer %q: %w", wire.ConsumerName(n.cfg.Node), err)
		}
		got = true
		// The server says how many more it holds for us: gather them so
		// that superseded versions are skipped rather than staged in turn.
		batch := []jetstream.Msg{msg}
		for pending(msg) > 0 && len(batch) < maxBatch {
			m, err := it.Next(jetstream.NextMaxWait(batchWait))
			if err != nil {
				break // process what we have; the next Next reports a lasting failure
			}
			batch = append(batch, m)
			msg = m
		}
		n.metrics.Pending(pending(msg))
		n.process(ctx, js, batch)
	}
}

// pending is the number of messages the server holds for the consumer
// after m.
func pending(m jetstream.Msg) uint64 {
	md, err := m.Metadata()
	if err != nil {
		return 0
	}
	return md.NumPending
}

// natsOptions are the options of the node's connections (Validate named
// them after the node and gave them its inbox prefix).
func (n *Node) natsOptions() natsconn.Options { return n.cfg.NATS }

// bind looks up the node's durable consumer. If it does not exist, the
// node tries to create it, as an open server allows; with least-privilege
// credentials that fails and the error wraps ErrNoConsumer.
func (n *Node) bind(ctx context.Context, js jetstream.JetStream, nc *natsconn.Conn) (jetstream.Consumer, error) {
	name := wire.ConsumerName(n.cfg.Node)
	ctx, cancel := context.WithTimeout(ctx, natsTimeout)
	defer cancel()
	var cons jetstream.Consumer
	err := nc.Call(ctx, func(ctx context.Context) (err error) {
		cons, err = js.Consumer(ctx, wire.Stream, name)
		return err
	})
	switch {
	case err == nil:
		n.checkFilter(cons.CachedInfo())
		return cons, nil
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("binding consumer %q: stream %s not found (nothing published yet?): %w", name, wire.Stream, ErrNoConsumer)
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, fmt.Errorf("binding consumer %q: %w", name, err)
	}
	err = nc.Call(ctx, func(ctx context.Context) (err error) {
		cons, err = js.CreateConsumer(ctx, wire.Stream, wire.ConsumerConfig(n.cfg.Node, n.names))
		if errors.Is(err, jetstream.ErrConsumerExists) {
			cons, err = js.Consumer(ctx, wire.Stream, name) // created meanwhile by someone else
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("binding consumer %q: it does not exist and this node may not create it (%v); the management side creates it when it runs certsync publish or republish: %w",
			name, err, ErrNoConsumer)
	}
	n.log.Info("consumer_created", "consumer", name, "certificates", n.names)
	return cons, nil
}

// checkFilter warns when the consumer does not deliver every configured
// certificate: the node may not change it, the management side must.
func (n *Node) checkFilter(info *jetstream.ConsumerInfo) {
	if info == nil {
		return
	}
	have := info.Config.FilterSubjects
	if info.Config.FilterSubject != "" {
		have = append(have, info.Config.FilterSubject)
	}
	var missing []string
	for _, name := range n.names {
		if !slices.Contains(have, wire.Subject(name)) && !slices.Contains(have, wire.Subjects) {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		n.log.Warn("consumer_filter_mismatch", "consumer", info.Name, "missing", missing,
			"hint", "add this node to these certificates on the management side and run certsync republish")
	}
}

// reportUnsafeStage marks every certificate failed with the reason the
// stage folder was refused, as far as NATS answers within statusTimeout, and
// returns that reason: the node does nothing else until it is fixed.
func (n *Node) reportUnsafeStage(ctx context.Context) error {
	for _, name := range n.names {
		n.status.failed(name, 0, n.stageErr)
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	if err := n.ReportStatus(ctx); err != nil {
		n.log.Warn("status_unavailable", "error", err)
	}
	return n.stageErr
}
