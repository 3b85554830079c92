package publisher

import (
	"context"
	"fmt"

	"github.com/certsync/certsync/internal/wire"
)

// Setup creates the CERTSYNC stream and the status bucket's stream with
// certsync's settings, or upgrades existing ones: it turns on DenyPurge and
// DenyDelete, turns off roll-ups and brings the settings certsync owns
// (history, replicas, duplicate window…) in line with the configuration.
// The server never lets a stream's deny flags be turned off again.
//
// A stream with sources, a mirror, republish, a subject transform, message
// schedules or subject delete markers is refused with ErrRefusedSettings,
// naming them, and left as it is. Under least privilege only the admin's
// credential may create and update the streams (`certsync setup --nkey
// admin.nk`); the publisher's then fails with ErrNotSetUp. Publish and
// Republish run the same code, but go on when only settings that protect
// nothing differ and they may not change them.
func (p *Publisher) Setup(ctx context.Context) error {
	ctx, cancel := p.bound(ctx)
	defer cancel()
	s, err := p.connect(ctx)
	if err != nil {
		return fmt.Errorf("setting up the stream and the bucket: %w", err)
	}
	defer s.close()
	if err := s.ensure(ctx, p.cfg.Stream, true); err != nil {
		return fmt.Errorf("setting up the stream and the bucket: %w", err)
	}
	s.log.Info("setup_done", "stream", wire.Stream, "bucket", wire.StatusBucket)
	return nil
}
