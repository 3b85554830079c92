package migrate

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/certsync/certsync/internal/testing/treetest"
)

func TestParseServerList(t *testing.T) {
	t.Parallel()
	data := "# servers for example.com\n\nweb1.example.test\n  WEB2.Example.Test.  \r\n127.0.0.11\n2001:DB8:0::1\n\t# indented comment\n"
	got, err := ParseServerList("lists/example.com", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{{"web1.example.test", 3}, {"web2.example.test", 4}, {"127.0.0.11", 5}, {"2001:db8::1", 6}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestParseServerListRefuses(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ data, want string }{
		{"web1\nweb 2\n", `line 2: "web 2" holds spaces`},
		{"web1.example.test # frontend\n", `line 1: "web1.example.test # frontend" holds spaces`},
		{"web_1.example.test\n", `line 1: invalid server "web_1.example.test"`},
		{"root@web1\n", `line 1: invalid server "root@web1"`},
		{"web1:22\n", `line 1: invalid server "web1:22"`},
		{"[web1]:22\n", `line 1: invalid server "[web1]:22"`},
		{"10.0.0.300\n", `line 1: invalid server "10.0.0.300"`},
		{"fe80::1%eth0\n", `line 1: invalid server "fe80::1%eth0": an IPv6 zone`},
		{"-web1\n", `line 1: invalid server "-web1"`},
		{"a..b\n", `line 1: invalid server "a..b"`},
		{"web1\nWEB1.\n", `line 2: "WEB1." listed twice (first on line 1)`},
		{"x\n" + strings.Repeat("a", MaxListLine+1) + "\n", "line 2: longer than 1024 bytes"},
		{strings.Repeat("# filler\n", MaxListSize/9+1), "larger than"},
	} {
		_, err := ParseServerList("lists/example.com", []byte(tt.data))
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), `"lists/example.com"`) {
			t.Errorf("ParseServerList(%.40q): error %v, want one naming the file and %q", tt.data, err, tt.want)
		}
	}
}

func TestParseCertList(t *testing.T) {
	t.Parallel()
	got, err := ParseCertList("node.list", []byte("# certificates\nexample.com\n\nexample.org\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []Entry{{"example.com", 2}, {"example.org", 4}}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, data := range []string{"example..com\n", "ex ample.com\n", "/etc/passwd\n", "example.com\nexample.com\n"} {
		if _, err := ParseCertList("node.list", []byte(data)); err == nil || !strings.Contains(err.Error(), `"node.list": line `) {
			t.Errorf("ParseCertList(%q): error %v, want one naming file and line", data, err)
		}
	}
}

func TestReadLists(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		treetest.WriteFile(t, filepath.Join(dir, name), []byte(data), 0o644)
	}
	write("example.org", "web1\n")
	write("example.com", "web1\nweb2\n")
	write(".example.com.swp", "binary junk \x00")
	lists, err := ReadLists(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(lists) != 2 || lists[0].Certificate != "example.com" || lists[1].Certificate != "example.org" || len(lists[0].Servers) != 2 {
		t.Errorf("got %+v", lists)
	}
	write("example.com~", "web3\n")
	if _, err := ReadLists(dir); err == nil || !strings.Contains(err.Error(), `file "example.com~"`) {
		t.Errorf("a backup file: error %v, want one naming it", err)
	}
	if _, err := ReadLists(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no list files") {
		t.Errorf("an empty folder: error %v", err)
	}
}

func TestNodeName(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		server     string
		full       bool
		want, fail string
	}{
		{server: "web1.example.net", want: "web1"},
		{server: "web1.example.net", full: true, want: "web1-example-net"},
		{server: "web1", want: "web1"},
		{server: "192.0.2.10", want: "192-0-2-10"},
		{server: "192.0.2.10", full: true, want: "192-0-2-10"},
		{server: "2001:db8::1", want: "ip6-2001-db8--1"},
		{server: "::ffff:192.0.2.1", want: "ip6---ffff-192-0-2-1"},
		{server: strings.Repeat("a", 40) + "." + strings.Repeat("b", 40), full: true, fail: "longer than 64 bytes"},
	} {
		s, err := ParseServer(tt.server)
		if err != nil {
			t.Fatal(err)
		}
		got, err := NodeName(s, tt.full)
		switch {
		case tt.fail != "":
			if err == nil || !strings.Contains(err.Error(), tt.fail) {
				t.Errorf("NodeName(%q): error %v, want %q", tt.server, err, tt.fail)
			}
		case err != nil:
			t.Errorf("NodeName(%q): %v", tt.server, err)
		case got != tt.want:
			t.Errorf("NodeName(%q, %v) = %q, want %q", tt.server, tt.full, got, tt.want)
		}
	}
}
