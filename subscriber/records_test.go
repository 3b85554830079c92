package subscriber

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/crypto"
)

// The records nodes already hold, byte for byte as certsync wrote them
// before the bundle's identity became crypto.Release: they must read the
// same, and what certsync writes now must be the same bytes. An installed
// version's certsync.json is the staged one and installed_at.
const (
	oldStagedJSON = `{
  "name": "example.com",
  "version": 1735689600,
  "serial": "3f2a",
  "fingerprint": "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
  "not_before": "2025-01-01T00:00:00Z",
  "not_after": "2025-04-01T00:00:00Z",
  "signer": "certsync-ed25519:AAAA",
  "staged_at": "2025-01-01T00:05:00Z",
  "stream_sequence": 42
}`
	oldStateJSON = `{
  "pending": {
    "version": 1735689600,
    "fingerprint": "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
    "previous": ".certsync/example.com/1735000000-aaaaaaaaaaaa"
  },
  "failed": {
    "version": 1735689600,
    "fingerprint": "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
    "error": "installing \"example.com\" version 1735689600: check failed",
    "at": "2025-01-01T03:00:00Z",
    "attempts": 2
  }
}`
)

func TestOldRecordsRead(t *testing.T) {
	t.Parallel()
	fp, err := crypto.ParseFingerprint("sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0")
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	rel := crypto.Release{Version: 1735689600, Serial: "3f2a", Fingerprint: fp, NotBefore: day, NotAfter: day.AddDate(0, 3, 0)}
	staged := Staged{Name: "example.com", Release: rel, Signer: "certsync-ed25519:AAAA",
		StagedAt: day.Add(5 * time.Minute), Sequence: 42}

	var gotStaged Staged
	if err := json.Unmarshal([]byte(oldStagedJSON), &gotStaged); err != nil || !reflect.DeepEqual(gotStaged, staged) {
		t.Errorf("old certsync.json read as %+v, %v; want %+v", gotStaged, err, staged)
	}
	if err := gotStaged.check("example.com"); err != nil {
		t.Errorf("old certsync.json refused: %v", err)
	}
	if raw, _ := json.MarshalIndent(&staged, "", "  "); string(raw) != oldStagedJSON {
		t.Errorf("certsync.json written as\n%s\nwant\n%s", raw, oldStagedJSON)
	}

	oldInstalledJSON := strings.TrimSuffix(oldStagedJSON, "\n}") + ",\n  \"installed_at\": \"2025-01-01T03:00:00Z\"\n}"
	installed := Installed{Staged: staged, InstalledAt: day.Add(3 * time.Hour)}
	var gotInstalled Installed
	if err := json.Unmarshal([]byte(oldInstalledJSON), &gotInstalled); err != nil || !reflect.DeepEqual(gotInstalled, installed) {
		t.Errorf("old installed certsync.json read as %+v, %v; want %+v", gotInstalled, err, installed)
	}
	if raw, _ := json.MarshalIndent(&installed, "", "  "); string(raw) != oldInstalledJSON {
		t.Errorf("installed certsync.json written as\n%s\nwant\n%s", raw, oldInstalledJSON)
	}

	id := crypto.Release{Version: rel.Version, Fingerprint: fp}
	state := installState{
		Pending: &pendingInstall{Release: id, Previous: ".certsync/example.com/1735000000-aaaaaaaaaaaa"},
		Failed: &failedInstall{Release: id, Error: `installing "example.com" version 1735689600: check failed`,
			At: day.Add(3 * time.Hour), Attempts: 2},
	}
	var gotState installState
	if err := json.Unmarshal([]byte(oldStateJSON), &gotState); err != nil || !reflect.DeepEqual(gotState, state) {
		t.Errorf("old state.json read as %+v %+v, %v; want %+v %+v", gotState.Pending, gotState.Failed, err, state.Pending, state.Failed)
	}
	if raw, _ := json.MarshalIndent(&state, "", "  "); string(raw) != oldStateJSON {
		t.Errorf("state.json written as\n%s\nwant\n%s", raw, oldStateJSON)
	}
	if !gotState.Failed.is(&staged) {
		t.Error("the failed install of an old state.json is not the staged version")
	}
}
