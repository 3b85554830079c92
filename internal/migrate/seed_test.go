package migrate

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func list(t *testing.T, cert, data string) List {
	t.Helper()
	file := "lists/" + cert
	s, err := ParseServerList(file, []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	return List{Certificate: cert, File: file, Servers: s}
}

func TestPlanSeed(t *testing.T) {
	t.Parallel()
	k1, k2 := newHostKey(t), newHostKey(t)
	kh, err := ParseKnownHosts("kh", []byte("web1.a.test "+k1+"\n127.0.0.11 "+k2+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	lists := []List{
		list(t, "a.test", "web1.a.test\n127.0.0.11\ndb1.a.test\n"),
		list(t, "b.test", "web1.a.test\n"),
		list(t, "c.test", "db1.a.test\n"),
	}
	seed, err := PlanSeed(lists, kh, SeedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(seed.Nodes) != 2 || seed.Nodes[0].Name != "127-0-0-11" || seed.Nodes[1].Name != "web1" ||
		strings.Join(seed.Nodes[1].Certificates, ",") != "a.test,b.test" || seed.Nodes[1].Recipient != k1 {
		t.Errorf("nodes: %+v", seed.Nodes)
	}
	if len(seed.Skipped) != 1 || seed.Skipped[0].Server.Host != "db1.a.test" || seed.Skipped[0].From != "lists/a.test line 3" {
		t.Errorf("skipped: %+v", seed.Skipped)
	}
	if strings.Join(seed.Empty, ",") != "c.test" || strings.Join(seed.Certificates["a.test"], ",") != "127-0-0-11,web1" {
		t.Errorf("certificates %v, empty %v", seed.Certificates, seed.Empty)
	}
	data, err := seed.PublisherYAML(PublisherOptions{NATS: "nats://127.0.0.1:4222", SigningKey: "/etc/certsync/signing.key", Header: "made by a test"})
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		NATS         map[string]string   `yaml:"nats"`
		SigningKey   string              `yaml:"signing_key"`
		Nodes        map[string]string   `yaml:"nodes"`
		Certificates map[string][]string `yaml:"certificates"`
	}
	if err := yaml.Unmarshal(data, &back); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if back.Nodes["web1"] != k1 || back.Nodes["127-0-0-11"] != k2 || len(back.Certificates) != 2 || back.NATS["url"] != "nats://127.0.0.1:4222" {
		t.Errorf("rendered:\n%s", data)
	}
	for _, want := range []string{"# made by a test\n", "# left out, no ssh-ed25519 host key: db1.a.test (a.test, c.test)\n", "# left out, no node with a host key: certificate c.test\n", "# web1.a.test\n", "a.test: [127-0-0-11, web1]\n"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("rendered file lacks %q:\n%s", want, data)
		}
	}
}

func TestPlanSeedRefuses(t *testing.T) {
	t.Parallel()
	k1, k2 := newHostKey(t), newHostKey(t)
	kh, err := ParseKnownHosts("kh", []byte("web1.a.test "+k1+"\nweb1.b.test "+k2+"\n127.0.0.11 "+k1+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		lists []List
		o     SeedOptions
		want  string
	}{
		{[]List{list(t, "a.test", "web1.a.test\n"), list(t, "b.test", "\n\nweb1.b.test\n")}, SeedOptions{},
			`servers "web1.a.test" (lists/a.test line 1) and "web1.b.test" (lists/b.test line 3) both make node name "web1"`},
		{[]List{list(t, "a.test", "web1.a.test\n127.0.0.11\n")}, SeedOptions{},
			`servers "127.0.0.11" (lists/a.test line 2) and "web1.a.test" (lists/a.test line 1) have the same ssh-ed25519 host key`},
		{[]List{list(t, "a.test", "nokey.a.test\n")}, SeedOptions{}, "no server of any list has an ssh-ed25519 host key"},
	} {
		_, err := PlanSeed(tt.lists, kh, tt.o)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("error %v, want %q", err, tt.want)
		}
	}
	// --full-names resolves the name collision.
	seed, err := PlanSeed([]List{list(t, "a.test", "web1.a.test\n"), list(t, "b.test", "web1.b.test\n")}, kh, SeedOptions{FullNames: true})
	if err != nil || len(seed.Nodes) != 2 || seed.Nodes[0].Name != "web1-a-test" {
		t.Errorf("full names: %v %+v", err, seed)
	}
}

func TestNodeYAML(t *testing.T) {
	t.Parallel()
	data, err := NodeYAML(NodeOptions{
		Header: "header", Name: "web1", NATS: "tls://127.0.0.1:4222", NKey: "/etc/certsync/web1.nk", CA: "/etc/certsync/ca.pem",
		Identity: "/etc/ssh/ssh_host_ed25519_key", TrustedPublisher: "certsync-ed25519:AAAA", StageDir: "/certsync/live",
		InstallParent: "/etc/letsencrypt/live", Check: "nginx -t", Reload: "systemctl reload nginx", Certificates: []string{"b.test", "a.test"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `# header
name: web1
nats:
  url: tls://127.0.0.1:4222
  nkey: /etc/certsync/web1.nk
  tls:
    ca: /etc/certsync/ca.pem
identity: /etc/ssh/ssh_host_ed25519_key
trusted_publishers:
  - "certsync-ed25519:AAAA"
stage_dir: /certsync/live
defaults:
  check: nginx -t
  reload: systemctl reload nginx
certificates:
  b.test:
    install_dir: /etc/letsencrypt/live/b.test
  a.test:
    install_dir: /etc/letsencrypt/live/a.test
`
	if string(data) != want {
		t.Errorf("got:\n%s\nwant:\n%s", data, want)
	}
}
