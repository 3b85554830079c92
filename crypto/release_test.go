package crypto

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestFingerprint(t *testing.T) {
	t.Parallel()
	f := FingerprintOf([]byte("leaf"))
	text := f.String()
	if !strings.HasPrefix(text, "sha256:") || len(text) != len("sha256:")+64 || strings.ToLower(text) != text {
		t.Fatalf("String = %q, want sha256: and 64 lowercase hex digits", text)
	}
	if got, err := ParseFingerprint(text); err != nil || got != f {
		t.Errorf("ParseFingerprint(%q) = %v, %v; want %v", text, got, err, f)
	}
	if got := f.Short(16); got != text[:len("sha256:")+16]+"…" {
		t.Errorf("Short(16) = %q", got)
	}
	if got := f.Short(64); got != text {
		t.Errorf("Short(64) = %q, want all of %q", got, text)
	}
	if f.Hex() != strings.TrimPrefix(text, "sha256:") {
		t.Errorf("Hex = %q", f.Hex())
	}
	var zero Fingerprint
	if !zero.IsZero() || zero.String() != "" || zero.Short(12) != "" || f.IsZero() {
		t.Errorf("zero: IsZero %v, String %q, Short %q; f.IsZero %v", zero.IsZero(), zero.String(), zero.Short(12), f.IsZero())
	}
	for _, bad := range []string{
		"", "sha256:", strings.TrimPrefix(text, "sha256:"), "sha1:" + f.Hex(), "sha256:" + strings.ToUpper(f.Hex()),
		text + "00", text[:len(text)-1], "sha256:" + strings.Repeat("g", 64),
	} {
		if _, err := ParseFingerprint(bad); err == nil || !strings.Contains(err.Error(), "parsing fingerprint") {
			t.Errorf("ParseFingerprint(%q) = %v, want a refusal", bad, err)
		}
	}

	// JSON is the text form; "" is the zero Fingerprint.
	var v struct {
		F Fingerprint `json:"f"`
		Z Fingerprint `json:"z"`
	}
	v.F = f
	raw, err := json.Marshal(v)
	if err != nil || string(raw) != `{"f":"`+text+`","z":""}` {
		t.Fatalf("Marshal = %s, %v", raw, err)
	}
	v.F, v.Z = Fingerprint{}, f
	if err := json.Unmarshal(raw, &v); err != nil || v.F != f || !v.Z.IsZero() {
		t.Errorf("Unmarshal(%s) = %+v, %v", raw, v, err)
	}
	if err := json.Unmarshal([]byte(`{"f":"sha256:abc"}`), &v); err == nil {
		t.Error("Unmarshal took a short fingerprint")
	}
}

func TestCompare(t *testing.T) {
	t.Parallel()
	a, b := FingerprintOf([]byte("a")), FingerprintOf([]byte("b"))
	held := Release{Version: 200, Fingerprint: a}
	tests := []struct {
		name     string
		incoming Release
		want     Order
		err      error
	}{
		{"same", Release{Version: 200, Fingerprint: a}, Same, nil},
		{"newer", Release{Version: 201, Fingerprint: b}, Newer, nil},
		{"newer, same fingerprint", Release{Version: 201, Fingerprint: a}, Newer, nil},
		{"older", Release{Version: 199, Fingerprint: b}, Older, ErrDowngrade},
		{"older, same fingerprint", Release{Version: 100, Fingerprint: a}, Older, ErrDowngrade},
		{"conflict", Release{Version: 200, Fingerprint: b}, Conflict, ErrConflict},
		{"fingerprint not known", Release{Version: 200}, Same, nil},
	}
	for _, tt := range tests {
		if got := Compare(held, tt.incoming); got != tt.want {
			t.Errorf("%s: Compare = %v, want %v", tt.name, got, tt.want)
		}
		if err := CheckOrder(held, tt.incoming); !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
			t.Errorf("%s: CheckOrder = %v, want %v", tt.name, err, tt.err)
		}
	}
	if got := Compare(Release{Version: 200}, Release{Version: 200, Fingerprint: b}); got != Same {
		t.Errorf("held fingerprint not known: Compare = %v, want same", got)
	}
}

// TestReleaseJSON: the field names of certsync.json and state.json.
func TestReleaseJSON(t *testing.T) {
	t.Parallel()
	f := FingerprintOf([]byte("a"))
	nb := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	r := Release{Version: 1735689600, Serial: "0a", Fingerprint: f, NotBefore: nb, NotAfter: nb.AddDate(0, 3, 0)}
	raw, err := json.Marshal(r)
	want := `{"version":1735689600,"serial":"0a","fingerprint":"` + f.String() + `","not_before":"2025-01-01T00:00:00Z","not_after":"2025-04-01T00:00:00Z"}`
	if err != nil || string(raw) != want {
		t.Errorf("Marshal = %s, %v; want %s", raw, err, want)
	}
	raw, _ = json.Marshal(Release{Version: 7, Fingerprint: f})
	if want := `{"version":7,"fingerprint":"` + f.String() + `"}`; string(raw) != want {
		t.Errorf("Marshal of version and fingerprint = %s, want %s", raw, want)
	}
}
