package authconf_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/authconf"
	"github.com/certsync/certsync/internal/testing/treetest"
)

func TestWriteCreatesThenKeeps(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "auth")
	res, err := authconf.Write(authconf.Config{Dir: dir, Nodes: []string{"web2", "web1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("folder: %v, mode %v, want 0700", err, fi.Mode().Perm())
	}
	var names []string
	pubs := map[string]string{}
	for _, u := range res.Users {
		names = append(names, u.Name)
		pubs[u.Name] = u.PublicKey
		if !nkeys.IsValidPublicUserKey(u.PublicKey) {
			t.Errorf("user %s: public key %q is not a user key", u.Name, u.PublicKey)
		}
		path := filepath.Join(dir, u.Name+authconf.SeedExt)
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("seed %s: %v, mode %v, want 0600", path, err, fi.Mode().Perm())
		}
		if !slices.Contains(res.Created, path) {
			t.Errorf("seed %s not reported created", path)
		}
	}
	if want := "publisher,admin,leaf,web1,web2"; strings.Join(names, ",") != want {
		t.Errorf("users %v, want %s", names, want)
	}
	conf, err := os.ReadFile(res.Conf)
	if err != nil {
		t.Fatal(err)
	}
	leafConf, err := os.ReadFile(res.LeafConf)
	if err != nil {
		t.Fatal(err)
	}
	for name, pub := range pubs {
		if !strings.Contains(string(conf), `nkey: "`+pub+`"`) {
			t.Errorf("auth.conf lacks %s's public key", name)
		}
		seed, _ := os.ReadFile(filepath.Join(dir, name+authconf.SeedExt))
		kp, err := nkeys.ParseDecoratedUserNKey(seed)
		if err != nil {
			t.Fatalf("seed of %s: %v", name, err)
		}
		s, _ := kp.Seed()
		if strings.Contains(string(conf), string(s)) {
			t.Errorf("auth.conf holds %s's seed", name)
		}
		// leaf-auth.conf holds the leaf link's seed, and no other.
		if held := strings.Contains(string(leafConf), string(s)); held != (name == authconf.LeafUser) {
			t.Errorf("leaf-auth.conf holds %s's seed: %v", name, held)
		}
	}
	if fi, err := os.Stat(res.LeafConf); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("leaf-auth.conf: %v, mode %v, want 0600 (it holds a seed)", err, fi.Mode().Perm())
	}
	for _, user := range []string{"web1", "web2"} {
		if !strings.Contains(string(leafConf), `nkey: "`+pubs[user]+`"`) {
			t.Errorf("leaf-auth.conf lacks node %s", user)
		}
	}
	for _, user := range []string{authconf.PublisherUser, authconf.AdminUser, authconf.LeafUser} {
		if strings.Contains(string(leafConf), `nkey: "`+pubs[user]+`"`) {
			t.Errorf("leaf-auth.conf lets %s log in at a leaf server", user)
		}
	}

	// Again, with web2 gone and web3 new: existing seeds kept, web2's
	// reported unused and out of auth.conf.
	res, err = authconf.Write(authconf.Config{Dir: dir, Nodes: []string{"web1", "web3"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{filepath.Join(dir, "web3.nk")}; !slices.Equal(res.Created, want) {
		t.Errorf("created %v, want %v", res.Created, want)
	}
	if want := []string{filepath.Join(dir, "web2.nk")}; !slices.Equal(res.Unused, want) {
		t.Errorf("unused %v, want %v", res.Unused, want)
	}
	for _, u := range res.Users {
		if old, ok := pubs[u.Name]; ok && old != u.PublicKey {
			t.Errorf("user %s: key changed on a second run", u.Name)
		}
	}
	conf, _ = os.ReadFile(res.Conf)
	if strings.Contains(string(conf), pubs["web2"]) || strings.Contains(string(conf), "node-web2") {
		t.Errorf("auth.conf still grants web2:\n%s", conf)
	}
}

func TestWriteRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		nodes []string
		setup func(dir string) // prepares the folder
		want  string
		is    error
	}{
		{name: "node named publisher", nodes: []string{"publisher"}, want: `node name "publisher"`, is: authconf.ErrReservedName},
		{name: "node named admin", nodes: []string{"web1", "admin"}, want: `node name "admin"`, is: authconf.ErrReservedName},
		{name: "node named leaf", nodes: []string{"leaf"}, want: `node name "leaf"`, is: authconf.ErrReservedName},
		{name: "invalid node name", nodes: []string{"web.1"}, want: `invalid node name "web.1"`},
		{name: "node twice", nodes: []string{"web1", "web1"}, want: "listed twice"},
		{name: "seed readable by others", nodes: []string{"web1"}, setup: func(dir string) {
			writeSeed(t, filepath.Join(dir, "web1.nk"), 0o644)
		}, want: "web1.nk", is: crypto.ErrKeyPermissions},
		{name: "not a seed", nodes: []string{"web1"}, setup: func(dir string) {
			treetest.WriteFile(t, filepath.Join(dir, "admin.nk"), []byte("hello\n"), 0o600)
		}, want: "admin.nk", is: authconf.ErrNotUserSeed},
		{name: "account seed", nodes: []string{"web1"}, setup: func(dir string) {
			kp, _ := nkeys.CreateAccount()
			s, _ := kp.Seed()
			treetest.WriteFile(t, filepath.Join(dir, "web1.nk"), s, 0o600)
		}, want: "web1.nk", is: authconf.ErrNotUserSeed},
		{name: "two users with one key", nodes: []string{"web1"}, setup: func(dir string) {
			writeSeed(t, filepath.Join(dir, "web1.nk"), 0o600)
			data, _ := os.ReadFile(filepath.Join(dir, "web1.nk"))
			treetest.WriteFile(t, filepath.Join(dir, "admin.nk"), data, 0o600)
		}, want: "hold the same key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if tc.setup != nil {
				tc.setup(dir)
			}
			_, err := authconf.Write(authconf.Config{Dir: dir, Nodes: tc.nodes}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("Write: %v, want an error with %q (is %v)", err, tc.want, tc.is)
			}
			if _, err := os.Stat(filepath.Join(dir, authconf.ConfFile)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("auth.conf written despite the error (%v)", err)
			}
		})
	}
}

