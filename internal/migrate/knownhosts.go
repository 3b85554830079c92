package migrate

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Limits of a known_hosts file.
const (
	// MaxKnownHostsSize bounds a known_hosts file.
	MaxKnownHostsSize = 8 << 20
	// MaxKnownHostsLine bounds one line: an ssh-rsa 16384-bit key is about
	// 2,800 bytes of base64, leaving room for a long list of names.
	MaxKnownHostsLine = 16 << 10
)

// sshPort is the port the old script's rsync reached every server on.
const sshPort = 22

// KnownHosts is a parsed known_hosts file (OpenSSH's format, as the
// management host's ~/.ssh/known_hosts or `ssh-keyscan` prints it).
//
// Lines marked @cert-authority are skipped: a CA key is no server's key.
// The ssh-ed25519 keys of lines marked @revoked are collected whatever
// their host names: as in ssh, a revoked key is refused whatever line names
// it, so Lookup refuses a server whose key is revoked rather than make it a
// recipient. Patterns
// with wildcards ('*', '?') never give a server its key, since they may
// cover several servers; negated patterns ("!host") exclude a server from
// their line, as in ssh. Hashed names ("|1|salt|hash") match when
// HMAC-SHA1(salt, name) equals hash, name being what ssh hashes: the
// lowercase hostname or the IP address, "[name]:port" for a port other
// than 22. Only entries for port 22 count.
type KnownHosts struct {
	file    string
	entries []hostEntry
	// revoked maps the authorized_keys form of each ssh-ed25519 key on a
	// @revoked line to the first such line.
	revoked map[string]int
}

type hostEntry struct {
	line     int
	patterns []hostPattern
	keyType  string
	// key is the authorized_keys form "ssh-ed25519 AAAA…" of an
	// ssh-ed25519 key, empty for other types.
	key string
}

type hostPattern struct {
	hashed     bool
	salt, hash []byte
	host       string
	port       int
	negated    bool
	wildcard   bool
}

