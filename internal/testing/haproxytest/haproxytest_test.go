package haproxytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/nginxtest"
	"github.com/certsync/certsync/internal/testing/testcert"
)

var names = []string{"example.test", "*.example.test"}

// TestReloadServesNewCertificate serves certificate A from a combined PEM
// file, swaps it for B, reloads the real HAProxy and sees B served; then a
// file whose key does not match, and then a configuration with an error,
// fail the check and leave B served after a reload; good files again are
// served after the next.
func TestReloadServesNewCertificate(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t)
	a := ca.Issue(t, testcert.Options{Names: names})
	b := ca.Issue(t, testcert.Options{Names: names})
	crt := filepath.Join(t.TempDir(), "combined.pem")
	install(t, crt, a)

	h := Start(t, crt)
	if got := nginxtest.ServedLeaf(t, h.Addr, "www.example.test"); !got.Equal(a.Leaf) {
		t.Fatalf("haproxy serves serial %x, want A's %x", got.SerialNumber, a.Leaf.SerialNumber)
	}
	p, err := h.Procs()
	if err != nil {
		t.Fatal(err)
	}
	if p.Reloads != 0 || len(p.Workers) != 1 || len(p.Old) != 0 {
		t.Fatalf("after start the master says %+v, want one worker and no reload", p)
	}
	check := h.CheckCommand()
	if out, err := exec.Command(check[0], check[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}

	install(t, crt, b)
	h.Reload(t)
	nginxtest.WaitServes(t, h.Addr, "www.example.test", b.Leaf, 10*time.Second)
	p2, err := h.Procs()
	if err != nil {
		t.Fatal(err)
	}
	if p2.Reloads != 1 || len(p2.Workers) != 1 || slices.Contains(p2.Workers, p.Workers[0]) {
		t.Fatalf("after a reload the master says %+v, want one new worker (the first was %d)", p2, p.Workers[0])
	}

	// A key that does not match, then an operator's typo: the check
	// refuses each, the master fails to load it, B is still served.
	for i, broken := range []func(){
		func() { install(t, crt, a.WithKeyOf(b)) },
		func() { install(t, crt, a); h.WriteConfig(t, "    bogus-directive") },
	} {
		broken()
		if out, err := exec.Command(check[0], check[1:]...).CombinedOutput(); err == nil {
			t.Fatalf("case %d: haproxy -c accepted a broken setup:\n%s", i, out)
		}
		before, err := h.Procs()
		if err != nil {
			t.Fatal(err)
		}
		reload := h.ReloadCommand()
		if out, err := exec.Command(reload[0], reload[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("case %d: %s: %v\n%s", i, strings.Join(reload, " "), err, out)
		}
		if p := h.WaitReloads(t, before.Reloads+1); p.Failed == 0 {
			t.Fatalf("case %d: the master loaded a broken setup: %+v\n%s", i, p, h.Output())
		}
		if got := nginxtest.ServedLeaf(t, h.Addr, "www.example.test"); !got.Equal(b.Leaf) {
			t.Fatalf("case %d: after a failed reload haproxy serves serial %x, want B's %x", i, got.SerialNumber, b.Leaf.SerialNumber)
		}
	}

	// Good files and configuration again: a reload serves them.
	h.WriteConfig(t, "")
	h.Reload(t)
	nginxtest.WaitServes(t, h.Addr, "www.example.test", a.Leaf, 10*time.Second)
}

// install writes c's full chain and key into the combined PEM file crt,
// replaced by rename.
func install(t *testing.T, crt string, c *testcert.Cert) {
	t.Helper()
	tmp := crt + ".tmp"
	if err := os.WriteFile(tmp, append(append([]byte{}, c.FullChain...), c.PrivKey...), 0o600); err != nil {
		t.Fatalf("write %s: %v", crt, err)
	}
	if err := os.Rename(tmp, crt); err != nil {
		t.Fatalf("install %s: %v", crt, err)
	}
}

// TestQuotedPaths: a combined PEM file whose path holds a space, a quote, a
// backslash and a dollar is served.
func TestQuotedPaths(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t)
	a := ca.Issue(t, testcert.Options{Names: names})
	dir := filepath.Join(t.TempDir(), `a b"c\d$e`)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	crt := filepath.Join(dir, "combined.pem")
	install(t, crt, a)
	h := Start(t, crt)
	if got := nginxtest.ServedLeaf(t, h.Addr, ""); !got.Equal(a.Leaf) {
		t.Fatalf("haproxy serves serial %x, want %x", got.SerialNumber, a.Leaf.SerialNumber)
	}
}

func TestParseProcs(t *testing.T) {
	t.Parallel()
	const head = "#<PID>          <type>          <reloads>       <uptime>        <version>\n"
	tests := []struct {
		name string
		out  string
		want Procs
		err  bool
	}{
		{"started", head + "30245 master 0 [failed: 0] 0d00h00m01s 2.6.12\n# workers\n30248 worker 0 0d00h00m01s 2.6.12\n# programs\n\n",
			Procs{Workers: []int{30248}}, false},
		{"failed reload", head + "30245 master 1 [failed: 1] 0d00h00m05s 2.6.12\n# workers\n30248 worker 1 0d00h00m05s 2.6.12\n",
			Procs{Reloads: 1, Failed: 1, Old: []int{30248}}, false},
		{"reloading", head + "30245 master 2 [failed: 0] 0d00h00m06s 2.6.12\n# workers\n30497 worker 0 0d00h00m01s 2.6.12\n# old workers\n30248 worker 2 0d00h00m06s 2.6.12\n",
			Procs{Reloads: 2, Workers: []int{30497}, Old: []int{30248}}, false},
		{"no master", head + "# workers\n30248 worker 0 0d00h00m01s 2.6.12\n", Procs{}, true},
		{"garbage", head + "Unknown command\n", Procs{}, true},
	}
	for _, tt := range tests {
		got, err := parseProcs(tt.out)
		if (err != nil) != tt.err {
			t.Errorf("%s: err = %v, want error %v", tt.name, err, tt.err)
			continue
		}
		if tt.err {
			continue
		}
		if got.Reloads != tt.want.Reloads || got.Failed != tt.want.Failed ||
			!slices.Equal(got.Workers, tt.want.Workers) || !slices.Equal(got.Old, tt.want.Old) {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}
