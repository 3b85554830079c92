package main

// The Puppet module an operator rolls certsync out with
// (deploy/puppet/certsync): it ships the deploy files byte for byte, its
// metadata asks for Puppet 7 or 8 and nothing else, every manifest and
// template passes `puppet parser validate`, `puppet epp validate` and
// `puppet-lint --fail-on-warnings`, its rspec-puppet specs pass, and
// `puppet apply` of certsync::node and certsync::publisher into a temporary
// root writes configurations that the real certsync runs with (rollout
// policies included): a published certificate ends up installed, and a
// second apply changes nothing.
//
// Every Puppet run gets its own confdir, vardir, codedir, logdir, rundir and
// HOME under the test's temporary folder, so nothing touches /etc/puppet or
// /var/lib/puppet; every path the module writes is a parameter pointing
// into that folder too.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/acmetest"
	"github.com/certsync/certsync/internal/testing/treetest"
	"github.com/certsync/certsync/publisher"
	"github.com/certsync/certsync/subscriber"
)

// puppetModuleDir is the module, relative to this package.
const puppetModuleDir = "../../deploy/puppet/certsync"

// puppetTimeout bounds one puppet, puppet-lint or rspec run.
const puppetTimeout = 5 * time.Minute

// puppetShipped maps each file the module ships as is (under files/) to the
// file of deploy/ it must equal byte for byte: one unit, one configuration,
// edited in one place.
var puppetShipped = map[string]string{
	"certsync-node.service":      "../../deploy/systemd/certsync-node.service",
	"certsync-republish.service": "../../deploy/systemd/certsync-republish.service",
	"certsync-republish.timer":   "../../deploy/systemd/certsync-republish.timer",
	"certsync-rollout.service":   "../../deploy/systemd/certsync-rollout.service",
	"certsync-server.service":    "../../deploy/systemd/certsync-server.service",
	"nats-server.conf":           "../../deploy/nats/nats-server.conf",
}

// TestPuppetModuleShipsDeployFiles: files/ holds exactly the units of
// deploy/systemd and deploy/nats/nats-server.conf, byte for byte, so the
// module installs what the unit tests check.
func TestPuppetModuleShipsDeployFiles(t *testing.T) {
	t.Parallel()
	entries, err := os.ReadDir(filepath.Join(puppetModuleDir, "files"))
	if err != nil {
		t.Fatal(err)
	}
	var shipped []string
	for _, e := range entries {
		shipped = append(shipped, e.Name())
	}
	var want []string
	for name := range puppetShipped {
		want = append(want, name)
	}
	for _, unit := range unitFiles(t) {
		if _, ok := puppetShipped[filepath.Base(unit)]; !ok {
			t.Errorf("%s is not shipped by the Puppet module: add it to files/ and to puppetShipped", unit)
		}
	}
	sort.Strings(want)
	if !slices.Equal(shipped, want) {
		t.Errorf("%s/files holds %v, want %v", puppetModuleDir, shipped, want)
	}
	for name, src := range puppetShipped {
		copyPath := filepath.Join(puppetModuleDir, "files", name)
		got, err := os.ReadFile(copyPath)
		if err != nil {
			t.Errorf("the module does not ship %s: %v", name, err)
			continue
		}
		orig, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, orig) {
			t.Errorf("%s differs from %s, which it must copy byte for byte: cp %s %s",
				filepath.Clean(copyPath), filepath.Clean(src), filepath.Clean(src), filepath.Clean(copyPath))
		}
	}
}

