// The Node: New, and its entry points Sync, Run, Install and ReportStatus.

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

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/internal/metrics"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/wire"
)

const (
	// retryBase and retryMax bound the delay before a message that failed
	// for a transient reason is delivered again.
	retryBase = 5 * time.Second
	retryMax  = 5 * time.Minute
	// natsTimeout bounds how long Sync waits for the messages the
	// consumer said were pending. Each JetStream request of Sync and Run
	// (consumer lookup, acks, status writes) has its own
	// natsconn.RequestTimeout instead.
	natsTimeout = 10 * time.Second
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
	// rolloutFilter says, per certificate, whether the consumer as last
	// bound delivers its rollout records (checkFilter); nil before. Under mu.
	rolloutFilter map[string]bool

	// onStaged, when set (tests), is called after a bundle is staged.
	onStaged func(*Staged)
	// beforeLoad, when set (tests), is called when installDue found a
	// certificate's install due, before it loads the staged bundle.
	beforeLoad func(name string)
	// retryBase and retryMax bound the delay before a message that failed
	// for a transient reason is delivered again (retryBase and retryMax
	// unless a test sets them).
	retryBase, retryMax time.Duration
	// reconnectSpread bounds the delay after a reconnect before Run checks
	// its consumer (ReconnectSpread unless a test sets it; pacing.go).
	reconnectSpread time.Duration
	// spreadPerGroup makes the delivery spread (SpreadPerGroup unless a
	// test sets it; pacing.go).
	spreadPerGroup time.Duration
	// unrecorded counts, by certificate, the installs in a row that failed
	// before the install state could record it (retryUnrecorded).
	unrecordedMu sync.Mutex
	unrecorded   map[string]uint64
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
		retryBase: retryBase, retryMax: retryMax, reconnectSpread: ReconnectSpread, spreadPerGroup: SpreadPerGroup}
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
//
// A request NATS does not answer within natsconn.RequestTimeout (its
// leader died, the cluster is electing one) or answers with a passing
// failure (no responders, JetStream unavailable) is tried again with
// backoff (natsconn.Conn.Retry) until ctx ends: ctx's deadline bounds the
// pass, never one request.
func (n *Node) Sync(ctx context.Context) (*Report, error) {
	if n.stageErr != nil {
		return nil, n.reportUnsafeStage(ctx)
	}
	ctx, cancel := natsconn.Overall(ctx, 0, nil)
	defer cancel()
	nc, err := natsconn.Connect(ctx, n.natsOptions(), n.log)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		return nil, err
	}
	var cons jetstream.Consumer
	err = nc.Retry(ctx, n.log, "binding consumer", nil, func(ctx context.Context) (err error) {
		cons, err = n.bind(ctx, js, nc)
		return err
	})
	if err != nil {
		return nil, err
	}
	rep := &Report{}
	for {
		var msgs []jetstream.Msg
		var more bool
		err := nc.Retry(ctx, n.log, "fetching", nil, func(ctx context.Context) (err error) {
			msgs, more, err = fetchPending(ctx, cons)
			if err != nil && len(msgs) > 0 {
				// Process what came, then fetch again.
				more = true
				return nil
			}
			return err
		})
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
	js, err := nc.JetStream()
	if err != nil {
		return err
	}
	n.log.Info("node_started", "node", n.cfg.Node, "certificates", n.names)

	var wg sync.WaitGroup
	wg.Go(func() { n.refresh(ctx, js) })
	wg.Go(func() { n.scheduler(ctx, js) })
	defer wg.Wait()

	// Binding again waits a jittered, doubling delay (pacing.go): the
	// nodes that lost their consumer together do not all ask at once.
	wait := natsconn.NewBackoff(backoffBase, backoffMax)
	for {
		cons, err := n.bind(ctx, js, nc)
		if err == nil {
			var got bool
			got, err = n.consumeChecked(ctx, js, nc, cons)
			if got {
				wait.Reset()
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		d := wait.Next()
		n.log.Warn("consumer_unavailable", "consumer", wire.ConsumerName(n.cfg.Node), "error", err, "retry_in", d)
		if !sleep(ctx, d) {
			return nil
		}
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

// natsOptions are the options of the node's connections (Validate named
// them after the node and gave them its inbox prefix).
func (n *Node) natsOptions() natsconn.Options { return n.cfg.NATS }

// reportUnsafeStage marks every certificate failed with the reason the
// stage folder was refused, as far as NATS answers within statusTimeout, and
// returns that reason: the node does nothing else until it is fixed.
func (n *Node) reportUnsafeStage(ctx context.Context) error {
	for _, name := range n.names {
		n.status.failed(name, 0, n.stageErr, false)
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	if err := n.ReportStatus(ctx); err != nil {
		n.log.Warn("status_unavailable", "error", err)
	}
	return n.stageErr
}

// Install puts what is staged for the named certificates (all of them when
// names is empty) in service now, whatever their schedules, whatever a
// rollout's hold says and even before the certificate's NotBefore (with a
// warning for these two), trying again a version whose install failed
// before. A name that is not one of the
// node's certificates is an error, before anything is installed. It needs
// no NATS: ReportStatus tells the status bucket afterwards. The report's
// Failed says whether any install failed.
//
// For each certificate, under a lock shared with other certsync processes:
// the staged bundle is written into a new version folder beside
// install_dir; install_dir is pointed at it (one rename); check, reload and
// verify run; any failure points install_dir back at the previous version
// and runs reload again. ctx only decides whether an install starts: once
// started, it runs to its end (each command bounded by CommandTimeout,
// verify by VerifyTimeout), so a node asked to stop never leaves one half
// done.
func (n *Node) Install(ctx context.Context, names ...string) (*Report, error) {
	if n.stageErr != nil {
		return nil, n.reportUnsafeStage(ctx)
	}
	for _, name := range names {
		if _, ok := n.cfg.Certificates[name]; !ok {
			return nil, fmt.Errorf("installing %q: %w", name, ErrUnknownCertificate)
		}
	}
	if len(names) == 0 {
		names = n.names
	}
	rep := &Report{}
	for _, name := range names {
		if ctx.Err() != nil {
			break
		}
		meta, b, err := n.stage.Load(name)
		if errors.Is(err, ErrNotStaged) {
			n.log.Info("install_nothing_staged", "name", name)
			continue
		}
		if err != nil {
			rep.Installs = append(rep.Installs, InstallResult{Name: name, Outcome: InstallFailed, Err: err})
			continue
		}
		if meta.NotBefore.After(n.cfg.Now()) {
			n.log.Warn("install_not_yet_valid", "name", name, "version", meta.Version, "not_before", meta.NotBefore,
				"hint", "installed as asked; clients reject the certificate until then")
		}
		o := installOpts{force: true}
		if meta.Hold {
			// By hand, the hold does not apply; the record says whether
			// the rollout had released the node anyway.
			rel, err := n.stage.rollout(meta, n.cfg.Trusted)
			if err != nil {
				n.log.Warn("rollout_unreadable", "name", name, "error", err)
			}
			if rel != nil {
				o.generation = rel.Generation
			}
			if released(rel.record(), n.cfg.Node) {
				o.rollout = wire.RolloutReleased
			} else {
				n.log.Warn("install_hold_ignored", "name", name, "version", meta.Version, "fingerprint", meta.Fingerprint,
					"hint", "installed as asked; its rollout has not released this node")
			}
		}
		rep.Installs = append(rep.Installs, n.installers[name].install(ctx, b, meta, o))
	}
	return rep, nil
}

// ReportStatus connects to NATS and writes the status record of every
// certificate, for `certsync node install`. ctx bounds it, connecting
// included: give it a short deadline, status is not worth waiting for.
func (n *Node) ReportStatus(ctx context.Context) error {
	nc, err := natsconn.Connect(ctx, n.natsOptions(), n.log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		return err
	}
	n.status.writeAll(ctx, js)
	return nil
}
