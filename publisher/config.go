package publisher

import (
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/wire"
)

// Config is everything the publisher needs. The command line builds it from
// publisher.yaml, already validated: names checked, every node of every
// certificate known, every recipient parsed once.
type Config struct {
	// NATS says how to reach the servers.
	NATS natsconn.Options
	// SigningKey signs every bundle. Nodes trust its public key.
	SigningKey *crypto.SigningKey
	// Lineages is the folder holding one certbot lineage per certificate
	// (default /etc/letsencrypt/live); republish reads it.
	Lineages string
	// Nodes maps a node name to its age recipient, as written in the
	// configuration: "age1…", "ssh-ed25519 …" or "ssh-rsa …".
	Nodes map[string]string
	// Certificates maps a certificate name to the names of the nodes that
	// receive it.
	Certificates map[string][]string
	// Stream holds the stream's settings (replicas, history, duplicate window).
	Stream wire.StreamOptions
	// Timeout bounds how long publish and republish keep trying to reach NATS
	// and to have a bundle stored before they give up (default 30s).
	Timeout time.Duration
	// Now returns the current time; nil means time.Now. Tests set it.
	Now func() time.Time
}
