package publisher

import (
	"context"
	"errors"
)

// RollbackOptions say which certificate Rollback puts back, and how.
type RollbackOptions struct {
	// ToSerial picks the archived certificate with this serial (lowercase
	// hex); empty means the previous one.
	ToSerial string
	// Immediate seals it without the hold record, whatever the policy, so
	// every node installs it at once (rollout abort).
	Immediate bool
}

// Rollback publishes an earlier certificate of name again, with a new
// version and the newest one withdrawn. (The base of issue 11: built by
// the publisher-core change.)
func (p *Publisher) Rollback(ctx context.Context, name string, opts RollbackOptions) (*Result, error) {
	return nil, errors.New("rollback: not built yet")
}
