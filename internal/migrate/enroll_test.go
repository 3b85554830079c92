package migrate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/certsync/certsync/internal/testing/treetest"
)

const newAge = "age1j4at5zmjwt4gxy8e020nx0jdmemrupg6hdrwxa9lxe7jyfn8654qrj29yx"

func TestAddNode(t *testing.T) {
	t.Parallel()
	ssh := newHostKey(t)
	// nodes is the start of the first case's file, before and after.
	nodes := `# the management host
nats:
  url: nats://127.0.0.1:4222   # the embedded server

signing_key: /etc/certsync/signing.key
nodes:                                    # node name -> age recipient
  web1: age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq   # rack 1
  # web2 is the SSH host key
  web2: "` + ssh + `"
`
	for _, tt := range []struct{ name, before, after string }{
		{"block nodes, flow lists", nodes + `
certificates:
  example.com: [web1, web2]   # the shop
  example.org: [web1]
  other.net: [web2]
`, nodes + `  web3: ` + newAge + `

certificates:
  example.com: [web1, web2, web3]   # the shop
  example.org: [web1, web3]
  other.net: [web2]
`},
		{"block lists, flow nodes, no final newline", `signing_key: k
nodes: {web1: 'age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq'}
certificates:
    example.com:
        -   web1
    example.org:
    - "web1"   # quoted
lineages: /srv/le`, `signing_key: k
nodes: {web1: 'age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq', web3: ` + newAge + `}
certificates:
    example.com:
        -   web1
        -   web3
    example.org:
    - "web1"   # quoted
    - web3
lineages: /srv/le
`},
	} {
		got, err := AddNode([]byte(tt.before), "web3", newAge, []string{"example.com", "example.org", "example.com"})
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if string(got) != tt.after {
			t.Errorf("%s: got:\n%s\nwant:\n%s", tt.name, got, tt.after)
		}
	}
}

func TestAddNodeRefuses(t *testing.T) {
	t.Parallel()
	ssh := newHostKey(t)
	base := "signing_key: k\nnodes:\n  web1: " + ssh + " root@web1\n  web2: |\n    " + newAge + "\ncertificates:\n  example.com: [web1]\n"
	for _, tt := range []struct{ name, recipient, cert, want string }{
		{"web1", newAge, "example.com", `already under nodes (line 3)`},
		{"web3", ssh, "example.com", `its recipient is node "web1"'s already (line 3)`},
		{"web3", newAge, "example.com", `its recipient is node "web2"'s already`},
		{"web3", newHostKey(t), "missing.com", `certificate "missing.com" is not under certificates`},
		{"web3", newHostKey(t), "example.com", "cannot edit nodes in place (line 4: the value spans several lines or is a block): add the node by hand"},
	} {
		_, err := AddNode([]byte(base), tt.name, tt.recipient, []string{tt.cert})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("AddNode(%s, %.20s…, %s): error %v, want %q", tt.name, tt.recipient, tt.cert, err, tt.want)
		}
	}
}

func TestParseNodeLine(t *testing.T) {
	t.Parallel()
	name, r, err := ParseNodeLine("  web3: " + newAge + "\n")
	if err != nil || name != "web3" || r != newAge {
		t.Errorf("got %q %q %v", name, r, err)
	}
	for _, line := range []string{"web3 " + newAge, "web 3: " + newAge, "web3: age1nope", "web3: AGE-SECRET-KEY-1QQQ", ""} {
		if _, _, err := ParseNodeLine(line); err == nil {
			t.Errorf("ParseNodeLine(%q): no error", line)
		} else if strings.Contains(err.Error(), "AGE-SECRET") {
			t.Errorf("ParseNodeLine: error repeats a secret: %v", err)
		}
	}
}

func TestWriteNewFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "publisher.yaml")
	if err := WriteNewFile(path, []byte("one\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode: %v %v", fi.Mode(), err)
	}
	err = WriteNewFile(path, []byte("two\n"), 0o644)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("second write: %v, want fs.ErrExist naming the path", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "one\n" {
		t.Errorf("overwritten: %q", data)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestReplaceFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "publisher.yaml")
	treetest.WriteFile(t, path, []byte("old\n"), 0o600)
	if err := os.Chown(path, 4242, 4343); err != nil && os.Geteuid() == 0 {
		t.Fatal(err)
	}
	before, _ := os.Stat(path)
	if err := ReplaceFile(path, []byte("new\n"), []byte("other\n")); err == nil || !strings.Contains(err.Error(), "changed while") {
		t.Errorf("a changed file: %v", err)
	}
	if err := ReplaceFile(path, []byte("new\n"), []byte("old\n")); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(path)
	if data, _ := os.ReadFile(path); string(data) != "new\n" {
		t.Errorf("content %q", data)
	}
	b, a := before.Sys().(*syscall.Stat_t), after.Sys().(*syscall.Stat_t)
	if after.Mode() != before.Mode() || a.Uid != b.Uid || a.Gid != b.Gid {
		t.Errorf("mode/owner changed: %v %d:%d -> %v %d:%d", before.Mode(), b.Uid, b.Gid, after.Mode(), a.Uid, a.Gid)
	}
	link := filepath.Join(dir, "link.yaml")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if err := ReplaceFile(link, []byte("x\n"), []byte("new\n")); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a symlink: %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	huge := make([]byte, MaxConfigSize+1)
	treetest.WriteFile(t, big, huge, 0o600)
	if err := ReplaceFile(big, []byte("x\n"), huge); err == nil || err.Error() != fmt.Sprintf("replacing %q: larger than 1048576 bytes: nothing written", big) {
		t.Errorf("a file above MaxConfigSize: %v", err)
	}
	if data, _ := os.ReadFile(big); len(data) != len(huge) {
		t.Errorf("a file above MaxConfigSize was changed: %d bytes", len(data))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 3 {
		t.Errorf("temporary files left: %v", entries)
	}
}
