package migrate

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/certsync/certsync/internal/testing/testkeys"
)

// newHostKey returns a new ssh-ed25519 public key line, "ssh-ed25519 AAAA…".
func newHostKey(t testing.TB) string {
	t.Helper()
	return testkeys.Ed25519(t).Line
}

// hashed is name hashed as ssh-keygen -H does: |1|salt|HMAC-SHA1(salt, name).
func hashed(name string) string {
	salt := make([]byte, sha1.Size)
	_, _ = rand.Read(salt)
	mac := hmac.New(sha1.New, salt)
	mac.Write([]byte(name))
	return "|1|" + base64.StdEncoding.EncodeToString(salt) + "|" + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func TestKnownHostsLookup(t *testing.T) {
	t.Parallel()
	keys := map[string]string{}
	for _, n := range []string{"plain", "list", "port", "hash", "hashport", "ip", "ca", "revoked", "wild", "neg", "other", "v6"} {
		keys[n] = newHostKey(t)
	}
	const rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"
	data := strings.Join([]string{
		"# web1.example.test:22 SSH-2.0-OpenSSH_9.2p1 Debian-2",
		"",
		"web1.example.test " + keys["plain"] + " root@web1",
		"web2.example.test,192.0.2.2 " + keys["list"],
		"[web3.example.test]:22 " + keys["port"],
		"[web3.example.test]:2222 " + keys["other"],
		hashed("web4.example.test") + " " + keys["hash"],
		hashed("[web5.example.test]:22") + " " + keys["hashport"],
		hashed("[web6.example.test]:2222") + " " + keys["other"],
		"127.0.0.11 " + keys["ip"],
		"@cert-authority *.example.test " + keys["ca"],
		"@revoked web7.example.test " + keys["revoked"],
		"*.example.test " + keys["wild"],
		"web8.example.test,!web9.example.test,web9.example.test " + keys["neg"],
		"db1.example.test " + rsa,
		"2001:db8::1 " + keys["v6"],
		"WEB10.Example.Test " + keys["plain"],
	}, "\n")
	kh, err := ParseKnownHosts("known_hosts", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		server, want string
		others       []string
	}{
		{"web1.example.test", keys["plain"], nil},
		{"web2.example.test", keys["list"], nil},
		{"192.0.2.2", keys["list"], nil},
		{"web3.example.test", keys["port"], nil},
		{"web4.example.test", keys["hash"], nil},
		{"web5.example.test", keys["hashport"], nil},
		{"web6.example.test", "", nil},
		{"127.0.0.11", keys["ip"], nil},
		{"web7.example.test", "", nil},
		{"anything.example.test", "", nil},
		{"web8.example.test", keys["neg"], nil},
		{"web9.example.test", "", nil},
		{"db1.example.test", "", []string{"ssh-rsa"}},
		{"2001:db8::1", keys["v6"], nil},
		{"web10.example.test", keys["plain"], nil},
	} {
		s, err := ParseServer(tt.server)
		if err != nil {
			t.Fatal(err)
		}
		hk, err := kh.Lookup(s)
		if err != nil {
			t.Errorf("Lookup(%q): %v", tt.server, err)
			continue
		}
		if hk.Ed25519 != tt.want || fmt.Sprint(hk.Others) != fmt.Sprint(tt.others) {
			t.Errorf("Lookup(%q) = %q others %v, want %q others %v", tt.server, hk.Ed25519, hk.Others, tt.want, tt.others)
		}
	}
}

func TestKnownHostsConflict(t *testing.T) {
	t.Parallel()
	a, b := newHostKey(t), newHostKey(t)
	data := "web1 " + a + "\n" + hashed("web1") + " " + a + "\n\nweb1 " + b + "\n"
	kh, err := ParseKnownHosts("known_hosts", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	_, err = kh.Lookup(Server{Host: "web1"})
	if err == nil || !strings.Contains(err.Error(), "lines 1 and 4") {
		t.Errorf("two keys for one server: error %v, want one naming lines 1 and 4", err)
	}
}

// TestKnownHostsRevoked: a key on a @revoked line, under any host name, is
// refused for every server an ordinary line gives it to, as ssh refuses it;
// PlanSeed fails with the same error and plans nothing.
func TestKnownHostsRevoked(t *testing.T) {
	t.Parallel()
	bad, good, rsa := newHostKey(t), newHostKey(t), "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"
	data := strings.Join([]string{
		"web1.example.test " + bad,
		"web2.example.test " + good,
		"@revoked " + hashed("elsewhere.example.test") + " " + bad,
		"@revoked *.example.test " + bad,
		"@revoked web2.example.test " + rsa,
		hashed("web3.example.test") + " " + bad,
	}, "\n")
	kh, err := ParseKnownHosts("known_hosts", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ server, line string }{
		{"web1.example.test", "(line 1) is revoked by the @revoked line 3"},
		{"web3.example.test", "(line 6) is revoked by the @revoked line 3"},
	} {
		hk, err := kh.Lookup(Server{Host: tt.server})
		if err == nil || !strings.Contains(err.Error(), `server "`+tt.server+`"`) || !strings.Contains(err.Error(), tt.line) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Lookup(%q) = %q, %v: want one error line naming the server and %q", tt.server, hk.Ed25519, err, tt.line)
		}
	}
	if hk, err := kh.Lookup(Server{Host: "web2.example.test"}); err != nil || hk.Ed25519 != good {
		t.Errorf("Lookup(web2) = %q, %v: want its unrevoked key", hk.Ed25519, err)
	}
	seed, err := PlanSeed([]List{list(t, "a.test", "web2.example.test\nweb1.example.test\n")}, kh, SeedOptions{FullNames: true})
	if err == nil || seed != nil || !strings.Contains(err.Error(), `server "web1.example.test"`) || !strings.Contains(err.Error(), "@revoked line 3") {
		t.Errorf("PlanSeed with a revoked key: %v, %v; want nil and an error naming the server and the @revoked line", seed, err)
	}
}

func TestParseKnownHostsRefuses(t *testing.T) {
	t.Parallel()
	key := newHostKey(t)
	for _, tt := range []struct{ data, want string }{
		{"web1\n", "line 1: want host names, key type and key"},
		{"web1 " + key + "\nweb2 ssh-ed25519 !!notbase64\n", "line 2: the \"ssh-ed25519\" key is not valid base64"},
		{"web1 ssh-ed25519 AAAA\n", "line 1: not a valid ssh-ed25519 key"},
		{"|1|abc " + key + "\n", "line 1: hashed host name"},
		{"|2|AAAA|AAAA " + key + "\n", "line 1: hashed host name"},
		{"|1|AAAA|AAAA " + key + "\n", "line 1: hashed host name"},
		{"@marker web1 " + key + "\n", `line 1: unknown marker "@marker"`},
		{"web1,,web2 " + key + "\n", "line 1: empty host name"},
		{"[web1]:99999 " + key + "\n", "line 1: host name \"[web1]:99999\""},
		{"[web1] " + key + "\n", "line 1: host name"},
		{"web1 " + key + " " + strings.Repeat("c", MaxKnownHostsLine) + "\n", "line 1: longer than"},
	} {
		_, err := ParseKnownHosts("known_hosts", []byte(tt.data))
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), `"known_hosts"`) {
			t.Errorf("ParseKnownHosts(%.50q): error %v, want one naming the file and %q", tt.data, err, tt.want)
		}
	}
}

func TestGlob(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		p, s string
		want bool
	}{
		{"*.example.test", "web1.example.test", true},
		{"*.example.test", "example.test", false},
		{"web?", "web1", true},
		{"web?", "web12", false},
		{"*", "", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
	} {
		if got := glob(tt.p, tt.s); got != tt.want {
			t.Errorf("glob(%q, %q) = %v", tt.p, tt.s, got)
		}
	}
}
