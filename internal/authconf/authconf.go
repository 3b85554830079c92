// Package authconf makes certsync's least-privilege NATS credentials: an
// nkey per node, for the publisher and for an admin, and the nats-server
// configuration fragment that gives each exactly what it needs.
//
// # Users
//
// Every user lives in one account, [Account], with JetStream enabled:
//
//   - a node may bind and pull its own durable consumer node-<name>,
//     acknowledge what it delivered, and put and get its own keys
//     <name>.<certificate> in the status bucket ([NodePermissions]);
//   - the publisher may publish bundles, read the stream and the status
//     bucket, and manage the consumers ([PublisherPermissions]); it may
//     not create or update the stream or the bucket;
//   - the admin may do anything in the account: it creates and upgrades
//     the stream and the bucket (certsync setup), and serves an operator
//     with the nats CLI.
//
// A leaf server at a remote site logs in to the hub as the leaf link's user,
// which may only connect as a leaf node and holds the nodes' permissions in
// the hub's JetStream domain form ([LeafPermissions]); see leaf.go.
//
// Each client receives its replies on its own inbox prefix
// ([wire.NodeInboxPrefix], [wire.PublisherInboxPrefix]), which subscriber.New
// and publisher.New apply; the admin uses the default
// _INBOX.
//
// # Files
//
// [Write] keeps one seed file per user in a folder, <node>.nk,
// publisher.nk, admin.nk and leaf.nk: each created 0600 with O_EXCL when
// missing and kept as it is when present ([EnsureSeed]), so running it
// again after the nodes changed keeps every existing credential. It then writes auth.conf
// ([Fragment]), which names users by public key only and holds no secret,
// for the server's configuration to include. A node removed from the
// configuration loses its user, hence its access, once the server reloads
// auth.conf; its seed file stays and [Result] lists it. Write also writes
// leaf-auth.conf ([LeafFragment]) for leaf servers, 0600, since it holds
// the leaf link's seed.
package authconf

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/certsync/certsync/internal/atomicfile"
	"github.com/certsync/certsync/internal/wire"
)

// File names in the output folder.
const (
	// ConfFile is the configuration fragment.
	ConfFile = "auth.conf"
	// SeedExt ends every seed file's name.
	SeedExt = ".nk"
	// PublisherUser and AdminUser name the publisher's and the admin's
	// seed files (publisher.nk, admin.nk). No node may take these names.
	PublisherUser = "publisher"
	AdminUser     = "admin"
)

// ErrReservedName means a node is named like the publisher's or the admin's
// seed file.
var ErrReservedName = errors.New("reserved name")

// Role says what a user is for.
type Role string

// Roles.
const (
	RoleNode      Role = "node"
	RolePublisher Role = "publisher"
	RoleAdmin     Role = "admin"
)

// User is one user of the fragment.
type User struct {
	// Name is the node's name, PublisherUser or AdminUser.
	Name string
	// Role is what the user is for.
	Role Role
	// PublicKey is the user's nkey public key (U…).
	PublicKey string
	// Permissions are what the user may do; nil for the admin, who may do
	// everything in the account.
	Permissions *Permissions
}

// Config says which credentials to make and where.
type Config struct {
	// Dir is the folder that holds the seed files and auth.conf. It is
	// created 0700 when missing.
	Dir string
	// Nodes are the node names, each checked with wire.CheckNodeName.
	Nodes []string
}

// Result is what Write did.
type Result struct {
	// Conf is the path of auth.conf.
	Conf string
	// LeafConf is the path of leaf-auth.conf, for leaf servers.
	LeafConf string
	// Users are the users of the fragment: the publisher, the admin, the
	// leaf link, then the nodes sorted by name.
	Users []User
	// Created are the seed files created by this run; the others were kept.
	Created []string
	// Unused are seed files in Dir that belong to no user any more (a node
	// that was removed). They no longer grant anything once the server
	// reloads auth.conf; delete them when the node is gone for good.
	Unused []string
}

