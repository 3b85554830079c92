package acmetest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/loopback"
	"github.com/certsync/certsync/internal/testing/proctest"
	"github.com/certsync/certsync/internal/testing/testcert"

	"github.com/certsync/certsync/internal/testing/logtest"
)

// pebbleEnv makes pebble deterministic and fast: every challenge is valid
// without a lookup, validation does not sleep, no good nonce is rejected, and
// no authorization is reused (each order goes through its challenge, as a
// renewal months later does with a real CA).
var pebbleEnv = []string{
	"PEBBLE_VA_ALWAYS_VALID=1",
	"PEBBLE_VA_NOSLEEP=1",
	"PEBBLE_WFE_NONCEREJECT=0",
	"PEBBLE_AUTHZREUSE=0",
	"PEBBLE_CHAIN_LENGTH=1",
	"PEBBLE_ALTERNATE_ROOTS=0",
}

// pebbleStartTimeout bounds how long StartPebble waits for the directory to
// answer, pebbleStopTimeout how long the cleanup waits for pebble to exit
// after SIGTERM before it kills it.
const (
	pebbleStartTimeout = 20 * time.Second
	pebbleStopTimeout  = 10 * time.Second
)

// Pebble is a running pebble server, stopped when the test ends.
type Pebble struct {
	// DirectoryURL is the ACME directory, https://127.0.0.1:PORT/dir: give
	// it to certbot as --server.
	DirectoryURL string
	// ManagementURL is pebble's management interface,
	// https://127.0.0.1:PORT, serving /roots/0 and /intermediates/0.
	ManagementURL string
	// CACertFile is the PEM file of the CA that signed pebble's own HTTPS
	// certificate: the file to trust to talk to pebble
	// (REQUESTS_CA_BUNDLE for certbot). It is not the CA that issues ACME
	// certificates; see IssuerRoots.
	CACertFile string

	client *http.Client
	out    *logtest.Buffer
}

// StartPebble runs the pebble binary on loopback random ports, with a config
// file and an HTTPS certificate for 127.0.0.1 and localhost made in the
// test's temporary folder (Debian ships pebble without its test
// certificates), waits until the directory answers over HTTPS, and kills
// pebble when the test ends. It skips or fails the test as RequireTool does
// when pebble is not installed.
func StartPebble(t testing.TB) *Pebble {
	t.Helper()
	bin := RequireTool(t, "pebble")
	dir := t.TempDir()
	caFile, certFile, keyFile := writeServerCert(t, dir)
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatalf("read pebble ca %q: %v", caFile, err)
	}
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			Proxy:           nil,
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		},
	}
	t.Cleanup(client.CloseIdleConnections)

	// The ports are reserved by listening and closing, so another process
	// may take one before pebble binds it; pebble then exits and a new set
	// of ports is tried.
	var lastErr error
	for attempt := range 3 {
		p, err := startPebble(t, bin, dir, attempt, certFile, keyFile, client)
		if err == nil {
			p.CACertFile = caFile
			return p
		}
		lastErr = err
	}
	t.Fatalf("start pebble: %v", lastErr)
	return nil
}

type pebbleConfig struct {
	Pebble pebbleSettings `json:"pebble"`
}

type pebbleSettings struct {
	ListenAddress           string `json:"listenAddress"`
	ManagementListenAddress string `json:"managementListenAddress"`
	Certificate             string `json:"certificate"`
	PrivateKey              string `json:"privateKey"`
	HTTPPort                int    `json:"httpPort"`
	TLSPort                 int    `json:"tlsPort"`
	OCSPResponderURL        string `json:"ocspResponderURL"`
	ExternalAccountBinding  bool   `json:"externalAccountBindingRequired"`
}