// TestPuppetModuleMetadata: metadata.json names the module, asks for Puppet
// >= 7.0.0 < 9.0.0 (Debian 12 ships 7.23) and depends on no other module
// (neither stdlib nor concat is on Debian's shelf); the module keeps its
// defaults in Hiera data; REFERENCE.md documents every class, defined
// type, type alias and function.
func TestPuppetModuleMetadata(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join(puppetModuleDir, "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Name         string            `json:"name"`
		Version      string            `json:"version"`
		Dependencies []json.RawMessage `json:"dependencies"`
		Requirements []struct {
			Name    string `json:"name"`
			Version string `json:"version_requirement"`
		} `json:"requirements"`
	}
	if err := json.Unmarshal(data, &meta); err != nil {
		t.Fatalf("metadata.json: %v", err)
	}
	if meta.Name != "certsync-certsync" || meta.Version == "" {
		t.Errorf("metadata.json names %q version %q, want certsync-certsync and a version", meta.Name, meta.Version)
	}
	if len(meta.Dependencies) != 0 {
		t.Errorf("metadata.json depends on %d modules, want none", len(meta.Dependencies))
	}
	if len(meta.Requirements) != 1 || meta.Requirements[0].Name != "puppet" || meta.Requirements[0].Version != ">= 7.0.0 < 9.0.0" {
		t.Errorf("metadata.json requirements %+v, want puppet >= 7.0.0 < 9.0.0", meta.Requirements)
	}
	for _, f := range []string{"hiera.yaml", "data/common.yaml", "README.md", "REFERENCE.md"} {
		if _, err := os.Stat(filepath.Join(puppetModuleDir, f)); err != nil {
			t.Errorf("the module has no %s: %v", f, err)
		}
	}
	ref, err := os.ReadFile(filepath.Join(puppetModuleDir, "REFERENCE.md"))
	if err != nil {
		t.Fatal(err)
	}
	decl := regexp.MustCompile(`(?m)^(?:class|define|type|function) ((?:certsync|Certsync)(?:::\w+)*)`)
	for _, path := range puppetFiles(t, ".pp") {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range decl.FindAllSubmatch(src, -1) {
			if !bytes.Contains(ref, []byte("### `"+string(m[1])+"`")) {
				t.Errorf("REFERENCE.md has no section \"### `%s`\" (declared in %s)", m[1], path)
			}
		}
	}
}

// TestPuppetValidate: puppet parser validate on every manifest, function and
// type alias, puppet epp validate on every template, puppet-lint
// --fail-on-warnings on all of them.
func TestPuppetValidate(t *testing.T) {
	t.Parallel()
	puppet := acmetest.RequireTool(t, "puppet")
	lint := acmetest.RequireTool(t, "puppet-lint")
	home := t.TempDir()
	manifests := puppetFiles(t, ".pp")
	if len(manifests) < 4 {
		t.Fatalf("found only %d Puppet files in %s", len(manifests), puppetModuleDir)
	}
	if out, code := runPuppet(t, home, "", puppet, append(append([]string{"parser", "validate"}, puppetSettings(home)...), manifests...)...); code != 0 {
		t.Errorf("puppet parser validate: exit status %d\n%s", code, out)
	}
	templates := puppetFiles(t, ".epp")
	if len(templates) == 0 {
		t.Fatalf("no templates in %s", puppetModuleDir)
	}
	for _, tmpl := range templates {
		if out, code := runPuppet(t, home, "", puppet, append(append([]string{"epp", "validate"}, puppetSettings(home)...), tmpl)...); code != 0 {
			t.Errorf("puppet epp validate %s: exit status %d\n%s", tmpl, code, out)
		}
	}
	if out, code := runPuppet(t, home, "", lint, append([]string{"--fail-on-warnings"}, manifests...)...); code != 0 || strings.TrimSpace(out) != "" {
		t.Errorf("puppet-lint --fail-on-warnings: exit status %d\n%s", code, out)
	}
}

