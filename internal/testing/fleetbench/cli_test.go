package fleetbench

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/testing/treetest"
)

// publishCLI publishes b as certbot's deploy hook does: `certsync publish`
// run as its own process on publisher.yaml written from the fleet's
// configuration and the lineage folder written from b, and returns how
// long the process took; the fleet then expects the version it stored. The publisher then competes with the benchmark's
// nodes for the cores as a program of its own, as on a real management
// host, and not for the scheduler of the process that runs the nodes.
func (f *fleet) publishCLI(b *crypto.Bundle) time.Duration {
	f.tb.Helper()
	dir := f.tb.TempDir()
	keyFile := filepath.Join(dir, "signing.key")
	if err := crypto.WriteKeyFile(keyFile, f.signer.MarshalPEM()); err != nil {
		f.tb.Fatal(err)
	}
	var y strings.Builder
	fmt.Fprintf(&y, "nats: {url: %q}\nsigning_key: %s\n", f.url, keyFile)
	if f.cfg.Stream.Replicas > 0 {
		fmt.Fprintf(&y, "stream: {replicas: %d}\n", f.cfg.Stream.Replicas)
	}
	y.WriteString("nodes:\n")
	for _, name := range f.names {
		fmt.Fprintf(&y, "  %s: %q\n", name, f.cfg.Nodes[name])
	}
	fmt.Fprintf(&y, "certificates:\n  %s: [%s]\n", certName, strings.Join(f.names, ", "))
	cfgFile := filepath.Join(dir, "publisher.yaml")
	treetest.WriteFile(f.tb, cfgFile, []byte(y.String()), 0o600)
	lineage := filepath.Join(dir, "live", certName)
	treetest.MkdirAll(f.tb, lineage, 0o700)
	for file, data := range map[string][]byte{crypto.FileCert: b.Cert, crypto.FileChain: b.Chain, crypto.FileFullChain: b.FullChain, crypto.FileKey: b.PrivKey} {
		treetest.WriteFile(f.tb, filepath.Join(lineage, file), data, 0o600)
	}
	cmd := exec.Command(certsyncBinary(f.tb), "publish", "--config", cfgFile, "--lineage", lineage)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		f.tb.Fatalf("certsync publish: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	stored, err := f.newPublisher().Bundles(ctx, []string{certName})
	if err != nil {
		f.tb.Fatal(err)
	}
	v := uint64(0)
	for _, bi := range stored {
		v = max(v, bi.Version)
	}
	if v <= f.published {
		f.tb.Fatalf("certsync publish stored nothing newer than version %d: %s", f.published, out)
	}
	f.published = v
	return took
}