// ParseKnownHosts parses known_hosts data from the file named file (used
// in errors only). Blank lines and '#' comments are ignored; any other line
// that is not "[@marker] names keytype base64 [comment]" is an error naming
// the file and the line.
func ParseKnownHosts(file string, data []byte) (*KnownHosts, error) {
	if len(data) > MaxKnownHostsSize {
		return nil, fmt.Errorf("reading known hosts %q: larger than %d bytes", file, MaxKnownHostsSize)
	}
	kh := &KnownHosts{file: file, revoked: map[string]int{}}
	err := eachLine(data, MaxKnownHostsLine, func(n int, s string) error {
		e, marker, err := parseHostLine(s)
		if err != nil {
			return err
		}
		switch marker {
		case "@cert-authority":
			return nil
		case "@revoked":
			if _, ok := kh.revoked[e.key]; e.key != "" && !ok {
				kh.revoked[e.key] = n
			}
			return nil
		}
		e.line = n
		kh.entries = append(kh.entries, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading known hosts %q: %w", file, err)
	}
	return kh, nil
}

// ReadKnownHosts reads and parses the known_hosts file path, of at most
// MaxKnownHostsSize bytes.
func ReadKnownHosts(path string) (*KnownHosts, error) {
	data, err := readBounded(path, MaxKnownHostsSize)
	if err != nil {
		return nil, err
	}
	return ParseKnownHosts(path, data)
}

// parseHostLine parses one known_hosts line. marker is the line's
// "@cert-authority" or "@revoked", empty for an ordinary line.
func parseHostLine(s string) (e hostEntry, marker string, err error) {
	f := strings.Fields(s)
	if strings.HasPrefix(f[0], "@") {
		switch f[0] {
		case "@cert-authority", "@revoked":
			marker = f[0]
		default:
			return e, "", fmt.Errorf("unknown marker %q: want @cert-authority or @revoked", f[0])
		}
		f = f[1:]
	}
	if len(f) < 3 {
		return e, "", fmt.Errorf("want host names, key type and key, got %d fields", len(f))
	}
	for p := range strings.SplitSeq(f[0], ",") {
		hp, err := parseHostPattern(p)
		if err != nil {
			return e, "", err
		}
		e.patterns = append(e.patterns, hp)
	}
	e.keyType = f[1]
	raw, err := base64.StdEncoding.DecodeString(f[2])
	if err != nil {
		return e, "", fmt.Errorf("the %s key is not valid base64", quoteType(f[1]))
	}
	if e.keyType == ssh.KeyAlgoED25519 {
		pub, err := ssh.ParsePublicKey(raw)
		if err != nil || pub.Type() != ssh.KeyAlgoED25519 {
			return e, "", fmt.Errorf("not a valid %s key", ssh.KeyAlgoED25519)
		}
		e.key = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	}
	return e, marker, nil
}

// quoteType quotes a key type for an error, cut short if long.
func quoteType(t string) string {
	if len(t) > 40 {
		t = t[:40] + "…"
	}
	return strconv.Quote(t)
}

// parseHostPattern parses one comma-separated element of a line's names.
func parseHostPattern(p string) (hostPattern, error) {
	hp := hostPattern{port: sshPort}
	if p == "" {
		return hp, fmt.Errorf("empty host name in the list of names")
	}
	if strings.HasPrefix(p, "|") {
		parts := strings.Split(p, "|")
		if len(parts) != 4 || parts[1] != "1" {
			return hp, fmt.Errorf("hashed host name %s: want |1|salt|hash", quoteType(p))
		}
		salt, err1 := base64.StdEncoding.DecodeString(parts[2])
		hash, err2 := base64.StdEncoding.DecodeString(parts[3])
		if err1 != nil || err2 != nil || len(salt) == 0 || len(hash) != sha1.Size {
			return hp, fmt.Errorf("hashed host name %s: want |1|salt|hash with base64 salt and a 20-byte hash", quoteType(p))
		}
		hp.hashed, hp.salt, hp.hash = true, salt, hash
		return hp, nil
	}
	if rest, ok := strings.CutPrefix(p, "!"); ok {
		hp.negated = true
		p = rest
	}
	if strings.HasPrefix(p, "[") {
		host, port, ok := strings.Cut(p[1:], "]:")
		n, err := strconv.Atoi(port)
		if !ok || host == "" || err != nil || n < 1 || n > 65535 || strings.HasPrefix(port, "+") {
			return hp, fmt.Errorf("host name %s: want [host]:port", quoteType(p))
		}
		p, hp.port = host, n
	}
	if p == "" {
		return hp, fmt.Errorf("empty host name in the list of names")
	}
	hp.host = strings.ToLower(p)
	hp.wildcard = strings.ContainsAny(p, "*?")
	return hp, nil
}

// matches reports whether the pattern names server on port 22. A negated
// pattern "matches" when it names the server; the caller negates.
func (hp *hostPattern) matches(host string) bool {
	if hp.hashed {
		mac := hmac.New(sha1.New, hp.salt)
		mac.Write([]byte(host))
		return hmac.Equal(mac.Sum(nil), hp.hash)
	}
	if hp.port != sshPort {
		return false
	}
	if hp.wildcard {
		// Only a negation may use a wildcard to name a server.
		return hp.negated && glob(hp.host, host)
	}
	return hp.host == host
}

// glob matches s against pattern with ssh's wildcards: '*' any run of
// characters, '?' one character.
func glob(pattern, s string) bool {
	px, sx := 0, 0
	starP, starS := -1, 0
	for sx < len(s) {
		switch {
		case px < len(pattern) && (pattern[px] == '?' || pattern[px] == s[sx]):
			px++
			sx++
		case px < len(pattern) && pattern[px] == '*':
			starP, starS = px, sx
			px++
		case starP >= 0:
			starS++
			px, sx = starP+1, starS
		default:
			return false
		}
	}
	for px < len(pattern) && pattern[px] == '*' {
		px++
	}
	return px == len(pattern)
}

// HostKey is what the known_hosts file says of one server.
type HostKey struct {
	// Ed25519 is the server's ssh-ed25519 key, "ssh-ed25519 AAAA…", or
	// empty when the file holds none.
	Ed25519 string
	// Lines are the lines the key is on.
	Lines []int
	// Others are the other key types the file holds for the server.
	Others []string
}

// Lookup returns the keys the file holds for server on port 22. Several
// different ssh-ed25519 keys for one server are an error naming their
// lines: which is right cannot be told. So is a server whose ssh-ed25519
// key is on a @revoked line (under any host name), naming both lines: a
// revoked key never becomes a recipient, and the operator decides which
// line is wrong.
func (kh *KnownHosts) Lookup(server Server) (HostKey, error) {
	var hk HostKey
	names := []string{server.Host, "[" + server.Host + "]:22"}
	for i := range kh.entries {
		e := &kh.entries[i]
		if !e.matches(names) {
			continue
		}
		if e.key == "" {
			if !slices.Contains(hk.Others, e.keyType) {
				hk.Others = append(hk.Others, e.keyType)
			}
			continue
		}
		if r, ok := kh.revoked[e.key]; ok {
			return HostKey{}, fmt.Errorf("reading known hosts %q: server %q's ssh-ed25519 host key (line %d) is revoked by the @revoked line %d: remove the key's line or the @revoked line", kh.file, server.Host, e.line, r)
		}
		if hk.Ed25519 != "" && hk.Ed25519 != e.key {
			return HostKey{}, fmt.Errorf("reading known hosts %q: server %q has several ssh-ed25519 host keys (lines %d and %d): remove the stale one", kh.file, server.Host, hk.Lines[0], e.line)
		}
		hk.Ed25519 = e.key
		hk.Lines = append(hk.Lines, e.line)
	}
	return hk, nil
}

// matches reports whether the entry gives a key to a server known by one of
// names (ssh hashes "host" for port 22, and "[host]:22" when asked to).
func (e *hostEntry) matches(names []string) bool {
	found := false
	for i := range e.patterns {
		p := &e.patterns[i]
		hit := false
		for _, n := range names {
			if p.hashed || !strings.HasPrefix(n, "[") {
				hit = hit || p.matches(n)
			}
		}
		if p.negated && hit {
			return false
		}
		if !p.negated && hit {
			found = true
		}
	}
	return found
}
