package subscriber

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
)

// fakeHoldings is what a status writer reads, without a Node or a disk.
type fakeHoldings struct {
	stagedRec *Staged
	stagedErr error
	inst      *Installed
	state     *installState
	instErr   error
}

func (f *fakeHoldings) staged(string) (*Staged, error) { return f.stagedRec, f.stagedErr }
func (f *fakeHoldings) installed(string) (*Installed, *installState, error) {
	return f.inst, f.state, f.instErr
}
func (f *fakeHoldings) planFor(string, *Staged, *Installed, *installState, time.Time) plan {
	return plan{}
}

// TestStatusRecordFromHoldings: the reporter builds a record from what its
// holdings say, and tells where an error comes from by its kind.
func TestStatusRecordFromHoldings(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	v1 := crypto.Release{Version: 1, Serial: "01", Fingerprint: testFingerprint("1"), NotAfter: now.Add(24 * time.Hour)}
	v2 := crypto.Release{Version: 2, Serial: "02", Fingerprint: testFingerprint("2"), NotAfter: now.Add(48 * time.Hour)}
	staged := &Staged{Name: "example.com", Release: v2}
	cfg := Config{Node: "web1", Version: "test", Now: func() time.Time { return now }, StatusInterval: time.Minute}
	tests := []struct {
		name  string
		h     *fakeHoldings
		fail  error // a bundle's failure, recorded first
		state string
		kind  string
	}{
		{"installed", &fakeHoldings{stagedRec: staged, inst: &Installed{Staged: *staged}, state: &installState{}}, nil, wire.StateInstalled, ""},
		{"staged, older installed", &fakeHoldings{stagedRec: staged, inst: &Installed{Staged: Staged{Release: v1}}, state: &installState{}}, nil, wire.StateStaged, ""},
		{"nothing staged", &fakeHoldings{stagedErr: ErrNotStaged, state: &installState{}}, nil, wire.StateMissing, ""},
		{"stage unreadable", &fakeHoldings{stagedErr: errors.New("reading staged: corrupt"), state: &installState{}}, nil, wire.StateFailed, wire.ErrorKindStage},
		{"installed unreadable", &fakeHoldings{stagedRec: staged, instErr: errors.New("reading install state: corrupt")}, nil, wire.StateFailed, wire.ErrorKindInstall},
		{"install failed", &fakeHoldings{stagedRec: staged, inst: &Installed{Staged: Staged{Release: v1}},
			state: &installState{Failed: &failedInstall{Release: v2, Error: "installing: check failed", At: now}}}, nil, wire.StateFailed, wire.ErrorKindInstall},
		{"bundle refused", &fakeHoldings{stagedRec: staged, inst: &Installed{Staged: *staged}, state: &installState{}},
			ErrDowngrade, wire.StateFailed, wire.ErrorKindBundle},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var s statusWriter
			s.init(tt.h, cfg, []string{"example.com"}, slog.New(slog.DiscardHandler))
			if tt.fail != nil {
				s.failed("example.com", 7, tt.fail, false)
			}
			st := s.record("example.com")
			if st.Node != "web1" || st.Certificate != "example.com" || st.Version != "test" || !st.LastSeen.Equal(now) {
				t.Errorf("record %+v: want web1's example.com, seen now", st)
			}
			if st.State != tt.state || st.ErrorKind != tt.kind || (st.Error == "") != (tt.kind == "") {
				t.Errorf("record %+v: want state %s, error kind %q", st, tt.state, tt.kind)
			}
			if tt.h.stagedRec != nil && st.Staged() != staged.Release {
				t.Errorf("staged %+v, want %+v", st.Staged(), staged.Release)
			}
			if tt.h.inst != nil && st.Installed() != tt.h.inst.Release {
				t.Errorf("installed %+v, want %+v", st.Installed(), tt.h.inst.Release)
			}
		})
	}
	// Names that are not the node's have no record.
	var s statusWriter
	s.init(&fakeHoldings{}, cfg, []string{"example.com"}, slog.New(slog.DiscardHandler))
	s.failed("other.example", 1, ErrDowngrade, false)
	if len(s.failures) != 0 {
		t.Errorf("a failure of another certificate recorded: %+v", s.failures)
	}
}

