package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certsync/certsync/internal/testing/treetest"
)

// TestSymlinkTricksE2E is acceptance 3 of issue 4 for the node's disk:
// someone who can change the folders around the stage and install paths
// (but not the node's configuration) points them elsewhere with a symbolic
// link before `certsync node sync` runs. The node must refuse with an error
// naming the link, write nothing through it, and leave what it holds as it
// was; once the link is gone, a renewal arrives as usual.
//
// Each case has its own node, certificate and publisher key on one server.
func TestSymlinkTricksE2E(t *testing.T) {
	t.Parallel()
	srv := startServer(t)

	tests := []struct {
		name, node, cert string
		// rootOnly cases chown a folder to another user.
		rootOnly bool
		// stages: the trick is on the install side, so the pending
		// renewal is rightly staged; only installing must be refused.
		stages bool
		// trick points a path of the node elsewhere and returns the link
		// made, the folder it leads to, and how to undo it.
		trick func(t *testing.T, n *fleetNode, cert string) (link, target string, undo func())
	}{
		{
			name: "stage folder of the certificate is a link", node: "stagelink", cert: "a.example",
			trick: func(t *testing.T, n *fleetNode, cert string) (string, string, func()) {
				// The attacker's folder holds a copy of what is staged, so
				// that following the link would look like business as usual.
				link := filepath.Join(n.StageDir, cert)
				target := filepath.Join(attackerDir(t), cert)
				treetest.CopyFiles(t, link, target)
				return link, target, treetest.SwapForLink(t, link, target, link+".real")
			},
		},
		{
			name: "parent of stage_dir is a link", node: "stageparent", cert: "b.example",
			trick: func(t *testing.T, n *fleetNode, cert string) (string, string, func()) {
				link := filepath.Dir(n.StageDir)
				target := attackerDir(t)
				return link, target, treetest.SwapForLink(t, link, target, link+".real")
			},
		},
		{
			name: "parent of install_dir is a link to another user's folder", node: "installparent", cert: "c.example", rootOnly: true, stages: true,
			trick: func(t *testing.T, n *fleetNode, cert string) (string, string, func()) {
				link := filepath.Dir(installDirOf(n, cert))
				target := attackerDir(t)
				if err := os.Chown(target, 65534, 65534); err != nil {
					t.Fatal(err)
				}
				return link, target, treetest.SwapForLink(t, link, target, link+".real")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.rootOnly && os.Geteuid() != 0 {
				t.Skip("needs root to give a folder to uid 65534")
			}
			le := newLineages(t)
			lineage, _ := le.Write(tt.cert, certOptions{})
			f := newFleet(t, fleetOptions{URL: srv.URL, Lineages: le.Live(), Certificates: map[string][]string{tt.cert: {tt.node}}})
			n := f.Nodes[tt.node]
			// The stage folder one level down, so that its parent is the
			// node's own: <node>/var/stage, and install_dir beside it in
			// <node>/installed/<cert>.
			n.StageDir = filepath.Join(f.Dir, tt.node, "var", "stage")
			writeNodeConfig(t, n.Config, nodeConfig{
				Name: n.Name, NATS: natsConfig{URL: srv.URL}, Identity: filepath.Join(f.Dir, tt.node, "node.key"),
				TrustedPublishers: []string{f.Signing}, StageDir: n.StageDir,
				Certificates: map[string]map[string]string{tt.cert: {"install_dir": installDirOf(n, tt.cert)}},
			})
			mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
			f.sync(t, tt.node)
			checkStaged(t, n.StageDir, tt.cert, lineage)
			checkInstalled(t, installDirOf(n, tt.cert), lineage)

			// A renewal is pending when the trick is played.
			held := filepath.Join(t.TempDir(), "held")
			treetest.CopyFiles(t, lineage, held) // the live folder's links lead to the files
			le.Write(tt.cert, certOptions{})
			mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
			dirs := []string{filepath.Dir(installDirOf(n, tt.cert))}
			if !tt.stages {
				dirs = append(dirs, filepath.Dir(n.StageDir))
			}
			before := treetest.Snapshot(t, dirs...)
			link, target, undo := tt.trick(t, n, tt.cert)
			targetBefore := treetest.Snapshot(t, target)

			res := certsyncCmd(t, "node", "sync", "--config", n.Config, "--timeout", "30s")
			errs := res.errorLines()
			named := strings.Contains(strings.Join(errs, "\n"), link)
			if res.Code != 1 || len(errs) != 1 || !named {
				t.Errorf("node sync through %s: exit %d, want 1 and one error line naming %s; stderr:\n%s", link, res.Code, link, res.Stderr)
			}
			checkStatusRefused(t, "through "+link, f.Publisher, tt.node, tt.cert, "")
			treetest.Unchanged(t, "the link's target", targetBefore, target)
			if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Errorf("%s is no longer the link: %v", link, err)
			}
			undo()
			treetest.Unchanged(t, "the node's folders", before, dirs...)
			// What is installed is still the certificate held before.
			checkInstalled(t, installDirOf(n, tt.cert), held)

			le.Write(tt.cert, certOptions{})
			mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
			f.sync(t, tt.node)
			checkStaged(t, n.StageDir, tt.cert, lineage)
			checkInstalled(t, installDirOf(n, tt.cert), lineage)
		})
	}
}

// installDirOf is where node n installs certificate cert in
// TestSymlinkTricksE2E.
func installDirOf(n *fleetNode, cert string) string {
	return filepath.Join(filepath.Dir(filepath.Dir(n.StageDir)), "installed", cert)
}

// attackerDir is a new empty folder outside the node's, like /tmp/attacker.
func attackerDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "attacker")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
