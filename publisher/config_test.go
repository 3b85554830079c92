package publisher

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/testing/testkeys"
	"github.com/certsync/certsync/internal/wire"
)

// recipients returns two age recipients, an SSH one and an age identity
// (a secret) for a test.
func recipients(t *testing.T) (r1, r2, sshKey, secret string) {
	t.Helper()
	a := testkeys.X25519(t)
	b := testkeys.X25519(t)
	return a.Recipient().String(), b.Recipient().String(), testkeys.Ed25519(t).Line, a.String()
}

// TestConfigValidateDefaults: the zero fields get the library's defaults,
// the only copies (publisher.yaml's are these; the stream's are wire's).
func TestConfigValidateDefaults(t *testing.T) {
	t.Parallel()
	r1, _, _, _ := recipients(t)
	cfg := Config{Nodes: map[string]string{"web1": r1}, Certificates: map[string][]string{"example.com": {"web1"}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if want := (natsconn.Options{Name: "certsync publisher", InboxPrefix: "_INBOX_certsync_publisher"}); cfg.NATS != want {
		t.Errorf("NATS = %+v, want %+v", cfg.NATS, want)
	}
	if want := (wire.StreamOptions{Replicas: 1, History: 5, DuplicateWindow: 24 * time.Hour, ConsumerReplicas: 1}); cfg.Stream != want {
		t.Errorf("Stream = %+v, want %+v", cfg.Stream, want)
	}
	if cfg.Lineages != "/etc/letsencrypt/live" || cfg.Timeout != 30*time.Second {
		t.Errorf("Lineages %q, Timeout %v", cfg.Lineages, cfg.Timeout)
	}
	// A publisher for setup or inspect needs no certificate.
	empty := Config{}
	if err := empty.Validate(); err != nil {
		t.Errorf("Validate without certificates: %v", err)
	}
}

// TestConfigValidateRefuses: node names, recipients, certificates and the
// stream settings are checked by the library itself, each error naming the
// setting as publisher.yaml does, never repeating a secret.
func TestConfigValidateRefuses(t *testing.T) {
	t.Parallel()
	r1, r2, sshKey, secret := recipients(t)
	tests := []struct {
		name   string
		change func(*Config)
		path   string
		want   string
	}{
		{"bad node name", func(c *Config) { c.Nodes["web.1"] = r2 }, "nodes", `invalid node name "web.1"`},
		{"bad recipient", func(c *Config) { c.Nodes["web2"] = "age1nope" }, "nodes.web2", "parsing recipient"},
		{"private key as recipient", func(c *Config) { c.Nodes["web2"] = secret }, "nodes.web2", "this is a private key, not a recipient"},
		{"shared recipient", func(c *Config) { c.Nodes["web2"] = r1 }, "nodes.web2", `same recipient as node "web1"`},
		{"shared SSH recipient, other comment", func(c *Config) {
			c.Nodes["web1"], c.Nodes["web2"] = sshKey+" root@a", sshKey+" root@b"
		}, "nodes.web2", `same recipient as node "web1"`},
		{"bad certificate name", func(c *Config) { c.Certificates["../etc"] = []string{"web1"} }, "certificates", `invalid certificate name "../etc"`},
		{"no nodes", func(c *Config) { c.Certificates["example.com"] = nil }, "certificates.example.com", "no nodes"},
		{"unknown node", func(c *Config) { c.Certificates["example.com"] = []string{"web1", "web9"} }, "certificates.example.com[1]", `unknown node "web9"`},
		{"node listed twice", func(c *Config) { c.Certificates["example.com"] = []string{"web1", "web1"} }, "certificates.example.com[1]", `node "web1" listed twice`},
		{"bad node in list", func(c *Config) { c.Certificates["example.com"] = []string{"../x"} }, "certificates.example.com[0]", `invalid node name "../x"`},
		{"relative lineages", func(c *Config) { c.Lineages = "live" }, "lineages", `want a clean absolute path below /, got "live"`},
		{"replicas 6", func(c *Config) { c.Stream.Replicas = 6 }, "stream.replicas", "want an integer from 1 to 5, got 6"},
		{"history 101", func(c *Config) { c.Stream.History = 101 }, "stream.history", "want an integer from 1 to 100, got 101"},
		{"consumer replicas above the stream's", func(c *Config) { c.Stream.ConsumerReplicas = 3 }, "stream.consumer_replicas", "want an integer from 1 to stream.replicas (1), got 3"},
		{"negative duplicate window", func(c *Config) { c.Stream.DuplicateWindow = -time.Second }, "stream.duplicate_window", "want a positive duration"},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, "timeout", "want a positive duration"},
		{"nats password alone", func(c *Config) { c.NATS.Password = secret }, "nats.password", "password needs a user"},
		{"nats unknown scheme", func(c *Config) { c.NATS.URL = "http://u:" + secret + "@127.0.0.1:4222" }, "nats.url", `server 1: want scheme nats, tls, ws or wss, got "http"`},
		{"nats empty list entry", func(c *Config) { c.NATS.URL = "nats://u:" + secret + "@127.0.0.1:4222,,nats://127.0.0.1:4223" }, "nats.url", "server 2 of the list is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := Config{Nodes: map[string]string{"web1": r1}, Certificates: map[string][]string{"example.com": {"web1"}}}
			tt.change(&cfg)
			err := cfg.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Path != tt.path || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want a FieldError at %q with %q", err, tt.path, tt.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error repeats a secret: %v", err)
			}
			if _, err := New(cfg, nil); !errors.As(err, &fe) {
				t.Errorf("New = %v, want the FieldError", err)
			}
		})
	}
}

func TestFirstNames(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		items []string
		want  string
	}{
		{nil, ""},
		{[]string{"a"}, "a"},
		{[]string{"a", "b", "c"}, "a, b, c"},
		{[]string{"a", "b", "c", "d", "e"}, "a, b, c and 2 more"},
	} {
		if got := FirstNames(tt.items, 3, ", "); got != tt.want {
			t.Errorf("FirstNames(%q) = %q, want %q", tt.items, got, tt.want)
		}
	}
}