// TestStatusVerifiedAndFailed: verified says the installed version passed
// the configured served-certificate check, at that address and settled;
// failed_version names the last failed install; a good rollout record
// does not clear a refused bundle's error, a later bundle clears a refused
// record's.
func TestStatusVerifiedAndFailed(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	v1 := crypto.Release{Version: 1, Serial: "01", Fingerprint: testFingerprint("1"), NotAfter: now.Add(24 * time.Hour)}
	v2 := crypto.Release{Version: 2, Serial: "02", Fingerprint: testFingerprint("2"), NotAfter: now.Add(48 * time.Hour)}
	inst := &Installed{Staged: Staged{Name: "example.com", Release: v1}}
	const addr = "127.0.0.1:8443"
	cfg := func(verify string) Config {
		return Config{Node: "web1", Now: func() time.Time { return now }, StatusInterval: time.Minute,
			Certificates: map[string]Certificate{"example.com": {Name: "example.com", Verify: verify, ExpiryDeadline: ExpiryDeadlineOff}}}
	}
	for _, tc := range []struct {
		what   string
		verify string
		state  *installState
		want   bool
	}{
		{"passed", addr, &installState{Verified: &verifiedInstall{Release: v1, Address: addr}}, true},
		{"no verify configured", "", &installState{Verified: &verifiedInstall{Release: v1, Address: addr}}, false},
		{"another address", "127.0.0.1:9443", &installState{Verified: &verifiedInstall{Release: v1, Address: addr}}, false},
		{"another version", addr, &installState{Verified: &verifiedInstall{Release: v2, Address: addr}}, false},
		{"an install pending", addr, &installState{Verified: &verifiedInstall{Release: v1, Address: addr}, Pending: &pendingInstall{Release: v2}}, false},
		{"none recorded", addr, &installState{}, false},
	} {
		var s statusWriter
		s.init(&fakeHoldings{stagedRec: &inst.Staged, inst: inst, state: tc.state}, cfg(tc.verify), []string{"example.com"}, slog.New(slog.DiscardHandler))
		if st := s.record("example.com"); st.Verified != tc.want || st.ExpiryDeadline != "0s" || st.Schedule != ScheduleImmediate {
			t.Errorf("%s: %+v, want verified %v", tc.what, st, tc.want)
		}
	}

	var s statusWriter
	state := &installState{Failed: &failedInstall{Release: v2, Error: "installing: check failed", At: now}}
	s.init(&fakeHoldings{stagedRec: &Staged{Name: "example.com", Release: v2}, inst: inst, state: state}, cfg(""), []string{"example.com"}, slog.New(slog.DiscardHandler))
	if st := s.record("example.com"); st.FailedVersion != 2 || st.FailedFingerprint != v2.Fingerprint.String() {
		t.Errorf("failed install: %+v", st)
	}
	s.failed("example.com", 5, ErrDowngrade, false)
	s.succeeded("example.com", 6, true)
	if _, ok := s.failures["example.com"]; !ok {
		t.Error("a good rollout record cleared a refused bundle")
	}
	s.failed("example.com", 7, crypto.ErrBadSignature, true)
	s.succeeded("example.com", 8, true)
	if _, ok := s.failures["example.com"]; ok {
		t.Error("a good rollout record left a refused record's error")
	}
	s.failed("example.com", 9, crypto.ErrBadSignature, true)
	s.succeeded("example.com", 10, false)
	if _, ok := s.failures["example.com"]; ok {
		t.Error("a later bundle left a refused record's error")
	}
}
