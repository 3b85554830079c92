package wire

import (
	"strings"
	"testing"
)

func TestParseBundleSubject(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		subject string
		name    string
		group   int
		ok      bool
	}{
		{"certsync.bundle.example.com", "example.com", -1, true},
		{"certsync.group.0.example.com", "example.com", 0, true},
		{"certsync.group.255.a.b.example.com", "a.b.example.com", 255, true},
		{"certsync.group.256.example.com", "", 0, false},
		{"certsync.group.01.example.com", "", 0, false},
		{"certsync.group.-1.example.com", "", 0, false},
		{"certsync.group.x.example.com", "", 0, false},
		{"certsync.group.0", "", 0, false},
		{"certsync.group.0.", "", 0, false},
		{"certsync.rollout.example.com", "", 0, false},
		{"certsync.bundle.", "", 0, false},
	} {
		name, group, err := ParseBundleSubject(tc.subject)
		if (err == nil) != tc.ok || tc.ok && (name != tc.name || group != tc.group) {
			t.Errorf("ParseBundleSubject(%q) = %q, %d, %v", tc.subject, name, group, err)
		}
	}
	if s := GroupSubject(3, "example.com"); s != "certsync.group.3.example.com" {
		t.Errorf("GroupSubject = %q", s)
	}
	if f := GroupSubjectsOf("example.com"); f != "certsync.group.*.example.com" {
		t.Errorf("GroupSubjectsOf = %q", f)
	}
}

// TestNames: the rules of certificate and node names, and the checked
// name of a bundle or rollout subject, each error word for word.
func TestNames(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 254)
	for _, tc := range []struct {
		check func(string) (string, error)
		in    string
		want  string // the name, or the error
		ok    bool
	}{
		{certNameOf, "example.com", "example.com", true},
		{certNameOf, "acme_1-x.example.com", "acme_1-x.example.com", true},
		{certNameOf, long[:MaxCertNameLen], long[:MaxCertNameLen], true},
		{certNameOf, "", `invalid certificate name "": empty`, false},
		{certNameOf, long, `invalid certificate name "` + long[:32] + `…": longer than 253 bytes`, false},
		{certNameOf, ".example.com", `invalid certificate name ".example.com": want letters, digits, '.', '_' or '-', starting with a letter or digit`, false},
		{certNameOf, "a/b", `invalid certificate name "a/b": want letters, digits, '.', '_' or '-', starting with a letter or digit`, false},
		{certNameOf, "a..b", `invalid certificate name "a..b": contains ".."`, false},
		{certNameOf, "example.com.", `invalid certificate name "example.com.": ends with '.'`, false},
		{nodeNameOf, "web-1_a", "web-1_a", true},
		{nodeNameOf, long[:MaxNodeNameLen], long[:MaxNodeNameLen], true},
		{nodeNameOf, "", `invalid node name "": empty`, false},
		{nodeNameOf, long[:MaxNodeNameLen+1], `invalid node name "` + long[:16] + `…": longer than 64 bytes`, false},
		{nodeNameOf, "web.1", `invalid node name "web.1": want letters, digits, '_' or '-', starting with a letter or digit`, false},
		{nodeNameOf, "-web", `invalid node name "-web": want letters, digits, '_' or '-', starting with a letter or digit`, false},
		{NameFromSubject, "certsync.bundle.example.com", "example.com", true},
		{NameFromSubject, "certsync.rollout.example.com", `subject "certsync.rollout.example.com" is not a bundle subject`, false},
		{NameFromSubject, "certsync.bundle.", `invalid certificate name "": empty`, false},
		{NameFromSubject, "certsync.bundle.a..b", `invalid certificate name "a..b": contains ".."`, false},
		{NameFromRolloutSubject, "certsync.rollout.example.com", "example.com", true},
		{NameFromRolloutSubject, "certsync.bundle.example.com", `subject "certsync.bundle.example.com" is not a rollout subject`, false},
		{NameFromRolloutSubject, "certsync.rollout.", `invalid certificate name "": empty`, false},
	} {
		got, err := tc.check(tc.in)
		if err != nil {
			got = err.Error()
		}
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%q: %q (error %v), want %q", tc.in, got, err != nil, tc.want)
		}
	}
}

// certNameOf and nodeNameOf are CheckCertName and CheckNodeName in the
// shape of NameFromSubject.
func certNameOf(name string) (string, error) { return name, CheckCertName(name) }
func nodeNameOf(name string) (string, error) { return name, CheckNodeName(name) }
