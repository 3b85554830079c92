package subscriber

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
)

// validConfig is a Config that Validate accepts, installing below dir.
func validConfig(t *testing.T, dir string) Config {
	t.Helper()
	key, err := crypto.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Node:         "web1",
		Trusted:      []crypto.PublicKey{key.Public()},
		StageDir:     filepath.Join(dir, "stage"),
		Certificates: map[string]Certificate{"example.com": {InstallDir: filepath.Join(dir, "live", "example.com")}},
	}
}

// TestValidateDefaults: the zero fields get the library's defaults, the
// only copies (node.yaml's are these); explicit values stay.
func TestValidateDefaults(t *testing.T) {
	t.Parallel()
	cfg := validConfig(t, "/srv")
	cfg.StageDir = ""
	cfg.Certificates = map[string]Certificate{"example.com": {}, "example.org": {ExpiryDeadline: ExpiryDeadlineOff, Keep: 7}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.StageDir != "/certsync/live" || cfg.StatusInterval != 5*time.Minute {
		t.Errorf("StageDir %q, StatusInterval %v", cfg.StageDir, cfg.StatusInterval)
	}
	if want := (natsconn.Options{Name: "certsync node web1", InboxPrefix: "_INBOX_certsync_node_web1"}); cfg.NATS != want {
		t.Errorf("NATS = %+v, want %+v", cfg.NATS, want)
	}
	want := Certificate{
		Name:           "example.com",
		InstallDir:     "/etc/letsencrypt/live/example.com",
		CertMode:       0o644,
		KeyMode:        0o600,
		Keep:           3,
		ExpiryDeadline: 168 * time.Hour,
		CommandTimeout: 60 * time.Second,
		VerifyTimeout:  30 * time.Second,
	}
	if got := cfg.Certificates["example.com"]; !reflect.DeepEqual(got, want) {
		t.Errorf("example.com\n got %+v\nwant %+v", got, want)
	}
	if got := cfg.Certificates["example.org"]; got.ExpiryDeadline != ExpiryDeadlineOff || got.Keep != 7 {
		t.Errorf("example.org: ExpiryDeadline %v, Keep %d; want off and 7", got.ExpiryDeadline, got.Keep)
	}
	// Validating again changes nothing.
	again := cfg
	if err := again.Validate(); err != nil || !reflect.DeepEqual(again, cfg) {
		t.Errorf("second Validate: %v, %+v", err, again)
	}
}

// TestValidateRefuses: every rule of a node's configuration lives in the
// library: each bad setting is refused by Validate itself, with an error
// naming the setting as node.yaml does.
func TestValidateRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	live := func(name string) string { return filepath.Join(dir, "live", name) }
	cert := func(change func(*Certificate)) func(*Config) {
		return func(cfg *Config) {
			c := cfg.Certificates["example.com"]
			change(&c)
			cfg.Certificates["example.com"] = c
		}
	}
	tests := []struct {
		name   string
		change func(*Config)
		path   string
		want   string
	}{
		{"bad node name", func(c *Config) { c.Node = "web.1" }, "name", `invalid node name "web.1"`},
		{"no trusted key", func(c *Config) { c.Trusted = nil }, "trusted_publishers", "empty"},
		{"nats password alone", func(c *Config) { c.NATS.Password = "p" }, "nats.password", "password needs a user"},
		{"nats unknown scheme", func(c *Config) { c.NATS.URL = "http://127.0.0.1:4222" }, "nats.url", `server 1: want scheme nats, tls, ws or wss, got "http"`},
		{"nats empty list entry", func(c *Config) { c.NATS.URL = "nats://127.0.0.1:4222, ,nats://127.0.0.1:4223" }, "nats.url", "server 2 of the list is empty"},
		{"nats tls key without cert", func(c *Config) { c.NATS.TLS.Key = "/k" }, "nats.tls", "cert and key go together"},
		{"nats two logins", func(c *Config) { c.NATS.NKey, c.NATS.Creds = "/n", "/c" }, "nats", "set only one of creds, nkey or user and password"},
		{"relative stage_dir", func(c *Config) { c.StageDir = "stage" }, "stage_dir", `want a clean absolute path below /, got "stage"`},
		{"unclean stage_dir", func(c *Config) { c.StageDir = dir + "/a/../stage" }, "stage_dir", "clean absolute path"},
		{"metrics_listen without port", func(c *Config) { c.MetricsListen = "localhost" }, "metrics_listen", `want HOST:PORT, got "localhost"`},
		{"status_interval too short", func(c *Config) { c.StatusInterval = 500 * time.Millisecond }, "status_interval", "want 1s or more, got 500ms"},
		{"no certificates", func(c *Config) { c.Certificates = nil }, "certificates", "none"},
		{"bad certificate name", func(c *Config) { c.Certificates = map[string]Certificate{"../etc": {}} }, "certificates", `invalid certificate name "../etc"`},
		{"name mismatch", func(c *Config) { c.Certificates = map[string]Certificate{"a.example": {Name: "b.example"}} }, "certificates.a.example", `has name "b.example"`},
		{"install_dir relative", cert(func(c *Certificate) { c.InstallDir = "live/x" }), "certificates.example.com.install_dir", "clean absolute path"},
		{"install_dir root", cert(func(c *Certificate) { c.InstallDir = "/" }), "certificates.example.com.install_dir", "clean absolute path"},
		{"cert_mode group-writable", cert(func(c *Certificate) { c.CertMode = 0o664 }), "certificates.example.com.cert_mode", "mode 0664 is group- or other-writable"},
		{"cert_mode other-writable", cert(func(c *Certificate) { c.CertMode = 0o646 }), "certificates.example.com.cert_mode", "mode 0646 is group- or other-writable"},
		{"cert_mode setuid", cert(func(c *Certificate) { c.CertMode = 0o4644 }), "certificates.example.com.cert_mode", "want an octal mode from 0000 to 0777"},
		{"key_mode other-readable", cert(func(c *Certificate) { c.KeyMode = 0o604 }), "certificates.example.com.key_mode", "mode 0604 is open to others"},
		{"keep 51", cert(func(c *Certificate) { c.Keep = 51 }), "certificates.example.com.keep", "want an integer from 1 to 50, got 51"},
		{"keep negative", cert(func(c *Certificate) { c.Keep = -1 }), "certificates.example.com.keep", "want an integer from 1 to 50, got -1"},
		{"splay negative", cert(func(c *Certificate) { c.Splay = -time.Second }), "certificates.example.com.splay", "want a duration of 0s or more"},
		{"expiry_deadline negative", cert(func(c *Certificate) { c.ExpiryDeadline = -time.Hour }), "certificates.example.com.expiry_deadline", "want a positive duration (or ExpiryDeadlineOff), got -1h0m0s"},
		{"command_timeout negative", cert(func(c *Certificate) { c.CommandTimeout = -time.Second }), "certificates.example.com.command_timeout", "want a positive duration"},
		{"verify_timeout negative", cert(func(c *Certificate) { c.VerifyTimeout = -time.Second }), "certificates.example.com.verify_timeout", "want a positive duration"},
		{"verify port zero", cert(func(c *Certificate) { c.Verify = "127.0.0.1:0" }), "certificates.example.com.verify", "numeric port from 1 to 65535"},
		{"verify no host", cert(func(c *Certificate) { c.Verify = ":443" }), "certificates.example.com.verify", "no host"},
		{"owner with space", cert(func(c *Certificate) { c.Owner = "www data" }), "certificates.example.com.owner", `want a name or a numeric id, got "www data"`},
		{"group option-like", cert(func(c *Certificate) { c.Group = "-r" }), "certificates.example.com.group", "want a name or a numeric id"},
		{"install_dir in stage_dir", cert(func(c *Certificate) { c.InstallDir = filepath.Join(dir, "stage", "x") }), "certificates.example.com", "overlaps stage_dir"},
		{"stage_dir in the install store", func(c *Config) { c.StageDir = filepath.Join(dir, "live", ".certsync", "stage") }, "certificates.example.com", "overlaps the install store"},
		{"install_dir is its own store", cert(func(c *Certificate) { c.InstallDir = filepath.Join(dir, "live", ".certsync") }), "certificates.example.com", "overlaps its own install store"},
		{"shared install_dir", func(c *Config) {
			c.Certificates["example.org"] = Certificate{InstallDir: live("example.com")}
		}, "certificates.example.org", `install_dir "` + live("example.com") + `" overlaps certificate "example.com"'s`},
		{"nested install_dir", func(c *Config) {
			c.Certificates["example.org"] = Certificate{InstallDir: live("example.com/sub")}
		}, "certificates.example.org", `overlaps certificate "example.com"'s`},
		{"install_dir in another's store", func(c *Config) {
			c.Certificates["example.org"] = Certificate{InstallDir: live(".certsync/x")}
		}, "certificates.example.org", `overlaps certificate "example.com"'s install store`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := validConfig(t, dir)
			tt.change(&cfg)
			err := cfg.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Path != tt.path || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want a FieldError at %q with %q", err, tt.path, tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.path+": ") {
				t.Errorf("error %q does not start with its path", err)
			}
		})
	}
}
