package authconf

import (
	"fmt"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/atomicfile"
)

// A leaf server at a remote site lets the nodes there connect locally. It
// carries their requests over one leaf node connection to the hub (the
// management host's server or cluster), where the stream and the bucket
// live; the site's nodes keep their own nkeys and permissions, which the leaf
// server checks.
//
// nats-server never lets the plain JetStream API ($JS.API.>, $KV.>) cross a
// leaf node connection, whatever the two servers' JetStream settings: only the
// domain form $JS.<domain>.API.> does. So the hub's JetStream has the domain
// [HubDomain], and the leaf's copy of the account ([LeafFragment]) maps the
// nodes' $JS.API.> and $KV.> requests to that domain before they leave. The
// nodes need no setting of their own. nats-server checks a client's
// permissions after mapping its subject, so there each node has its own
// permissions in the mapped form. That copy enables no JetStream, so
// nothing on the leaf answers in the hub's place.
//
// The leaf server authenticates to the hub as the user [LeafUser], which may
// only connect as a leaf node and may do, in the domain form, what the nodes
// may do together ([LeafPermissions]): never publish a bundle, touch a
// consumer, the stream or the bucket, or read anything but its nodes' sealed
// messages and status keys.
const (
	// HubDomain is the JetStream domain of the hub's servers
	// (jetstream { domain: certsync } in deploy/nats).
	HubDomain = "certsync"
	// LeafUser names the leaf server's seed file (leaf.nk) and its user.
	LeafUser = "leaf"
	// LeafConfFile is the leaf server's fragment: the account for the
	// site's nodes, and the leaf link's seed in the variable [LeafSeedVar].
	LeafConfFile = "leaf-auth.conf"
	// LeafSeedVar is the configuration variable that holds the leaf
	// link's seed in LeafConfFile, for the leaf server's remote:
	// nkey: $CERTSYNC_LEAF_SEED.
	LeafSeedVar = "CERTSYNC_LEAF_SEED"
)

// RoleLeaf is the role of the leaf link's user.
const RoleLeaf Role = "leaf"

// hubAPIPrefix is the JetStream API in the hub's domain.
const hubAPIPrefix = "$JS." + HubDomain + ".API."

// LeafPermissions are the permissions of the leaf link on the hub: the
// union of the nodes' permissions, with the JetStream API and the bucket's
// subjects in the hub's domain form, as the leaf's mapping sends them.
// Over a leaf node connection, what the user may publish is what the leaf
// may send to the hub, and what it may subscribe to is what the hub sends
// to the leaf: replies on the nodes' own inboxes only.
func LeafPermissions(nodes []string) Permissions {
	var p Permissions
	for _, n := range nodes {
		np := inHubDomain(NodePermissions(n))
		p.Publish = append(p.Publish, np.Publish...)
		p.Subscribe = append(p.Subscribe, np.Subscribe...)
	}
	return p
}

// inHubDomain is p with what it may publish as the leaf's mapping turns it
// (toHubDomain); what it may subscribe to is unchanged.
func inHubDomain(p Permissions) Permissions {
	q := Permissions{Subscribe: p.Subscribe}
	for _, s := range p.Publish {
		q.Publish = append(q.Publish, toHubDomain(s))
	}
	return q
}

// toHubDomain is subject s as the leaf's mapping turns it.
func toHubDomain(s string) string {
	if rest, ok := strings.CutPrefix(s, apiPrefix); ok {
		return hubAPIPrefix + rest
	}
	if strings.HasPrefix(s, "$KV.") {
		return hubAPIPrefix + s
	}
	return s
}

// LeafFragment returns the leaf server's configuration fragment: the
// account with the node users among users (same keys and permissions as on
// the hub), no JetStream of its own, and the mappings that send the
// JetStream API and the bucket's subjects to the hub's domain; and the leaf
// link's seed as the variable LeafSeedVar. It holds that secret: write it
// 0600.
func LeafFragment(users []User, leafSeed string) []byte {
	var b strings.Builder
	b.WriteString(`# certsync: the NATS account of a leaf server at a remote site, whose nodes
# connect to it. Written by ` + "`certsync auth`" + ` beside auth.conf; do not edit, run it
# again after nodes change, copy this file to the leaf server, then reload it.
# Include it at the top level of the leaf server's configuration, with a path
# relative to that file:  include ./nats-auth/` + LeafConfFile + `
# and authenticate the leaf link with  nkey: $` + LeafSeedVar + `
# (deploy/nats/leaf/leaf.conf). It holds that seed: keep it 0600.
# The account has no JetStream here: the nodes' JetStream requests go to the
# hub's domain "` + HubDomain + `" over the leaf link.
` + LeafSeedVar + `: ` + quote(leafSeed) + `
accounts {
  ` + Account + ` {
    mappings: {
      "$JS.API.>": "` + hubAPIPrefix + `>"
      "$KV.>": "` + hubAPIPrefix + `$KV.>"
    }
    users: [
`)
	for _, u := range users {
		if u.Role != RoleNode {
			continue
		}
		// nats-server maps a client's subject before it checks the
		// client's permissions: the node's own, in the form the mapping
		// gives them.
		p := inHubDomain(*u.Permissions)
		u.Permissions = &p
		writeUser(&b, u)
	}
	b.WriteString("    ]\n  }\n}\n")
	return []byte(b.String())
}

// writeUser writes one user entry of an account's users list.
func writeUser(b *strings.Builder, u User) {
	fmt.Fprintf(b, "      # %s %s\n", u.Role, u.Name)
	fmt.Fprintf(b, "      {\n        nkey: %s\n", quote(u.PublicKey))
	if u.Role == RoleLeaf {
		b.WriteString("        allowed_connection_types: [\"LEAFNODE\"]\n")
	}
	if u.Permissions == nil {
		b.WriteString("        # no permissions block: everything in the account\n")
	} else {
		b.WriteString("        permissions: {\n")
		writeList(b, "publish", u.Permissions.Publish)
		writeList(b, "subscribe", u.Permissions.Subscribe)
		b.WriteString("        }\n")
	}
	b.WriteString("      }\n")
}

// writeLeafConf writes LeafFragment to path, 0600, with the seed read from
// seedPath. The seed never reaches an error.
func writeLeafConf(path, seedPath string, users []User) error {
	data, err := crypto.ReadKeyFile(seedPath)
	if err != nil {
		return err
	}
	defer wipe(data)
	kp, err := nkeys.ParseDecoratedUserNKey(data)
	if err != nil {
		return fmt.Errorf("reading nkey seed %q: %w (%v)", seedPath, ErrNotUserSeed, err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return fmt.Errorf("reading nkey seed %q: %w", seedPath, err)
	}
	// The seed is not wiped here: string(seed) and the fragment's builder
	// copy it where no wipe reaches, and the file written holds it anyway
	// (0600), as the leaf server needs it.
	conf := LeafFragment(users, string(seed))
	if err := atomicfile.Replace(path, conf, atomicfile.Keep, atomicfile.Keep, 0o600); err != nil {
		return fmt.Errorf("writing %q: %w", path, atomicfile.Cause(err))
	}
	return nil
}
