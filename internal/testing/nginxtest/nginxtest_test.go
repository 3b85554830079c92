package nginxtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/testcert"
)

var names = []string{"example.test", "*.example.test"}

// TestReloadServesNewCertificate serves certificate A, swaps the files for
// B, reloads the real nginx and sees B served; then a reload with a key that
// does not match leaves B served.
func TestReloadServesNewCertificate(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t)
	a := ca.Issue(t, testcert.Options{Names: names})
	b := ca.Issue(t, testcert.Options{Names: names})
	dir := t.TempDir()
	certFile := filepath.Join(dir, "fullchain.pem")
	keyFile := filepath.Join(dir, "privkey.pem")
	install(t, dir, a)

	n := StartNginx(t, TLSFiles(certFile, keyFile))
	if got := ServedLeaf(t, n.Addr, "www.example.test"); !got.Equal(a.Leaf) {
		t.Fatalf("nginx serves serial %x, want A's %x", got.SerialNumber, a.Leaf.SerialNumber)
	}

	// The check command an operator would configure accepts the config.
	check := n.Command("-t", "-q")
	if out, err := exec.Command(check[0], check[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}

	install(t, dir, b)
	n.Reload(t)
	WaitServes(t, n.Addr, "www.example.test", b.Leaf, 10*time.Second)

	// A key that does not match: the check and `nginx -s reload` refuse
	// it, the master refuses it on SIGHUP, and B is still served.
	install(t, dir, a.WithKeyOf(b))
	for _, args := range [][]string{check, n.Command("-s", "reload")} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err == nil {
			t.Fatalf("%s accepted a key that does not match its certificate:\n%s", strings.Join(args, " "), out)
		}
	}
	const mismatch = "key values mismatch"
	before := strings.Count(n.ErrorLogText(), mismatch)
	n.SignalReload(t)
	natstest.WaitFor(t, 10*time.Second, "the nginx master to log the refused reload", func() bool {
		return strings.Count(n.ErrorLogText(), mismatch) > before
	})
	if got := ServedLeaf(t, n.Addr, "www.example.test"); !got.Equal(b.Leaf) {
		t.Fatalf("after a refused reload nginx serves serial %x, want B's %x", got.SerialNumber, b.Leaf.SerialNumber)
	}

	// Good files again: a signalled reload serves them.
	install(t, dir, a)
	n.SignalReload(t)
	WaitServes(t, n.Addr, "www.example.test", a.Leaf, 10*time.Second)
}

// install writes c's full chain and key into dir, each replaced by rename.
func install(t *testing.T, dir string, c *testcert.Cert) {
	t.Helper()
	for name, data := range map[string][]byte{"fullchain.pem": c.FullChain, "privkey.pem": c.PrivKey} {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatalf("install %s: %v", name, err)
		}
	}
}

// TestFetchLeafNoServer checks a handshake with a closed port is an error.
func TestFetchLeafNoServer(t *testing.T) {
	t.Parallel()
	if _, err := FetchLeaf("127.0.0.1:1", ""); err == nil {
		t.Fatal("FetchLeaf from a closed port succeeded")
	}
}

func TestQuote(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"/tmp/a b/cert.pem", `"/tmp/a b/cert.pem"`},
		{`/tmp/a"b`, `"/tmp/a\"b"`},
		{`/tmp/a\b`, `"/tmp/a\\b"`},
	}
	for _, tt := range tests {
		if got := quote(tt.in); got != tt.want {
			t.Errorf("quote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