// TestPuppetSpecs runs the module's rspec-puppet specs (spec/classes,
// spec/defines) with Debian's ruby-rspec-puppet, offline.
func TestPuppetSpecs(t *testing.T) {
	t.Parallel()
	acmetest.RequireTool(t, "puppet")
	rspec := acmetest.RequireTool(t, "rspec")
	home := t.TempDir()
	out, code := runPuppet(t, home, puppetModuleDir, rspec, "-I", "spec", "spec/classes", "spec/defines")
	if code != 0 || !regexp.MustCompile(`(?m)^\d+ examples, 0 failures`).MatchString(out) {
		t.Errorf("rspec: exit status %d\n%s", code, out)
	}
	// The specs write nothing into the checkout (rspec-puppet's own fixture
	// setup would: spec/fixtures with a link to the module).
	for _, dir := range []string{"fixtures", "functions", "hosts"} {
		if _, err := os.Lstat(filepath.Join(puppetModuleDir, "spec", dir)); err == nil {
			t.Errorf("rspec left spec/%s in the module's folder", dir)
		}
	}
}

// requirePuppetApply returns the puppet and systemd-analyze programs a
// `puppet apply` test runs; it skips or fails the test as
// acmetest.RequireRoot and RequireTool do.
func requirePuppetApply(t *testing.T) (puppet, analyze string) {
	t.Helper()
	acmetest.RequireRoot(t, "puppet apply gives the files it writes to root")
	return acmetest.RequireTool(t, "puppet"), acmetest.RequireTool(t, "systemd-analyze")
}

