package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/certsync/certsync/internal/testing/natstest"
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
			le := filepath.Join(env.WorkDir, "le")
			env.Setenv("LE", le)
			env.Values[lineagesKey{}] = newLineagesAt(tb, le)
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

// lineagesKey keys a script's *lineages in its values.
type lineagesKey struct{}

func cmdMkcert(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! mkcert")
	}
	fs := flag.NewFlagSet("mkcert", flag.ContinueOnError)
	var o certOptions
	fs.BoolVar(&o.Expired, "expired", false, "issue a leaf that expired")
	fs.BoolVar(&o.BadKey, "badkey", false, "pair the leaf with another key")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		ts.Fatalf("usage: mkcert [-expired] [-badkey] NAME")
	}
	ts.Value(lineagesKey{}).(*lineages).Write(fs.Arg(0), o)
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
