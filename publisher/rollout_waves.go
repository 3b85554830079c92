// The waves of a rollout: which nodes each wave releases.

package publisher

import "slices"

// rolloutWaves are the waves of one certificate: nodes[0] the canaries
// (maybe none), nodes[k] the nodes wave k adds. Together they hold every
// node of the certificate once.
type rolloutWaves struct {
	nodes [][]string
}

// planWaves splits the nodes of a certificate into its waves: the
// canaries (the policy's listed nodes that receive it, or the first
// ceil(CanaryPercent% of them) in name order), then, of the M other nodes
// in name order, wave k adds up to the first ceil(Waves[k-1]% × M).
func planWaves(pol *RolloutPolicy, certNodes []string) rolloutWaves {
	all := slices.Compact(slices.Sorted(slices.Values(certNodes)))
	var canary []string
	switch {
	case len(pol.Canary) > 0:
		for _, n := range all {
			if slices.Contains(pol.Canary, n) {
				canary = append(canary, n)
			}
		}
	case pol.CanaryPercent > 0:
		canary = slices.Clone(all[:ceilPercent(pol.CanaryPercent, len(all))])
	}
	var others []string
	for _, n := range all {
		if !slices.Contains(canary, n) {
			others = append(others, n)
		}
	}
	w := rolloutWaves{nodes: [][]string{canary}}
	prev := 0
	for _, pct := range pol.Waves {
		n := max(ceilPercent(pct, len(others)), prev)
		w.nodes = append(w.nodes, others[prev:n])
		prev = n
	}
	if prev < len(others) { // a policy that passed validate ends at 100%
		w.nodes[len(w.nodes)-1] = append(w.nodes[len(w.nodes)-1], others[prev:]...)
	}
	return w
}

// ceilPercent is ceil(pct% of n).
func ceilPercent(pct, n int) int { return (pct*n + 99) / 100 }

// waveOf is the wave that releases node; -1 when none does (not a node of
// the certificate).
func (w rolloutWaves) waveOf(node string) int {
	for k, nodes := range w.nodes {
		if slices.Contains(nodes, node) {
			return k
		}
	}
	return -1
}

// through lists the nodes waves 0 to k release, sorted.
func (w rolloutWaves) through(k int) []string {
	var out []string
	for i := 0; i <= k && i < len(w.nodes); i++ {
		out = append(out, w.nodes[i]...)
	}
	slices.Sort(out)
	return out
}

// next is the first wave after wave after that has nodes; false when none
// is left. after -1 gives the first wave to release.
func (w rolloutWaves) next(after int) (int, bool) {
	for k := after + 1; k < len(w.nodes); k++ {
		if len(w.nodes[k]) > 0 {
			return k, true
		}
	}
	return 0, false
}
