package publisher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
)

// Dropped is a node that no longer receives certificates it was set up to
// receive. It may hold their private keys, so they should be reissued.
type Dropped struct {
	// Node is the node's name.
	Node string
	// Certificates are the certificates it may hold, sorted: those its
	// consumer stopped delivering, and, when the consumer was deleted, also
	// those it ever reported in the status bucket.
	Certificates []string
	// Removed is true when the node's consumer was deleted: the node left
	// the configuration, or has no certificate left.
	Removed bool
}

// consumerPlan is what updateConsumers found and did.
type consumerPlan struct {
	missing []string        // nodes without a consumer, to create
	added   map[string]bool // certificates added to an existing consumer
	// addedSubjects are the bundle and group subjects added to an existing
	// consumer: a certificate added, or a node moved to another recipient
	// group. What such a subject holds is stored again (session.publish):
	// JetStream does not deliver it to the consumer that gained it.
	addedSubjects map[string]bool
	dropped       []Dropped
}

// updateConsumers brings the existing consumers of the nodes in want (node
// name -> certificate names) in line with it. Without exact, subjects are
// only added, never removed, and other nodes' consumers are left alone.
// With exact, each consumer's subjects become exactly want's, and the
// consumers of nodes missing from want are deleted. It carries on past a
// failing consumer and returns the joined errors. When the stream holds
// the rollout subjects, each certificate's rollout subject is filtered
// beside its bundle subject (wire.ConsumerConfig): a consumer made before
// rollouts gains them here, the first time publish or republish runs
// after Setup added them to the stream. A certificate's bundle subject
// is the one its recipient group layout gives the node (consumerSubjects),
// which replaces any other of the certificate's, with or without exact.
// A certificate counts as added or removed when the consumer gains or
// loses all its subjects: a node moved from one group to another is
// neither (it only gains a subject, addedSubjects).
func (s *session) updateConsumers(ctx context.Context, want map[string][]string, exact bool) (*consumerPlan, error) {
	existing, unreachable, err := s.listConsumers(ctx)
	if err != nil {
		return nil, err
	}
	plan := &consumerPlan{added: map[string]bool{}, addedSubjects: map[string]bool{}}
	if len(unreachable) > 0 {
		s.log.Warn("consumers_unreachable", "count", len(unreachable), "nodes", FirstNames(unreachable, 10, ","),
			"hint", "their server is down or has no leader for them: they are left as they are, and their nodes receive what is stored once it is back")
	}
	var errs []error
	// The consumers to update are known first, so that their progress
	// has a total.
	type update struct {
		node       string
		have, next []string
		cfg        jetstream.ConsumerConfig
	}
	var updates []update
	for _, node := range sortedKeys(want) {
		info, ok := existing[node]
		if !ok && slices.Contains(unreachable, node) {
			continue
		}
		if !ok {
			plan.missing = append(plan.missing, node)
			continue
		}
		have := filterSubjects(info.Config)
		next := s.consumerSubjects(node, want[node], have)
		if !exact {
			next = union(next, slices.DeleteFunc(slices.Clone(have), s.replaced(node)))
		}
		cfg := consumerUpdate(info.Config, node, next)
		if consumerDiffers(info.Config, cfg) {
			updates = append(updates, update{node: node, have: have, next: next, cfg: cfg})
		}
	}
	run := s.progress(PhaseUpdating, len(updates))
	for i, u := range updates {
		node, have, next, cfg := u.node, u.have, u.next, u.cfg
		err := s.do(ctx, "updating consumer", func(ctx context.Context) error {
			c, err := s.js.UpdateConsumer(ctx, wire.Stream, cfg)
			if err != nil {
				return fmt.Errorf("updating consumer %q: %w", wire.ConsumerName(node), err)
			}
			s.changed(node, c.CachedInfo())
			return nil
		})
		run.set(i + 1)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		added, removed := minus(certsOfSubjects(next), certsOfSubjects(have)), minus(certsOfSubjects(have), certsOfSubjects(next))
		for _, c := range added {
			plan.added[c] = true
		}
		for _, subj := range minus(next, have) {
			plan.addedSubjects[subj] = true
		}
		if len(removed) > 0 {
			plan.dropped = append(plan.dropped, Dropped{Node: node, Certificates: removed})
		}
		s.log.Info("consumer_updated", "consumer", wire.ConsumerName(node),
			"added", strings.Join(added, ","), "removed", strings.Join(removed, ","))
	}
	run.end()
	if exact {
		var gone []string
		for _, node := range sortedKeys(existing) {
			if _, ok := want[node]; !ok {
				gone = append(gone, node)
			}
		}
		run := s.progress(PhaseDeleting, len(gone))
		for i, node := range gone {
			d, err := s.deleteConsumer(ctx, node, existing[node])
			run.set(i + 1)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			plan.dropped = append(plan.dropped, d)
		}
		run.end()
	}
	slices.SortFunc(plan.dropped, func(a, b Dropped) int { return strings.Compare(a.Node, b.Node) })
	return plan, errors.Join(errs...)
}

