package publisher

import (
	"maps"
	"slices"
	"time"

	"github.com/certsync/certsync/internal/field"
)

// Rollout policy defaults, for the fields of a RolloutPolicy left zero.
const (
	// DefaultSoak is RolloutPolicy.Soak's default.
	DefaultSoak = 10 * time.Minute
	// DefaultWaveDeadline is RolloutPolicy.WaveDeadline's default.
	DefaultWaveDeadline = time.Hour
)

// RolloutPolicy stages how a new certificate goes into service: the
// canaries first, then waves of the other nodes, each wave released only
// once every node of the one before has been healthy for Soak, and a halt
// when more nodes fail than MaxFailures allows. A certificate with a
// policy is sealed with the hold record; the controller
// (Publisher.RolloutStep) releases it with signed rollout records.
// docs/CONTRACT.md, "Rollouts", says it from the outside.
type RolloutPolicy struct {
	// Canary names the nodes that install first, or, when empty,
	// CanaryPercent gives them as a percentage of the certificate's nodes,
	// rounded up (the first in name order). A certificate's canaries are
	// the listed nodes that receive it. No canary at all is allowed: the
	// first wave is then released at once.
	Canary        []string
	CanaryPercent int
	// Waves are cumulative percentages of the other nodes (canaries are
	// never in a wave), strictly increasing, the last 100. Empty means one
	// wave of 100%.
	Waves []int
	// Soak is how long every node of a wave must be healthy before the
	// next is released (default DefaultSoak; a negative value is refused,
	// and SoakZero makes it none).
	Soak time.Duration
	// WaveDeadline is how long a released node has to report the new
	// certificate installed (and served, where it verifies) before it
	// counts as failed; no report counts as a failure (default
	// DefaultWaveDeadline).
	WaveDeadline time.Duration
	// MaxFailures is how many failed nodes a rollout tolerates (counting
	// every node released so far); one more halts it. MaxFailuresPercent,
	// when not zero, gives it instead as a percentage of the nodes
	// released so far, rounded down. Both zero: the first failure halts.
	MaxFailures        int
	MaxFailuresPercent int
}

// SoakZero is the Soak that means "no soak": a zero Soak takes the default.
const SoakZero = time.Duration(-1) << 62

// validate applies the defaults and checks p at path (the setting's
// path); nodes are every configured node.
func (p *RolloutPolicy) validate(path string, nodes map[string]string) error {
	for i, n := range p.Canary {
		switch {
		case nodes[n] == "":
			return field.Errorf(field.Item(field.Join(path, "canary"), i), "unknown node %q", n)
		case slices.Contains(p.Canary[:i], n):
			return field.Errorf(field.Item(field.Join(path, "canary"), i), "node %q listed twice", n)
		}
	}
	if len(p.Canary) > 0 && p.CanaryPercent != 0 {
		return field.Errorf(field.Join(path, "canary"), "give nodes or a percentage, not both")
	}
	if p.CanaryPercent < 0 || p.CanaryPercent > 100 {
		return field.Errorf(field.Join(path, "canary"), "want a percentage from 0%% to 100%%, got %d%%", p.CanaryPercent)
	}
	if len(p.Waves) == 0 {
		p.Waves = []int{100}
	}
	for i, w := range p.Waves {
		switch {
		case w < 1 || w > 100:
			return field.Errorf(field.Item(field.Join(path, "waves"), i), "want a percentage from 1%% to 100%%, got %d%%", w)
		case i > 0 && w <= p.Waves[i-1]:
			return field.Errorf(field.Item(field.Join(path, "waves"), i), "%d%% does not grow from %d%%: waves are cumulative", w, p.Waves[i-1])
		}
	}
	if last := p.Waves[len(p.Waves)-1]; last != 100 {
		return field.Errorf(field.Join(path, "waves"), "the last wave is %d%%, want 100%%: every node must be released in the end", last)
	}
	switch {
	case p.Soak == 0:
		p.Soak = DefaultSoak
	case p.Soak == SoakZero:
	case p.Soak < 0:
		return field.Errorf(field.Join(path, "soak"), "want a duration of 0s or more, got %v", p.Soak)
	}
	switch {
	case p.WaveDeadline == 0:
		p.WaveDeadline = DefaultWaveDeadline
	case p.WaveDeadline < 0:
		return field.Errorf(field.Join(path, "wave_deadline"), "want a positive duration, got %v", p.WaveDeadline)
	}
	if p.MaxFailures < 0 {
		return field.Errorf(field.Join(path, "max_failures"), "want 0 or more, got %d", p.MaxFailures)
	}
	if p.MaxFailuresPercent < 0 || p.MaxFailuresPercent > 100 {
		return field.Errorf(field.Join(path, "max_failures"), "want a percentage from 0%% to 100%%, got %d%%", p.MaxFailuresPercent)
	}
	if p.MaxFailures != 0 && p.MaxFailuresPercent != 0 {
		return field.Errorf(field.Join(path, "max_failures"), "give a number or a percentage, not both")
	}
	return nil
}

// SoakTime is the policy's soak as a duration (SoakZero is 0).
func (p *RolloutPolicy) SoakTime() time.Duration {
	if p.Soak == SoakZero {
		return 0
	}
	return p.Soak
}

// Policy returns the rollout policy of the certificate name: its own, the
// default, or nil (none: it goes into service at once, as without
// rollouts). The Config must have passed Validate.
func (c *Config) Policy(name string) *RolloutPolicy {
	if p, ok := c.Rollouts[name]; ok {
		return p
	}
	return c.Rollout
}

// checkRollouts validates the default and per-certificate policies.
func (c *Config) checkRollouts() error {
	if c.Rollout != nil {
		if err := c.Rollout.validate("rollout", c.Nodes); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Rollouts)) {
		p := field.Join(field.Join("certificates", name), "rollout")
		if _, ok := c.Certificates[name]; !ok {
			return field.Errorf(p, "a rollout for certificate %q, which is not configured", name)
		}
		if c.Rollouts[name] == nil {
			continue // explicitly none
		}
		if err := c.Rollouts[name].validate(p, c.Nodes); err != nil {
			return err
		}
	}
	for name, nodes := range c.Certificates {
		pol := c.Policy(name)
		if pol == nil || len(pol.Canary) == 0 {
			continue
		}
		if !slices.ContainsFunc(pol.Canary, func(n string) bool { return slices.Contains(nodes, n) }) {
			return field.Errorf(field.Join(field.Join("certificates", name), "rollout"), "none of the canaries %v receives certificate %q", pol.Canary, name)
		}
	}
	return nil
}