// TestPuppetApplyNode: `puppet apply` of certsync::node into a temporary
// root, as root. A bad setting first fails the whole run and writes
// nothing. The good run installs the binary, creates the age identity
// (whose recipient Puppet's report shows), writes node.yaml, which the real
// loader reads with every setting given, and the unit with a drop-in that
// systemd-analyze verify accepts. `certsync node sync` with that node.yaml
// then installs a published certificate into the root's install_dir. A
// second apply changes nothing.
func TestPuppetApplyNode(t *testing.T) {
	t.Parallel()
	puppet, analyze := requirePuppetApply(t)
	const name = "example.com"
	srv := startServer(t)
	le := newLineages(t)
	live, _ := le.Write(name, certOptions{})
	signingKey := filepath.Join(t.TempDir(), "signing.key")
	signing := keygenSigning(t, signingKey)

	root := puppetRoot(t)
	installDir := filepath.Join(root, "srv", "tls", name)
	node := map[string]any{
		"node_name":          "web1",
		"nats":               map[string]any{"url": srv.URL},
		"trusted_publishers": []any{signing},
		"stage_dir":          filepath.Join(root, "certsync", "live"),
		"manage_service":     false,
		"metrics_listen":     "127.0.0.1:9469",
		"status_interval":    "1m",
		"defaults":           map[string]any{"command_timeout": "30s"},
		"certificates": map[string]any{
			name: map[string]any{"install_dir": installDir, "check": "true", "reload": "true"},
			// Never published: here so that every setting goes through
			// the real loader.
			"every.example": map[string]any{
				"install_dir": filepath.Join(root, "srv", "haproxy", "every.example"), "schedule": "0 3 * * *",
				"check": `test -d "/"`, "reload": "true", "verify": "127.0.0.1:8443", "owner": "root", "group": 0,
				"cert_mode": "0640", "key_mode": "0600", "keep": 5, "splay": "5m", "expiry_deadline": "0s",
				"command_timeout": "2m", "verify_timeout": "45s", "combined": true,
			},
		},
	}

	// Bad input: one line naming the certificate and why, nothing written.
	bad := puppetCopy(node)
	bad["certificates"].(map[string]any)[name].(map[string]any)["cert_mode"] = "0666"
	out, code := puppetApply(t, puppet, root, puppetDeclare("certsync::node", bad))
	if code != 1 || !strings.Contains(out, `certificate "example.com": cert_mode 0666 is writable by group or others`) {
		t.Errorf("puppet apply with cert_mode 0666: exit status %d, want 1 and an error naming the certificate and the mode\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(root, "etc", "certsync")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed puppet apply left %s/etc/certsync (%v)", root, err)
	}

	out, code = puppetApply(t, puppet, root, puppetDeclare("certsync::node", node))
	if code != 2 {
		t.Fatalf("puppet apply certsync::node: exit status %d, want 2 (changes, no failure)\n%s", code, out)
	}
	recipient := regexp.MustCompile(`Exec\[certsync keygen node\]/returns: (age1[0-9a-z]+)`).FindStringSubmatch(out)
	if recipient == nil {
		t.Fatalf("puppet's report shows no recipient of the new identity:\n%s", out)
	}
	configDir := filepath.Join(root, "etc", "certsync")
	nodeYAML := filepath.Join(configDir, "node.yaml")
	identity := filepath.Join(configDir, "node.key")
	checkPuppetFile(t, filepath.Join(root, "usr", "local", "bin", "certsync"), 0o755, nil)
	checkPuppetFile(t, configDir, fs.ModeDir|0o700, nil)
	checkPuppetFile(t, nodeYAML, 0o600, nil)
	checkPuppetFile(t, identity, 0o600, nil)
	checkPuppetFile(t, filepath.Join(root, "etc", "systemd", "system", "certsync-node.service"), 0o644, mustRead(t, puppetShipped["certsync-node.service"]))
	if key, err := os.ReadFile(identity); err != nil || !bytes.Contains(key, []byte("# public key: "+recipient[1]+"\n")) {
		t.Errorf("%s is not the identity of %s (%v)", identity, recipient[1], err)
	}

	cfg, err := loadNodeConfig(nodeYAML)
	if err != nil {
		t.Fatalf("the real loader refuses the node.yaml Puppet wrote: %v\n%s", err, mustRead(t, nodeYAML))
	}
	every := cfg.Certificates["every.example"]
	if cfg.Node != "web1" || cfg.MetricsListen != "127.0.0.1:9469" || cfg.StatusInterval != time.Minute ||
		every.Schedule.String() != "0 3 * * *" || every.Check.String() != `test -d "/"` || every.Verify != "127.0.0.1:8443" ||
		every.Owner != "root" || every.Group != "0" || every.CertMode != 0o640 || every.KeyMode != 0o600 || every.Keep != 5 ||
		every.Splay != 5*time.Minute || every.ExpiryDeadline != subscriber.ExpiryDeadlineOff || every.CommandTimeout != 2*time.Minute ||
		every.VerifyTimeout != 45*time.Second || !every.Combined || cfg.Certificates[name].CommandTimeout != 30*time.Second {
		t.Errorf("node.yaml as loaded differs from what Puppet was given: node %q, metrics %q, status %v, %s %+v, %s %+v",
			cfg.Node, cfg.MetricsListen, cfg.StatusInterval, name, cfg.Certificates[name], "every.example", every)
	}

	// The unit with Puppet's drop-in: binary_path and node.yaml in the
	// root, the haproxy parent writable, and systemd accepts it all.
	unitDir := filepath.Join(root, "etc", "systemd", "system")
	dropIn := mustRead(t, filepath.Join(unitDir, "certsync-node.service.d", "puppet.conf"))
	for _, line := range []string{
		"Environment=CERTSYNC_CONFIG=" + nodeYAML,
		"ExecStart=" + filepath.Join(root, "usr", "local", "bin", "certsync") + " node run",
		"ReadWritePaths=-" + filepath.Join(root, "srv", "haproxy"),
		"ReadWritePaths=-" + filepath.Join(root, "srv", "tls"),
	} {
		if !bytes.Contains(dropIn, []byte("\n"+line+"\n")) {
			t.Errorf("the node unit's drop-in lacks the line %q:\n%s", line, dropIn)
		}
	}
	verifyUnits(t, analyze, unitDir, "certsync-node.service")

	// The node runs with what Puppet wrote.
	pub := writePublisherConfig(t, filepath.Join(t.TempDir(), "publisher.yaml"), publisherConfig{
		NATS: natsConfig{URL: srv.URL}, SigningKey: signingKey,
		Lineages: le.Live(), Nodes: map[string]string{"web1": recipient[1]},
		Certificates: map[string][]string{name: {"web1"}},
	})
	mustCertsync(t, "publish", "--config", pub, "--lineage", live)
	mustCertsync(t, "node", "sync", "--config", nodeYAML, "--timeout", "30s")
	checkInstalled(t, installDir, live)

	out, code = puppetApply(t, puppet, root, puppetDeclare("certsync::node", node))
	if code != 0 {
		t.Errorf("second puppet apply certsync::node: exit status %d, want 0 (nothing to change)\n%s", code, out)
	}
}

