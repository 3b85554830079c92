package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain makes the test binary double as the certsync command, as
// testscript does: it puts a copy of itself named "certsync" in a temporary
// folder first in PATH, and a process started under that name runs
// run(os.Args) instead of the tests. Go tests find it with certsyncBin (see
// helpers_test.go), scripts run it with "exec certsync …", and certbot runs
// it as its deploy hook.
func TestMain(m *testing.M) {
	if os.Getenv(sandboxEnv) != "" {
		// Started by inSandbox (units_test.go) in a private mount
		// namespace: set up a unit's sandbox and run a command in it.
		os.Exit(runSandbox())
	}
	if filepath.Base(os.Args[0]) == "certsync" {
		os.Args[0] = "certsync"
		os.Exit(run(os.Args, os.Stdout, os.Stderr))
	}
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "certsync-test-bin")
	if err != nil {
		fmt.Fprintf(os.Stderr, "TestMain: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := installSelf(filepath.Join(dir, "certsync")); err != nil {
		fmt.Fprintf(os.Stderr, "TestMain: installing the test binary as certsync: %v\n", err)
		return 1
	}
	os.Setenv("PATH", dir+string(filepath.ListSeparator)+os.Getenv("PATH"))
	// Under -race every process sleeps a second before exiting (to let
	// racing goroutines report) unless told otherwise; the tests run
	// hundreds of certsync processes. Scripts and certbot's hooks inherit it.
	if gorace := os.Getenv("GORACE"); !strings.Contains(gorace, "atexit_sleep_ms") {
		os.Setenv("GORACE", strings.TrimSpace(gorace+" atexit_sleep_ms=0"))
	}
	return m.Run()
}

// installSelf links the running test binary to path, or copies it where a
// link is impossible. A symlink would not do: some tools resolve it and run
// the binary under its own name.
func installSelf(path string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if os.Link(self, path) == nil {
		return nil
	}
	src, err := os.Open(self)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}