// Write makes sure every user has a seed file in cfg.Dir and writes
// auth.conf there, replacing the previous one atomically.
func Write(cfg Config, log *slog.Logger) (*Result, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Dir == "" {
		return nil, errors.New("writing nats credentials: no output folder")
	}
	nodes := slices.Sorted(slices.Values(cfg.Nodes))
	if len(slices.Compact(slices.Clone(nodes))) != len(nodes) {
		return nil, errors.New("writing nats credentials: a node is listed twice")
	}
	for _, node := range nodes {
		if err := wire.CheckNodeName(node); err != nil {
			return nil, fmt.Errorf("writing nats credentials: %w", err)
		}
		if node == PublisherUser || node == AdminUser || node == LeafUser {
			return nil, fmt.Errorf("writing nats credentials: node name %q: %w: %s%s is the %s's credential; rename the node",
				node, ErrReservedName, node, SeedExt, node)
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating folder %q: %w", cfg.Dir, atomicfile.Cause(err))
	}

	res := &Result{Conf: filepath.Join(cfg.Dir, ConfFile)}
	add := func(name string, role Role, perms *Permissions) error {
		path := filepath.Join(cfg.Dir, name+SeedExt)
		pub, created, err := EnsureSeed(path, string(role)+" "+name)
		if err != nil {
			return err
		}
		if created {
			res.Created = append(res.Created, path)
			log.Info("seed_created", "user", name, "role", role, "path", path, "public_key", pub)
		} else {
			log.Debug("seed_kept", "user", name, "role", role, "path", path, "public_key", pub)
		}
		res.Users = append(res.Users, User{Name: name, Role: role, PublicKey: pub, Permissions: perms})
		return nil
	}
	pp := PublisherPermissions()
	if err := add(PublisherUser, RolePublisher, &pp); err != nil {
		return nil, err
	}
	if err := add(AdminUser, RoleAdmin, nil); err != nil {
		return nil, err
	}
	lp := LeafPermissions(nodes)
	if err := add(LeafUser, RoleLeaf, &lp); err != nil {
		return nil, err
	}
	for _, node := range nodes {
		np := NodePermissions(node)
		if err := add(node, RoleNode, &np); err != nil {
			return nil, err
		}
	}
	seen := map[string]string{} // public key -> user
	for _, u := range res.Users {
		if other, ok := seen[u.PublicKey]; ok {
			return nil, fmt.Errorf("writing nats credentials: %s%s and %s%s hold the same key: each user needs its own; remove one and run again",
				other, SeedExt, u.Name, SeedExt)
		}
		seen[u.PublicKey] = u.Name
	}

	if err := atomicfile.Replace(res.Conf, Fragment(res.Users), atomicfile.Keep, atomicfile.Keep, 0o644); err != nil {
		return nil, fmt.Errorf("writing %q: %w", res.Conf, atomicfile.Cause(err))
	}
	log.Info("auth_conf_written", "path", res.Conf, "users", len(res.Users))
	res.LeafConf = filepath.Join(cfg.Dir, LeafConfFile)
	if err := writeLeafConf(res.LeafConf, filepath.Join(cfg.Dir, LeafUser+SeedExt), res.Users); err != nil {
		return nil, err
	}
	log.Info("leaf_conf_written", "path", res.LeafConf)

	entries, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("reading folder %q: %w", cfg.Dir, atomicfile.Cause(err))
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), SeedExt)
		if !ok || e.IsDir() || slices.ContainsFunc(res.Users, func(u User) bool { return u.Name == name }) {
			continue
		}
		path := filepath.Join(cfg.Dir, e.Name())
		res.Unused = append(res.Unused, path)
		log.Warn("seed_unused", "path", path, "reason", "no such node in the configuration: it grants nothing once the server reloads auth.conf")
	}
	return res, nil
}

// Fragment returns the nats-server configuration fragment for users: the
// account with JetStream enabled, and each user by public key with its
// permissions. It holds no secret. The server loads it with an include
// directive at the top level of its configuration.
func Fragment(users []User) []byte {
	var b strings.Builder
	b.WriteString(`# certsync: least-privilege NATS users. Written by ` + "`certsync auth`" + `; do not edit,
# run it again after nodes change, then reload the server (nats-server --signal reload).
# Include it at the top level of the server's configuration, with a path
# relative to that file:  include ./nats-auth/auth.conf
# It defines the accounts block: a configuration that defines its own accounts
# must copy the ` + Account + ` account into it instead. No secret is held here.
# The publisher may not create or change the stream and the status bucket: once
# the server runs this file, the admin sets them up (again after changing
# stream: in publisher.yaml):  certsync setup --nkey admin.nk
accounts {
  ` + Account + ` {
    jetstream: enabled
    users: [
`)
	for _, u := range users {
		writeUser(&b, u)
	}
	b.WriteString("    ]\n  }\n}\n")
	return []byte(b.String())
}

func writeList(b *strings.Builder, key string, subjects []string) {
	fmt.Fprintf(b, "          %s: {\n            allow: [\n", key)
	for _, s := range subjects {
		fmt.Fprintf(b, "              %s\n", quote(s))
	}
	b.WriteString("            ]\n          }\n")
}

// quote writes s as a double-quoted string of the configuration language,
// where an unquoted leading $ would name a variable. Subjects and keys hold
// no quote or backslash; they are escaped all the same.
func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}