// deleteConsumer deletes a node's consumer and says which certificates the
// node may hold.
func (s *session) deleteConsumer(ctx context.Context, node string, info *jetstream.ConsumerInfo) (Dropped, error) {
	certs := certsOfSubjects(filterSubjects(info.Config))
	reported, err := s.statusCerts(ctx, node)
	if err != nil {
		return Dropped{}, err
	}
	certs = union(certs, reported)
	err = s.do(ctx, "deleting consumer", func(ctx context.Context) error {
		err := s.js.DeleteConsumer(ctx, wire.Stream, wire.ConsumerName(node))
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("deleting consumer %q: %w", wire.ConsumerName(node), err)
		}
		s.changed(node, nil)
		return nil
	})
	if err != nil {
		return Dropped{}, err
	}
	s.log.Warn("consumer_deleted", "consumer", wire.ConsumerName(node), "node", node,
		"may_hold", strings.Join(certs, ","), "reason", "node has no certificate in the configuration")
	return Dropped{Node: node, Certificates: certs, Removed: true}, nil
}

// createConsumers creates the consumers of the given nodes, each on the
// subjects of its certificates in want, on Stream.ConsumerReplicas
// servers (an existing consumer keeps its replicas: updateConsumers
// leaves them). When the stream holds as many
// consumers as it allows, it stops there with one error that says how
// many nodes are left without one (consumersFull).
func (s *session) createConsumers(ctx context.Context, want map[string][]string, nodes []string) error {
	var errs []error
	run := s.progress(PhaseCreating, len(nodes))
	defer run.end()
	for i, node := range nodes {
		cfg := wire.ConsumerConfig(node, want[node], s.rollouts)
		cfg.FilterSubjects = s.consumerSubjects(node, want[node], nil)
		cfg.Replicas = s.p.cfg.Stream.ConsumerReplicas
		err := s.do(ctx, "creating consumer", func(ctx context.Context) error {
			c, err := s.js.CreateOrUpdateConsumer(ctx, wire.Stream, cfg)
			if err != nil {
				return fmt.Errorf("creating consumer %q: %w", cfg.Durable, err)
			}
			s.changed(node, c.CachedInfo())
			return nil
		})
		run.set(i + 1)
		if errors.Is(err, jetstream.ErrMaximumConsumersLimit) {
			errs = append(errs, s.consumersFull(ctx, len(nodes)-i, err))
			break
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.log.Info("consumer_created", "consumer", cfg.Durable, "certificates", strings.Join(want[node], ","))
	}
	return errors.Join(errs...)
}

// consumersFull is the error of creating a consumer that the server
// refused because the stream, or the NATS account, holds as many as it
// allows, with missing nodes left without one. The account's JetStream
// max_consumers, when it is set and the lower, is the operator's to
// raise. Else a stream that allows fewer than wire.MaxConsumers (set up
// before certsync set its own limit: the server's default of 1,000) is
// ErrNotSetUp: the admin's certsync setup raises it.
func (s *session) consumersFull(ctx context.Context, missing int, err error) error {
	limit := s.stream.CachedInfo().Config.MaxConsumers
	if info, aerr := s.js.AccountInfo(ctx); aerr == nil && info.Limits.MaxConsumers > 0 && (limit <= 0 || info.Limits.MaxConsumers < limit) {
		return fmt.Errorf("%d nodes have no consumer: the NATS account holds the %d consumers its JetStream limit max_consumers allows: raise that limit to the number of nodes and more, or remove it: %w",
			missing, info.Limits.MaxConsumers, err)
	}
	if limit < wire.MaxConsumers {
		allows := fmt.Sprintf("%d consumers", limit)
		if limit <= 0 {
			allows = "the NATS server's default number of consumers (1,000, its default_max_consumers)"
		}
		return fmt.Errorf("%d nodes have no consumer: stream %q allows %s, and is %w: it was set up before certsync let it hold %d; the admin raises the limit with certsync setup: %w",
			missing, wire.Stream, allows, ErrNotSetUp, wire.MaxConsumers, err)
	}
	return fmt.Errorf("%d nodes have no consumer: stream %q holds the %d consumers it allows: %w", missing, wire.Stream, limit, err)
}

// statusCerts lists the certificates a node reported in the status bucket.
func (s *session) statusCerts(ctx context.Context, node string) ([]string, error) {
	var certs []string
	err := s.do(ctx, "listing status keys", func(ctx context.Context) error {
		certs = nil
		kl, err := s.status.ListKeysFiltered(ctx, node+".>")
		if err != nil {
			return fmt.Errorf("listing status keys of node %q: %w", node, err)
		}
		for key := range kl.Keys() {
			if n, cert, err := wire.SplitStatusKey(key); err == nil && n == node {
				certs = append(certs, cert)
			}
		}
		return ctx.Err()
	})
	slices.Sort(certs)
	return slices.Compact(certs), err
}

// repostRollout stores the newest rollout record of name again, as it is,
// when it is the publisher's (signed with its key) and is about res, the
// bundle just stored or found unchanged: a consumer that has just gained
// the certificate's subjects is not delivered their earlier messages, and
// a node that stages a held bundle needs the record that releases it (say
// the complete one, All, of a rollout that ended before the node was
// added). Nodes keep the newest record by generation, so a copy changes
// nothing for those that hold it. It is stored only if the subject's
// newest sequence is still the one read, so it never interleaves with the
// controller's records.
func (s *session) repostRollout(ctx context.Context, name string, res *Result) error {
	if !s.rollouts {
		return nil
	}
	subject := wire.RolloutSubject(name)
	return s.do(ctx, "storing the rollout record again", func(ctx context.Context) error {
		last, err := s.stream.GetLastMsgForSubject(ctx, subject)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return nil
		case err != nil:
			return fmt.Errorf("reading the newest rollout record of %q: %w", name, err)
		}
		r, _, err := crypto.VerifyRollout(last.Data, []crypto.PublicKey{s.p.cfg.SigningKey.Public()})
		if err != nil || r.Name != name || !r.For(res.Version, res.Fingerprint) {
			return nil // not ours, or about another bundle: nothing to release
		}
		msg := nats.NewMsg(subject)
		msg.Data = last.Data
		msg.Header.Set(wire.HeaderName, r.Name)
		msg.Header.Set(wire.HeaderVersion, strconv.FormatUint(r.Version, 10))
		msg.Header.Set(wire.HeaderFingerprint, r.Fingerprint.String())
		msg.Header.Set(wire.HeaderRolloutState, r.State)
		msg.Header.Set(wire.HeaderRolloutGeneration, strconv.FormatUint(r.Generation, 10))
		ack, err := s.js.PublishMsg(ctx, msg,
			jetstream.WithMsgID(fmt.Sprintf("rollout/%s/%d/%d", name, r.Generation, last.Sequence)),
			jetstream.WithExpectStream(wire.Stream),
			jetstream.WithExpectLastSequencePerSubject(last.Sequence))
		if err != nil {
			return fmt.Errorf("storing the rollout record of %q again: %w", name, err)
		}
		s.log.Info("rollout_record_reposted", "name", name, "sequence", ack.Sequence, "version", r.Version,
			"generation", r.Generation, "state", r.State, "reason", "a consumer gained the certificate")
		return nil
	})
}
