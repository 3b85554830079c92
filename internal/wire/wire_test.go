package wire

import "testing"

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