// TestPuppetApplyPublisher: `puppet apply` of certsync::publisher and
// certsync::server together (one management host) into a temporary root,
// as root. The signing key is created (its public line in Puppet's
// report), the hook Puppet installed publishes a certbot lineage exactly as
// certbot runs it, `certsync republish` with Puppet's publisher.yaml sends
// a renewal, and a node installs both. publisher.yaml holds a default
// rollout policy and certificates in the mapping form (one with its own
// policy, one with none, the one the node installs), which the real loader
// reads as given. The units (the rollout controller's too, with
// manage_rollout), their drop-ins and nats-server.conf are what deploy/
// ships and systemd accepts. A second apply changes nothing and keeps the
// signing key.
func TestPuppetApplyPublisher(t *testing.T) {
	t.Parallel()
	puppet, analyze := requirePuppetApply(t)
	const name = "example.com"
	srv := startServer(t)
	le := newLineages(t)
	live, _ := le.Write(name, certOptions{})
	// Certificates of two more nodes, none of which runs here: republish
	// seals them with the rollout policies Puppet wrote.
	const own, byDefault = "own.example", "default.example"
	le.Write(own, certOptions{})
	le.Write(byDefault, certOptions{})
	nodeDir := t.TempDir()
	recipient := keygenNode(t, filepath.Join(nodeDir, "node.key"))
	web2 := keygenNode(t, filepath.Join(t.TempDir(), "node.key"))
	web3 := keygenNode(t, filepath.Join(t.TempDir(), "node.key"))

	root := puppetRoot(t)
	hookDir := filepath.Join(root, "etc", "letsencrypt", "renewal-hooks", "deploy")
	if err := os.MkdirAll(hookDir, 0o755); err != nil { // certbot's package makes it
		t.Fatal(err)
	}
	manifest := puppetDeclare("certsync::publisher", map[string]any{
		"nats":  map[string]any{"url": srv.URL},
		"nodes": map[string]any{"web1": recipient, "web2": web2, "web3": web3},
		"certificates": map[string]any{
			// Installed at once by web1 below: no rollout.
			name: map[string]any{"nodes": []any{"web1"}, "rollout": "none"},
			own: map[string]any{"nodes": []any{"web2", "web3"}, "rollout": map[string]any{
				"canary": []any{"web2"}, "waves": []any{"50%", "100%"}, "soak": "0s", "wave_deadline": "2h", "max_failures": "50%",
			}},
			byDefault: []any{"web2", "web3"},
		},
		"rollout": map[string]any{
			"canary": "50%", "waves": []any{"100%"}, "soak": "15m", "wave_deadline": "30m", "max_failures": 1,
		},
		"lineages":       le.Live(),
		"hook_dir":       hookDir,
		"timeout":        "20s",
		"manage_service": false,
		"manage_rollout": true,
	}) + "\n" + puppetDeclare("certsync::server", map[string]any{"manage_service": false})
	out, code := puppetApply(t, puppet, root, manifest)
	if code != 2 {
		t.Fatalf("puppet apply certsync::publisher: exit status %d, want 2 (changes, no failure)\n%s", code, out)
	}
	signing := regexp.MustCompile(`Exec\[certsync keygen signing\]/returns: (certsync-ed25519:\S+)`).FindStringSubmatch(out)
	if signing == nil {
		t.Fatalf("puppet's report shows no public line of the new signing key:\n%s", out)
	}
	configDir := filepath.Join(root, "etc", "certsync")
	unitDir := filepath.Join(root, "etc", "systemd", "system")
	publisherYAML := filepath.Join(configDir, "publisher.yaml")
	signingKey := filepath.Join(configDir, "signing.key")
	hook := filepath.Join(hookDir, "certsync")
	checkPuppetFile(t, publisherYAML, 0o600, nil)
	checkPuppetFile(t, signingKey, 0o600, nil)
	checkPuppetFile(t, hook, 0o755, nil)
	checkPuppetFile(t, filepath.Join(configDir, "nats-server.conf"), 0o600, mustRead(t, puppetShipped["nats-server.conf"]))
	units := []string{"certsync-republish.service", "certsync-republish.timer", "certsync-rollout.service", "certsync-server.service"}
	for _, unit := range units {
		checkPuppetFile(t, filepath.Join(unitDir, unit), 0o644, mustRead(t, puppetShipped[unit]))
	}
	binary := filepath.Join(root, "usr", "local", "bin", "certsync")
	checkPuppetFile(t, filepath.Join(unitDir, "certsync-rollout.service.d"), fs.ModeDir|0o755, nil)
	checkPuppetFile(t, filepath.Join(unitDir, "certsync-rollout.service.d", "puppet.conf"), 0o644, nil)
	dropIn := mustRead(t, filepath.Join(unitDir, "certsync-rollout.service.d", "puppet.conf"))
	for _, line := range []string{"Environment=CERTSYNC_CONFIG=" + publisherYAML, "ExecStart=", "ExecStart=" + binary + " rollout run"} {
		if !bytes.Contains(dropIn, []byte("\n"+line+"\n")) {
			t.Errorf("the rollout unit's drop-in lacks the line %q:\n%s", line, dropIn)
		}
	}
	verifyUnits(t, analyze, unitDir, units...)
	keyBefore := mustRead(t, signingKey)

	// The real loader reads the policies as Puppet was given them.
	cfg, err := loadPublisherConfig(publisherYAML)
	if err != nil {
		t.Fatalf("the real loader refuses the publisher.yaml Puppet wrote: %v\n%s", err, mustRead(t, publisherYAML))
	}
	wantDefault := publisher.RolloutPolicy{CanaryPercent: 50, Waves: []int{100}, Soak: 15 * time.Minute, WaveDeadline: 30 * time.Minute, MaxFailures: 1}
	wantOwn := publisher.RolloutPolicy{Canary: []string{"web2"}, Waves: []int{50, 100}, Soak: publisher.SoakZero, WaveDeadline: 2 * time.Hour, MaxFailuresPercent: 50}
	for cert, want := range map[string]*publisher.RolloutPolicy{name: nil, own: &wantOwn, byDefault: &wantDefault} {
		if got := cfg.Policy(cert); !reflect.DeepEqual(got, want) {
			t.Errorf("publisher.yaml as loaded gives %s the rollout policy %+v, want %+v\n%s", cert, got, want, mustRead(t, publisherYAML))
		}
	}
	if !slices.Equal(cfg.Certificates[own], []string{"web2", "web3"}) || !slices.Equal(cfg.Certificates[name], []string{"web1"}) {
		t.Errorf("publisher.yaml as loaded gives the certificates the nodes %v, want %s [web1] and %s [web2 web3]", cfg.Certificates, name, own)
	}

	stage := filepath.Join(nodeDir, "stage")
	nodeYAML := writeNodeConfig(t, filepath.Join(nodeDir, "node.yaml"), nodeConfig{
		Name: "web1", NATS: natsConfig{URL: srv.URL}, Identity: filepath.Join(nodeDir, "node.key"),
		TrustedPublishers: []string{signing[1]}, StageDir: stage,
		Certificates: map[string]map[string]string{name: nil},
	})
	installDir := filepath.Join(nodeDir, "installed", name)

	// certbot runs the deploy hook with RENEWED_LINEAGE set, nothing else.
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, hook)
	cmd.Env = procEnv([]string{"RENEWED_LINEAGE=" + live})
	if hookOut, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the deploy hook Puppet installed: %v\n%s", err, hookOut)
	}
	mustCertsync(t, "node", "sync", "--config", nodeYAML, "--timeout", "30s")
	checkInstalled(t, installDir, live)

	le.Write(name, certOptions{})
	mustCertsync(t, "republish", "--config", publisherYAML)
	mustCertsync(t, "node", "sync", "--config", nodeYAML, "--timeout", "30s")
	checkInstalled(t, installDir, live)

	out, code = puppetApply(t, puppet, root, manifest)
	if code != 0 {
		t.Errorf("second puppet apply certsync::publisher: exit status %d, want 0 (nothing to change)\n%s", code, out)
	}
	if !bytes.Equal(mustRead(t, signingKey), keyBefore) {
		t.Errorf("the second puppet apply replaced the signing key")
	}
}

