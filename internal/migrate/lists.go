package migrate

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/certsync/certsync/internal/atomicfile"
	"github.com/certsync/certsync/internal/wire"
)

// Limits of the old script's list files.
const (
	// MaxListSize bounds a list file: a million bytes is thousands of servers.
	MaxListSize = 1 << 20
	// MaxListLine bounds one line of a list file; a hostname is at most 253 bytes.
	MaxListLine = 1024
	// maxListFiles bounds the certificate lists in one folder.
	maxListFiles = 10000
)

// Entry is one value of a list file and the line it is on.
type Entry struct {
	Value string
	Line  int
}

// Server is a server named in a list: an IP address or a hostname, in
// canonical form (see [ParseServerList]).
type Server struct {
	// Host is the canonical IP address or the lowercase hostname.
	Host string
	// IP tells whether Host is an IP address.
	IP bool
}

// ParseServerList parses a certificate's server list from the file named
// file (used in errors only): one IP address or hostname per line. IP
// addresses are kept in canonical form (netip.Addr.String); hostnames are
// lowercased, a trailing dot dropped. A zone (fe80::1%eth0), a port, a user,
// spaces inside a line and anything not a hostname are errors naming the
// file and the line.
func ParseServerList(file string, data []byte) ([]Entry, error) {
	return parseList(file, "server list", data, func(s string) (string, error) {
		srv, err := ParseServer(s)
		return srv.Host, err
	})
}

// ParseCertList parses a node's certificate list from the file named file:
// one certificate name per line, each checked by wire.CheckCertName.
func ParseCertList(file string, data []byte) ([]Entry, error) {
	return parseList(file, "certificate list", data, func(s string) (string, error) {
		return s, wire.CheckCertName(s)
	})
}

// parseList parses a list file, one value per line, each checked and
// canonicalised by check. A value listed twice is an error.
func parseList(file, what string, data []byte, check func(string) (string, error)) ([]Entry, error) {
	if len(data) > MaxListSize {
		return nil, fmt.Errorf("reading %s %q: larger than %d bytes", what, file, MaxListSize)
	}
	var entries []Entry
	first := map[string]int{}
	err := eachLine(data, MaxListLine, func(n int, s string) error {
		if strings.ContainsFunc(s, isSpace) {
			return fmt.Errorf("%q holds spaces: want one value per line", s)
		}
		v, err := check(s)
		if err != nil {
			return err
		}
		if l, ok := first[v]; ok {
			return fmt.Errorf("%q listed twice (first on line %d)", s, l)
		}
		first[v] = n
		entries = append(entries, Entry{Value: v, Line: n})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s %q: %w", what, file, err)
	}
	return entries, nil
}

// eachLine calls fn with the number (from 1) and the text, trimmed, of
// each line of data that is neither blank nor a '#' comment, and stops at
// the first error, which it returns naming the line. A line longer than
// maxLine bytes is an error.
func eachLine(data []byte, maxLine int, fn func(n int, s string) error) error {
	n := 0
	for rest := data; len(rest) > 0; {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		n++
		if len(line) > maxLine {
			return fmt.Errorf("line %d: longer than %d bytes", n, maxLine)
		}
		s := strings.TrimSpace(string(line))
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if err := fn(n, s); err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
	}
	return nil
}

func isSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\v' || r == '\f' || r == '\r' || r == 0x85 || r == 0xA0
}

// ParseServer parses one IP address or hostname as a list names a server.
func ParseServer(s string) (Server, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return Server{}, fmt.Errorf("invalid server %q: an IPv6 zone is not supported", s)
		}
		return Server{Host: a.String(), IP: true}, nil
	}
	h := strings.ToLower(strings.TrimSuffix(s, "."))
	if err := checkHostname(h); err != nil {
		return Server{}, fmt.Errorf("invalid server %q: %v", s, err)
	}
	return Server{Host: h}, nil
}

// checkHostname checks a lowercase hostname: labels of letters, digits and
// '-' (not first or last), 1 to 63 bytes each, 253 in all, the last not all
// digits (so that a mistyped IP address is not taken for a name).
func checkHostname(h string) error {
	if h == "" || len(h) > 253 {
		return errors.New("want an IP address or a hostname of 1 to 253 bytes")
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return errors.New("want an IP address or a hostname whose labels have 1 to 63 bytes")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("want an IP address or a hostname: a label starts or ends with '-'")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return errors.New("want an IP address or a hostname: letters, digits, '-' and '.' only")
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return errors.New("neither an IP address nor a hostname (its last label is all digits)")
	}
	return nil
}

// ReadListFile reads a list file of at most MaxListSize bytes; it must be a
// regular file.
func ReadListFile(path string) ([]byte, error) {
	return readBounded(path, MaxListSize)
}

// readBounded reads the regular file path, refusing more than limit bytes.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %q: %w", path, atomicfile.Cause(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading %q: %w", path, atomicfile.Cause(err))
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("reading %q: not a regular file", path)
	}
	data, err := atomicfile.ReadAtMost(f, limit)
	if err != nil {
		return nil, fmt.Errorf("reading %q: %w", path, err)
	}
	return data, nil
}

// List is one certificate's server list, read from File.
type List struct {
	Certificate string
	File        string
	Servers     []Entry
}

// ReadLists reads the old script's per-certificate lists in dir: every
// entry whose name does not start with '.' must be a regular file named by
// a valid certificate name (an editor's backup such as "example.com~" is
// an error, naming it). Lists come sorted by certificate name.
func ReadLists(dir string) ([]List, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading lists folder %q: %w", dir, atomicfile.Cause(err))
	}
	var lists []List
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		path := filepath.Join(dir, name)
		if err := wire.CheckCertName(name); err != nil {
			return nil, fmt.Errorf("reading lists folder %q: file %q: the file's name is the certificate's: %w", dir, name, err)
		}
		if len(lists) == maxListFiles {
			return nil, fmt.Errorf("reading lists folder %q: more than %d lists", dir, maxListFiles)
		}
		data, err := ReadListFile(path)
		if err != nil {
			return nil, err
		}
		servers, err := ParseServerList(path, data)
		if err != nil {
			return nil, err
		}
		lists = append(lists, List{Certificate: name, File: path, Servers: servers})
	}
	if len(lists) == 0 {
		return nil, fmt.Errorf("reading lists folder %q: no list files", dir)
	}
	sort.Slice(lists, func(i, j int) bool { return lists[i].Certificate < lists[j].Certificate })
	return lists, nil
}
