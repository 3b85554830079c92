// What a node's consumer filters: the bundle or group subject of each of
// its certificates and, when the stream holds them, their rollout
// subjects (consumerSubjects), and the set arithmetic updateConsumers
// does on them.

package publisher

import (
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/internal/wire"
)

// consumerUpdate returns cur with the settings certsync owns taken from
// wire.ConsumerConfig and the given subjects. Settings that cannot change
// (deliver and ack policy, start) stay as they are.
func consumerUpdate(cur jetstream.ConsumerConfig, node string, subjects []string) jetstream.ConsumerConfig {
	want := wire.ConsumerConfig(node, nil, false)
	upd := cur
	upd.Description = want.Description
	upd.FilterSubject = ""
	upd.FilterSubjects = subjects
	upd.AckWait = want.AckWait
	upd.MaxDeliver = want.MaxDeliver
	upd.MaxAckPending = want.MaxAckPending
	upd.InactiveThreshold = 0
	return upd
}

// consumerDiffers tells whether updating cur to upd changes anything.
func consumerDiffers(cur, upd jetstream.ConsumerConfig) bool {
	return !slices.Equal(filterSubjects(cur), filterSubjects(upd)) ||
		cur.Description != upd.Description ||
		cur.AckWait != upd.AckWait ||
		cur.MaxDeliver != upd.MaxDeliver ||
		cur.MaxAckPending != upd.MaxAckPending ||
		cur.InactiveThreshold != upd.InactiveThreshold
}

// filterSubjects returns a consumer's filter subjects, sorted.
func filterSubjects(c jetstream.ConsumerConfig) []string {
	subjects := slices.Clone(c.FilterSubjects)
	if c.FilterSubject != "" {
		subjects = append(subjects, c.FilterSubject)
	}
	slices.Sort(subjects)
	return slices.Compact(subjects)
}

// subjectsOf returns the subjects a consumer of certs filters, sorted:
// their bundle subjects, and their rollout subjects too with rollouts.
func subjectsOf(certs []string, rollouts bool) []string {
	subjects := wire.ConsumerConfig("", certs, rollouts).FilterSubjects
	slices.Sort(subjects)
	return subjects
}

// consumerSubjects returns the subjects node's consumer filters for certs,
// sorted: for each certificate its rollout subject (when the stream holds
// them) and its bundle subject, which is the subject of the node's
// recipient group when this session laid the certificate out
// (s.layouts), else the bundle or group subjects of it the consumer has
// (have), else its bundle subject.
func (s *session) consumerSubjects(node string, certs, have []string) []string {
	var subjects []string
	for _, c := range certs {
		if s.rollouts {
			subjects = append(subjects, wire.RolloutSubject(c))
		}
		if subj, ok := s.layouts[c][node]; ok {
			subjects = append(subjects, subj)
			continue
		}
		var kept []string
		for _, h := range have {
			if name, _, err := wire.ParseBundleSubject(h); err == nil && name == c {
				kept = append(kept, h)
			}
		}
		if len(kept) == 0 {
			kept = []string{wire.Subject(c)}
		}
		subjects = append(subjects, kept...)
	}
	slices.Sort(subjects)
	return slices.Compact(subjects)
}

// replaced reports, for a subject node's consumer has, whether it is a
// bundle or group subject of a certificate this session laid out on
// another subject for node: updateConsumers drops it.
func (s *session) replaced(node string) func(string) bool {
	return func(subj string) bool {
		name, _, err := wire.ParseBundleSubject(subj)
		if err != nil {
			return false
		}
		want, ok := s.layouts[name][node]
		return ok && want != subj
	}
}

// certsOfSubjects returns the certificate names of the bundle and group
// subjects among subjects, sorted, each once.
func certsOfSubjects(subjects []string) []string {
	var certs []string
	for _, subj := range subjects {
		if name, _, err := wire.ParseBundleSubject(subj); err == nil {
			certs = append(certs, name)
		}
	}
	slices.Sort(certs)
	return slices.Compact(certs)
}

// union returns the sorted, distinct elements of a and b.
func union(a, b []string) []string {
	u := append(slices.Clone(a), b...)
	slices.Sort(u)
	return slices.Compact(u)
}

// minus returns the elements of a not in b.
func minus(a, b []string) []string {
	var d []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			d = append(d, x)
		}
	}
	return d
}
