package acmetest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// DeployHookFailed is the text certbot logs when a deploy hook exits with a
// non-zero code; certbot itself still exits 0. Tests look for it (or its
// absence) in Result.Output.
const DeployHookFailed = "Hook 'deploy-hook' reported error code"

// certbotTimeout bounds one certbot run.
const certbotTimeout = 3 * time.Minute

// Certbot runs the real certbot against a Pebble with its own configuration,
// work and log folders in the test's temporary folder, so it needs no root
// and touches nothing under /etc/letsencrypt.
type Certbot struct {
	// Bin is the certbot program.
	Bin string
	// ConfigDir holds accounts, renewal configurations and the lineages
	// (live/ and archive/), as /etc/letsencrypt does.
	ConfigDir string
	// WorkDir and LogsDir are certbot's --work-dir and --logs-dir.
	WorkDir, LogsDir string
	// Server is the ACME directory URL given as --server.
	Server string
	// CABundle is the PEM file certbot trusts for the ACME server's HTTPS
	// (REQUESTS_CA_BUNDLE).
	CABundle string
	// Env is added to certbot's environment, after the test process's own;
	// deploy hooks inherit it (for example PATH to a freshly built binary).
	Env []string
}

// Result is the outcome of one certbot run.
type Result struct {
	// Output is certbot's stdout and stderr together, including what its
	// hooks printed and DeployHookFailed when a deploy hook failed.
	Output string
	// ExitCode is certbot's exit code.
	ExitCode int
}

// NewCertbot returns a Certbot for p with fresh private folders (0700) in
// the test's temporary folder. It skips or fails the test as RequireTool does
// when certbot is not installed.
func NewCertbot(t testing.TB, p *Pebble) *Certbot {
	t.Helper()
	bin := RequireTool(t, "certbot")
	// t.TempDir makes each folder 0700.
	return &Certbot{
		Bin:       bin,
		ConfigDir: t.TempDir(),
		WorkDir:   t.TempDir(),
		LogsDir:   t.TempDir(),
		Server:    p.DirectoryURL,
		CABundle:  p.CACertFile,
	}
}

// Run runs certbot with args after the options every run shares (folders,
// server, non-interactive, terms agreed, no email) and returns its output and
// exit code. A certbot that cannot start or runs past its timeout fails the
// test; a non-zero exit does not.
func (c *Certbot) Run(t testing.TB, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), certbotTimeout)
	defer cancel()
	full := append([]string{
		"--config-dir", c.ConfigDir,
		"--work-dir", c.WorkDir,
		"--logs-dir", c.LogsDir,
		"--server", c.Server,
		"--non-interactive",
		"--agree-tos",
		"--register-unsafely-without-email",
	}, args...)
	cmd := exec.CommandContext(ctx, c.Bin, full...)
	env := append(os.Environ(),
		"REQUESTS_CA_BUNDLE="+c.CABundle,
		// Pebble is on loopback: never through a proxy.
		"NO_PROXY=127.0.0.1,localhost",
		"no_proxy=127.0.0.1,localhost",
	)
	cmd.Env = append(env, c.Env...)
	cmd.Dir = c.WorkDir
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("certbot %s: timed out after %v\n%s", strings.Join(args, " "), certbotTimeout, out)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return Result{Output: string(out)}
	case errors.As(err, &exit):
		return Result{Output: string(out), ExitCode: exit.ExitCode()}
	default:
		t.Fatalf("run certbot %s: %v", strings.Join(args, " "), err)
		return Result{}
	}
}

// Lineage is the live folder of the certificate name, where certbot keeps
// the symlinks cert.pem, chain.pem, fullchain.pem and privkey.pem.
func (c *Certbot) Lineage(name string) string {
	return filepath.Join(c.ConfigDir, "live", name)
}

// ObtainWildcard obtains a new certificate named name for domains (for
// example "*.example.test" and "example.test") with the manual plugin, the
// dns-01 challenge and /bin/true as the authentication hook: pebble accepts
// every challenge. A non-empty deployHook is a shell command certbot runs
// after issuance with RENEWED_LINEAGE and RENEWED_DOMAINS set, and saves for
// later renewals. It returns the lineage's live folder and certbot's result;
// a non-zero exit fails the test.
func (c *Certbot) ObtainWildcard(t testing.TB, name string, domains []string, deployHook string) (string, Result) {
	t.Helper()
	args := []string{
		"certonly",
		"--manual",
		"--preferred-challenges", "dns",
		"--manual-auth-hook", "/bin/true",
		"--cert-name", name,
	}
	for _, d := range domains {
		args = append(args, "-d", d)
	}
	if deployHook != "" {
		args = append(args, "--deploy-hook", deployHook)
	}
	res := c.Run(t, args...)
	if res.ExitCode != 0 {
		t.Fatalf("certbot certonly %s: exit code %d\n%s", name, res.ExitCode, res.Output)
	}
	return c.Lineage(name), res
}

// Renew forces the renewal of every lineage in ConfigDir now, without
// certbot's random sleep. An empty deployHook runs the hook saved in the
// renewal configuration; a non-empty one runs instead and, after a successful
// renewal, certbot saves it there in place of the old one, so later renewals
// run it too. certbot exits 0 even when the hook fails: look for
// DeployHookFailed in the output. A non-zero exit fails the test.
func (c *Certbot) Renew(t testing.TB, deployHook string) Result {
	t.Helper()
	args := []string{"renew", "--force-renewal", "--no-random-sleep-on-renew"}
	if deployHook != "" {
		args = append(args, "--deploy-hook", deployHook)
	}
	res := c.Run(t, args...)
	if res.ExitCode != 0 {
		t.Fatalf("certbot renew: exit code %d\n%s", res.ExitCode, res.Output)
	}
	return res
}