// TestPuppetTypesMatchNodeYAML: Puppet cannot derive one Struct type from
// another, so Certsync::Entry (a certificate's entry) and
// Certsync::Settings (defaults) list their keys each; they must be
// node.yaml's certificate keys, Settings all but install_dir, each key with
// the same type in both.
func TestPuppetTypesMatchNodeYAML(t *testing.T) {
	t.Parallel()
	key := regexp.MustCompile(`(?m)^  Optional\[(\w+)\]\s*=> (.+),$`)
	types := func(file string) ([]string, map[string]string) {
		var keys []string
		typ := map[string]string{}
		for _, m := range key.FindAllStringSubmatch(string(mustRead(t, filepath.Join(puppetModuleDir, "types", file))), -1) {
			keys = append(keys, m[1])
			typ[m[1]] = m[2]
		}
		return keys, typ
	}
	entry, entryTypes := types("entry.pp")
	settings, settingsTypes := types("settings.pp")
	if !slices.Equal(entry, certKeys) {
		t.Errorf("Certsync::Entry's keys %v, want node.yaml's %v", entry, certKeys)
	}
	if want := slices.DeleteFunc(slices.Clone(certKeys), func(k string) bool { return k == "install_dir" }); !slices.Equal(settings, want) {
		t.Errorf("Certsync::Settings's keys %v, want %v", settings, want)
	}
	for k, typ := range settingsTypes {
		if entryTypes[k] != typ {
			t.Errorf("%s is %s in Certsync::Settings, %s in Certsync::Entry", k, typ, entryTypes[k])
		}
	}
}

