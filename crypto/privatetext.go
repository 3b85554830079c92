package crypto

import "strings"

// LooksLikePrivateKey reports whether s looks like private key material (an
// age identity, a PEM private key) pasted where a public key or a
// recipient belongs, so that an error about it must not repeat it.
func LooksLikePrivateKey(s string) bool {
	return strings.Contains(strings.ToUpper(s), "SECRET-KEY") || strings.Contains(s, "PRIVATE KEY")
}
