// Package acmetest runs the real ACME pieces for end-to-end tests: Debian's
// pebble (Let's Encrypt's test CA) and certbot, on loopback, in the test's
// temporary folder, with no root needed.
//
// A test starts pebble, then obtains and renews a wildcard certificate with
// certbot, exactly as the management host does in production:
//
//	p := acmetest.StartPebble(t)
//	cb := acmetest.NewCertbot(t, p)
//	lineage, _ := cb.ObtainWildcard(t, "example", []string{"*.example.test", "example.test"}, "certsync publish --config "+cfg)
//	res := cb.Renew(t, "")
//	if strings.Contains(res.Output, acmetest.DeployHookFailed) { … }
//
// Pebble runs with every challenge valid and no artificial sleeps or nonce
// rejections, so an issuance takes a few seconds, most of it certbot's
// Python start-up. Its HTTPS certificate is made per test (Debian ships
// none); certbot trusts it through REQUESTS_CA_BUNDLE. The CA that signs the
// issued certificates is new at every pebble start: IssuerRoots returns it.
//
// certbot exits 0 even when a deploy hook fails; Result.Output holds what it
// logged, and DeployHookFailed is the line to look for.
//
// RequireTool finds an outside program (pebble, certbot, nginx, nats); when
// it is missing the test skips with the install command, or fails under
// CI=true.
package acmetest
