// Package logtest collects what loggers and processes write during a test,
// safely for concurrent writers and a reading test, and finds the JSON log
// records certsync writes (log/slog's JSON handler) by their message.
package logtest

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
)

// Buffer is a bytes.Buffer safe for concurrent writers and readers. The
// zero value is ready to use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Events returns the JSON records written so far whose msg is msg.
func (b *Buffer) Events(msg string) []map[string]any { return Events(b.String(), msg) }

// Events returns the JSON records in log whose msg is msg, in order. Lines
// that are not JSON objects are skipped.
func Events(log, msg string) []map[string]any {
	var out []map[string]any
	for line := range strings.Lines(log) {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}