func startPebble(t testing.TB, bin, dir string, attempt int, certFile, keyFile string, client *http.Client) (*Pebble, error) {
	t.Helper()
	ports := loopback.FreePorts(t, 4)
	cfg := pebbleConfig{Pebble: pebbleSettings{
		ListenAddress:           fmt.Sprintf("127.0.0.1:%d", ports[0]),
		ManagementListenAddress: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		Certificate:             certFile,
		PrivateKey:              keyFile,
		// With PEBBLE_VA_ALWAYS_VALID nothing connects to these, but
		// pebble wants them set.
		HTTPPort: ports[2],
		TLSPort:  ports[3],
	}}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode pebble config: %w", err)
	}
	cfgFile := filepath.Join(dir, fmt.Sprintf("pebble-config-%d.json", attempt))
	if err := os.WriteFile(cfgFile, data, 0o600); err != nil {
		return nil, fmt.Errorf("write pebble config %q: %w", cfgFile, err)
	}

	p := &Pebble{
		DirectoryURL:  "https://" + cfg.Pebble.ListenAddress + "/dir",
		ManagementURL: "https://" + cfg.Pebble.ManagementListenAddress,
		client:        client,
		out:           &logtest.Buffer{},
	}
	// -dnsserver points at a loopback port nobody serves, so pebble never
	// asks an outside resolver (always-valid mode makes no lookups anyway).
	cmd := exec.Command(bin, "-config", cfgFile, "-strict=false",
		"-dnsserver", fmt.Sprintf("127.0.0.1:%d", ports[2]))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), pebbleEnv...)
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	proc, err := proctest.Start(cmd)
	if err != nil {
		return nil, err
	}
	stop := func() { proc.Stop(pebbleStopTimeout) }
	if err := proc.WaitServing(pebbleStartTimeout, func() error { return p.get(p.DirectoryURL, nil) }); err != nil {
		stop()
		return nil, fmt.Errorf("pebble directory %s: %w\n%s", p.DirectoryURL, err, p.out.String())
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("pebble output:\n%s", p.out.String())
		}
	})
	return p, nil
}

// get fetches url from pebble and, when into is not nil, copies the body
// (at most 1 MiB) into it.
func (p *Pebble) get(url string, into *[]byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: %s", url, resp.Status)
	}
	if into != nil {
		*into = body
	}
	return nil
}

// IssuerRoots returns, in PEM, the root certificate that issues this
// pebble's ACME certificates. Pebble makes a new one at every start and
// serves it on its management port (/roots/0); a certbot lineage's chain.pem
// holds the intermediate under it.
func (p *Pebble) IssuerRoots(t testing.TB) []byte {
	t.Helper()
	var body []byte
	if err := p.get(p.ManagementURL+"/roots/0", &body); err != nil {
		t.Fatalf("fetch pebble issuing root: %v", err)
	}
	if block, _ := pem.Decode(body); block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("fetch pebble issuing root: no PEM certificate in %q", body)
	}
	return body
}

// Output returns what pebble has written to stdout and stderr so far.
func (p *Pebble) Output() string { return p.out.String() }

// writeServerCert makes a CA and an HTTPS certificate for 127.0.0.1, ::1 and
// localhost signed by it, writes them to dir, and returns the three paths:
// the CA's root (for REQUESTS_CA_BUNDLE), the full chain and the key.
func writeServerCert(t testing.TB, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	ca := testcert.NewCA(t)
	c := ca.Issue(t, testcert.Options{Names: []string{"localhost", "127.0.0.1", "::1"}})
	caFile = filepath.Join(dir, "https-ca.pem")
	certFile = filepath.Join(dir, "https-cert.pem")
	keyFile = filepath.Join(dir, "https-key.pem")
	for _, f := range []struct {
		path string
		data []byte
		perm os.FileMode
	}{{caFile, ca.RootPEM, 0o644}, {certFile, c.FullChain, 0o644}, {keyFile, c.PrivKey, 0o600}} {
		if err := os.WriteFile(f.path, f.data, f.perm); err != nil {
			t.Fatalf("write %s: %v", f.path, err)
		}
	}
	return caFile, certFile, keyFile
}