// writeSeed writes a new user seed file with mode perm.
func writeSeed(t *testing.T, path string, perm os.FileMode) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := kp.Seed()
	treetest.WriteFile(t, path, append(s, '\n'), perm)
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
}

func TestEnsureSeedKeepsExisting(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "web1.nk")
	writeSeed(t, path, 0o600)
	before, _ := os.ReadFile(path)
	pub, created, err := authconf.EnsureSeed(path, "node web1")
	if err != nil || created {
		t.Fatalf("EnsureSeed: created %v, %v; want kept", created, err)
	}
	kp, _ := nkeys.ParseDecoratedUserNKey(before)
	if want, _ := kp.PublicKey(); pub != want {
		t.Errorf("public key %s, want the existing seed's %s", pub, want)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("existing seed file changed")
	}
}

// TestFragmentIncludeMatchesDocs: the include line auth.conf's header
// tells the operator to write is the one the README, docs/SECURITY.md and
// the shipped server configurations use.
func TestFragmentIncludeMatchesDocs(t *testing.T) {
	t.Parallel()
	const include = "include ./nats-auth/auth.conf"
	if !strings.Contains(string(authconf.Fragment(nil)), include) {
		t.Errorf("auth.conf's header does not say %q:\n%s", include, authconf.Fragment(nil))
	}
	for _, f := range []string{"README.md", "docs/SECURITY.md", "deploy/nats/nats-server.conf", "deploy/nats/cluster/cluster.conf"} {
		data, err := os.ReadFile(filepath.Join("..", "..", f))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), include) {
			t.Errorf("%s does not say %q", f, include)
		}
	}
	if !strings.Contains(string(authconf.LeafFragment(nil, "SEED")), "include ./nats-auth/"+authconf.LeafConfFile) {
		t.Errorf("leaf-auth.conf's header does not name its include path")
	}
}
