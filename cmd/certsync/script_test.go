//go:build testscript

// The scripts need github.com/rogpeppe/go-internal/testscript, whose txtar
// package needs golang.org/x/tools in go.sum; until go.sum has it, they run
// with -tags testscript and a go.mod that has it (see the report of issue 2's
// e2e tests). Remove this build constraint once it does.

package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/certsync/certsync/internal/natstest"
	"github.com/certsync/certsync/internal/testcert"
)

// TestScripts runs the scripts in testdata/script: the command line as an
// operator meets it. Each script has, besides testscript's own:
//
//	$NATS_URL   a real in-process NATS server with JetStream, for this script only
//	$LE         a certbot configuration folder (like /etc/letsencrypt) for mkcert
//
// and these commands:
//
//	mkcert [-expired] [-badkey] NAME      write a certbot lineage $LE/live/NAME, or renew it when it exists;
//	                                      -expired: a leaf that expired; -badkey: privkey.pem of another key
//	expand FILE...                        replace $VAR and ${VAR} in the files with the script's variables
//	setenvfile VAR FILE                   set VAR to FILE's first line (say, a key printed by keygen)
//	mode PERM PATH...                     fail unless each path has exactly permission bits PERM (octal)
func TestScripts(t *testing.T) {
	t.Parallel()
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Setup: func(env *testscript.Env) error {
			tb, ok := env.T().(testing.TB)
			if !ok {
				return fmt.Errorf("testscript gives a %T, not a testing.TB", env.T())
			}
			env.Setenv("NATS_URL", natstest.URL(natstest.RunServer(tb)))
			env.Setenv("LE", env.WorkDir+"/le")
			env.Values[scriptCertsKey{}] = &scriptCerts{tb: tb, ca: testcert.NewCA(tb), versions: map[string]time.Time{}}
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mkcert":     cmdMkcert,
			"expand":     cmdExpand,
			"setenvfile": cmdSetenvFile,
			"mode":       cmdMode,
		},
	})
}

// scriptCertsKey keys a script's *scriptCerts in its values.
type scriptCertsKey struct{}

// scriptCerts is one script's CA and the NotBefore of each lineage's newest
// leaf, so that a renewal always gets a later version.
type scriptCerts struct {
	tb       testing.TB
	ca       *testcert.CA
	versions map[string]time.Time
}

func cmdMkcert(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! mkcert")
	}
	fs := flag.NewFlagSet("mkcert", flag.ContinueOnError)
	expired := fs.Bool("expired", false, "issue a leaf that expired")
	badKey := fs.Bool("badkey", false, "pair the leaf with another key")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		ts.Fatalf("usage: mkcert [-expired] [-badkey] NAME")
	}
	name := fs.Arg(0)
	c := ts.Value(scriptCertsKey{}).(*scriptCerts)
	notBefore := time.Now().Add(-time.Minute).Truncate(time.Second)
	if last, ok := c.versions[name]; ok && !notBefore.After(last) {
		notBefore = last.Add(time.Second)
	}
	o := testcert.Options{Names: []string{name, "*." + name}, NotBefore: notBefore}
	if *expired {
		o.NotBefore, o.Validity = notBefore.Add(-100*24*time.Hour), 90*24*time.Hour
	}
	leaf := c.ca.Issue(c.tb, o)
	if *badKey {
		leaf = leaf.WithKeyOf(c.ca.Issue(c.tb, testcert.Options{Names: o.Names}))
	}
	le := ts.Getenv("LE")
	if _, ok := c.versions[name]; ok {
		testcert.RenewLineage(c.tb, le, name, leaf)
	} else {
		testcert.WriteLineage(c.tb, le, name, leaf)
	}
	c.versions[name] = o.NotBefore
}

func cmdExpand(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: expand FILE...")
	}
	for _, f := range args {
		data := os.Expand(ts.ReadFile(f), ts.Getenv)
		ts.Check(os.WriteFile(ts.MkAbs(f), []byte(data), 0o644))
	}
}

func cmdSetenvFile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: setenvfile VAR FILE")
	}
	line, _, _ := strings.Cut(ts.ReadFile(args[1]), "\n")
	ts.Setenv(args[0], line)
}

func cmdMode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: mode PERM PATH...")
	}
	want, err := strconv.ParseUint(args[0], 8, 32)
	ts.Check(err)
	for _, p := range args[1:] {
		fi, err := os.Stat(ts.MkAbs(p))
		ts.Check(err)
		if got := fi.Mode().Perm(); got != os.FileMode(want) {
			ts.Fatalf("%s has mode %#o, want %#o", p, got, want)
		}
	}
}