// puppetFiles returns the module's files whose names end in ext.
func puppetFiles(t *testing.T, ext string) []string {
	t.Helper()
	var paths []string
	err := filepath.WalkDir(puppetModuleDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "spec" {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ext) {
			paths = append(paths, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

// puppetSettings are the settings that keep a puppet run inside dir.
func puppetSettings(dir string) []string {
	var args []string
	for _, s := range []string{"confdir", "vardir", "codedir", "logdir", "rundir", "publicdir"} {
		args = append(args, "--"+s, filepath.Join(dir, "puppet", s))
	}
	return args
}

// facterNoise is what Facter prints, as an error that fails nothing, in a
// container whose /proc/1/environ even root may not read: left out of the
// output the tests show.
var facterNoise = regexp.MustCompile(`(?m)^Error: Facter: Permission denied @ rb_sysopen - /proc/1/environ\n`)

// runPuppet runs a Puppet tool (puppet, puppet-lint, rspec) in dir (the
// package's when empty) with HOME in home, and returns its output, stdout
// then stderr, and exit status.
func runPuppet(t *testing.T, home, dir, tool string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), puppetTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Dir = dir
	cmd.Env = procEnv([]string{"HOME=" + home})
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := facterNoise.ReplaceAllString(stdout.String()+stderr.String(), "")
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %s: still running after %v\n%s", tool, strings.Join(args, " "), puppetTimeout, out)
	case errors.As(err, &exit):
		return out, exit.ExitCode()
	case err != nil:
		t.Fatalf("run %s: %v", tool, err)
	}
	return out, 0
}

// puppetRoot makes a temporary root with the folders a Debian host has
// before Puppet runs (Puppet creates no parent folders).
func puppetRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, dir := range []string{"etc/systemd/system", "usr/local/bin", "srv", "certsync"} {
		treetest.MkdirAll(t, filepath.Join(root, dir), 0o755)
	}
	return root
}

// puppetApply runs `puppet apply --detailed-exitcodes -e` with the module
// and the certsync class pointed into root, followed by manifest, and
// returns its output and exit status (0 no change, 2 changes, 1 or 4 or 6
// failures).
func puppetApply(t *testing.T, puppet, root, manifest string) (string, int) {
	t.Helper()
	modules := filepath.Join(root, "puppet", "modules")
	treetest.MkdirAll(t, modules, 0o755)
	module, err := filepath.Abs(puppetModuleDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(module, filepath.Join(modules, "certsync")); err != nil && !errors.Is(err, fs.ErrExist) {
		t.Fatal(err)
	}
	base := puppetDeclare("certsync", map[string]any{
		"binary_source": certsyncBin(t),
		"binary_path":   filepath.Join(root, "usr", "local", "bin", "certsync"),
		"config_dir":    filepath.Join(root, "etc", "certsync"),
		"unit_dir":      filepath.Join(root, "etc", "systemd", "system"),
	})
	args := append([]string{"apply", "--detailed-exitcodes", "--color=false", "--modulepath", modules}, puppetSettings(root)...)
	return runPuppet(t, filepath.Join(root, "puppet"), "", puppet, append(args, "-e", base+"\n"+manifest)...)
}

// puppetDeclare is a resource-like class declaration with params.
func puppetDeclare(class string, params map[string]any) string {
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	sort.Strings(names)
	attrs := make([]string, len(names))
	for i, k := range names {
		attrs[i] = k + " => " + puppetValue(params[k])
	}
	return fmt.Sprintf("class { '%s': %s }", class, strings.Join(attrs, ", "))
}

// puppetValue writes v (strings, ints, bools, slices and maps of them) as
// a Puppet literal.
func puppetValue(v any) string {
	switch v := v.(type) {
	case string:
		return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
	case bool, int:
		return fmt.Sprint(v)
	case []any:
		items := make([]string, len(v))
		for i, item := range v {
			items[i] = puppetValue(item)
		}
		return "[" + strings.Join(items, ", ") + "]"
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		items := make([]string, len(keys))
		for i, k := range keys {
			items[i] = puppetValue(k) + " => " + puppetValue(v[k])
		}
		return "{" + strings.Join(items, ", ") + "}"
	}
	panic(fmt.Sprintf("puppetValue: %T", v))
}

// puppetCopy is a deep copy of params.
func puppetCopy(params map[string]any) map[string]any {
	c := make(map[string]any, len(params))
	for k, v := range params {
		if m, ok := v.(map[string]any); ok {
			v = puppetCopy(m)
		}
		c[k] = v
	}
	return c
}

// checkPuppetFile fails the test unless path is owned by root with mode
// (type and permission bits), and, where want is not nil, holds want.
func checkPuppetFile(t *testing.T, path string, mode fs.FileMode, want []byte) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Errorf("puppet apply did not write %s: %v", path, err)
		return
	}
	if got := fi.Mode() & (fs.ModeType | fs.ModePerm); got != mode {
		t.Errorf("%s has mode %v, want %v", path, got, mode)
	}
	if want != nil && !bytes.Equal(mustRead(t, path), want) {
		t.Errorf("%s differs from the file deploy/ ships", path)
	}
}

// verifyUnits runs systemd-analyze verify on units of unitDir with that
// folder as the unit path, so that their drop-ins apply.
func verifyUnits(t *testing.T, analyze, unitDir string, units ...string) {
	t.Helper()
	var paths []string
	for _, u := range units {
		paths = append(paths, filepath.Join(unitDir, u))
	}
	cmd := exec.Command(analyze, append([]string{"verify"}, paths...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+unitDir+":")
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify %s with Puppet's drop-ins: %v\n%s", strings.Join(units, " "), err, out)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
