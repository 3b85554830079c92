package migrate

import (
	"strings"
	"testing"
)

// FuzzParseServerList: the old script's list parser never panics, and what
// it accepts is canonical: parsing it again gives the same entries.
func FuzzParseServerList(f *testing.F) {
	for _, s := range []string{
		"# comment\n\nweb1.example.test\n127.0.0.1\r\n2001:db8::1\n",
		"web 1\n", "WEB1.\nweb1\n", "fe80::1%eth0\n", strings.Repeat("a", MaxListLine+1),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ParseServerList("list", data)
		if err != nil {
			if len(data) > MaxListSize && !strings.Contains(err.Error(), "larger than") {
				t.Fatalf("oversized input not refused for its size: %v", err)
			}
			return
		}
		var b strings.Builder
		for _, e := range entries {
			b.WriteString(e.Value + "\n")
			if _, err := NodeName(Server{Host: e.Value}, true); err != nil && len(e.Value) <= 64 && !strings.Contains(e.Value, ":") {
				t.Fatalf("NodeName(%q): %v", e.Value, err)
			}
		}
		again, err := ParseServerList("list", []byte(b.String()))
		if err != nil || len(again) != len(entries) {
			t.Fatalf("canonical entries do not parse again: %v", err)
		}
		for i := range again {
			if again[i].Value != entries[i].Value {
				t.Fatalf("entry %d: %q became %q", i, entries[i].Value, again[i].Value)
			}
		}
	})
}

// FuzzParseKnownHosts: the known_hosts parser and its lookup never panic,
// every key a lookup returns is an ssh-ed25519 key, and none is revoked.
func FuzzParseKnownHosts(f *testing.F) {
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHlVEdusPGBohnZ01p01rUSN1LNMw9y7bS+sghHAOPwt"
	for _, s := range []string{
		"web1,127.0.0.1 " + key + " comment\n",
		"|1|j24PESFX9nZ438rxg3qIfnXcwOw=|tzTsOtkqA30AZycTQ7WxkhGJg8w= " + key + "\n",
		"[web1]:2222 " + key + "\n@cert-authority *.test " + key + "\n@revoked web2 " + key + "\n",
		"web1 " + key + "\n@revoked |1|j24PESFX9nZ438rxg3qIfnXcwOw=|tzTsOtkqA30AZycTQ7WxkhGJg8w= " + key + "\n",
		"*.test,!web3 " + key + "\n# comment\n\n",
		"web1 ssh-rsa AAAAB3NzaC1yc2E\n",
	} {
		f.Add([]byte(s), "web1")
	}
	f.Fuzz(func(t *testing.T, data []byte, host string) {
		kh, err := ParseKnownHosts("known_hosts", data)
		if err != nil {
			return
		}
		for _, h := range []string{host, "web1", "127.0.0.1", "web3"} {
			s, err := ParseServer(h)
			if err != nil {
				continue
			}
			hk, err := kh.Lookup(s)
			if err == nil && hk.Ed25519 != "" && !strings.HasPrefix(hk.Ed25519, "ssh-ed25519 AAAA") {
				t.Fatalf("Lookup(%q) returned %q", h, hk.Ed25519)
			}
			if _, revoked := kh.revoked[hk.Ed25519]; err == nil && hk.Ed25519 != "" && revoked {
				t.Fatalf("Lookup(%q) returned the revoked key %q", h, hk.Ed25519)
			}
		}
	})
}
