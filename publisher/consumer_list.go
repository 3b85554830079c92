// Listing the stream's consumers page by page, each page a request with
// its own deadline, and telling apart the consumers the servers name but
// cannot describe (their server is down).

package publisher

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/wire"
)

// listConsumers returns the stream's node consumers by node name, and the
// names of the nodes whose consumer the servers know of but could not
// describe: on a cluster, a consumer whose only server (replicas 1), or
// whose leader, is down. Those are neither created nor updated now;
// nodes whose consumer is reachable are served as usual.
//
// It reads the consumer list API itself, page by page (at most 256 a
// page; consumerPage, each request with its own deadline). The JetStream
// client's lister counts a page by the consumers it describes, and asks for the same page forever once the rest of the list
// is consumers the servers could not describe, until the publish times
// out: a publish failed while one server of a cluster was down.
//
// The session lists once (session.listed) and keeps its own changes in
// the listing (session.changed); the caller does not modify it.
func (s *session) listConsumers(ctx context.Context) (map[string]*jetstream.ConsumerInfo, []string, error) {
	if s.listing != nil {
		<-s.listing // prefetchConsumers's; if it failed, list again
		s.listing = nil
	}
	if s.listed != nil {
		return s.listed.existing, s.listed.unreachable, nil
	}
	return s.list(ctx)
}

// prefetchConsumers starts listConsumers's listing in the background,
// unless the session has it: a publish reads the stream and seals its
// groups meanwhile (listing 10,000 consumers and sealing for them take
// about as long). listConsumers waits for it. ctx bounds it: the call's
// (Publisher.bound), which ends when the call returns, so a listing no
// one waited for (the publish was refused first) ends then too.
func (s *session) prefetchConsumers(ctx context.Context) {
	if s.listing != nil || s.listed != nil {
		return
	}
	done := make(chan struct{})
	s.listing = done
	go func() {
		defer close(done)
		// A failed listing leaves s.listed nil: listConsumers lists again.
		_, _, _ = s.list(ctx)
	}()
}

// list reads the listing (listConsumers) and keeps it in s.listed.
func (s *session) list(ctx context.Context) (map[string]*jetstream.ConsumerInfo, []string, error) {
	var out map[string]*jetstream.ConsumerInfo
	var unreachable []string
	run := s.progress(PhaseListing, s.stream.CachedInfo().State.Consumers)
	defer run.end()
	err := s.do(ctx, "listing consumers", func(ctx context.Context) error {
		out, unreachable = map[string]*jetstream.ConsumerInfo{}, nil
		seen := 0
		add := func(name string, info *jetstream.ConsumerInfo) {
			node, ok := strings.CutPrefix(name, wire.ConsumerPrefix)
			if !ok || wire.CheckNodeName(node) != nil {
				return
			}
			if info == nil {
				unreachable = append(unreachable, node)
			} else if info.Config.Durable != "" {
				out[node] = info
			}
		}
		for offset := 0; ; {
			page, err := s.consumerPage(ctx, offset)
			if err != nil {
				return fmt.Errorf("listing consumers of stream %s: %w", wire.Stream, err)
			}
			missing := map[string]bool{}
			for _, name := range page.Missing {
				missing[name] = true
				add(name, nil)
			}
			for _, info := range page.Consumers {
				if !missing[info.Name] {
					add(info.Name, info)
				}
			}
			n := len(page.Consumers) + len(page.Missing)
			for _, info := range page.Consumers {
				if missing[info.Name] {
					n-- // an offline one, described from its assignment and named missing too
				}
			}
			if n > 0 {
				seen += n
				run.set(seen)
			}
			offset += n
			if n == 0 || offset >= page.Total {
				return nil
			}
		}
	})
	if err != nil {
		return nil, nil, err
	}
	slices.Sort(unreachable)
	s.listed = &consumerListing{existing: out, unreachable: slices.Compact(unreachable)}
	return s.listed.existing, s.listed.unreachable, nil
}

// consumerPage is one page of the stream's consumer listing, as the server
// sends it ($JS.API.CONSUMER.LIST.<stream>, the request the client's
// ListConsumers makes): the consumers from offset on that it could list,
// and the names of those it could not.
type consumerPage struct {
	Total     int                       `json:"total"`
	Offset    int                       `json:"offset"`
	Limit     int                       `json:"limit"`
	Consumers []*jetstream.ConsumerInfo `json:"consumers"`
	Missing   []string                  `json:"missing"`
	Error     *jetstream.APIError       `json:"error"`
}

// consumerPage asks for the page of the consumer listing at offset, waiting
// at most natsconn.RequestTimeout. The session's JetStream handle uses the
// default API prefix (jetstream.New, no domain), and so does this request.
func (s *session) consumerPage(ctx context.Context, offset int) (*consumerPage, error) {
	req, err := json.Marshal(struct {
		Offset int `json:"offset"`
	}{offset})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, natsconn.RequestTimeout)
	defer cancel()
	msg, err := s.nc.RequestWithContext(ctx, jetstream.DefaultAPIPrefix+"CONSUMER.LIST."+wire.Stream, req)
	if err != nil {
		return nil, err
	}
	var page consumerPage
	if err := json.Unmarshal(msg.Data, &page); err != nil {
		return nil, fmt.Errorf("reading the consumer listing: %w", err)
	}
	if page.Error != nil {
		return nil, page.Error
	}
	return &page, nil
}
