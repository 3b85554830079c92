package crypto

import (
	"bytes"
	"errors"
	"fmt"

	"filippo.io/age"
)

// IdentityRecipient returns the recipient of a node's identity file, in the
// form publisher.yaml lists it under nodes (and [ParseRecipient] reads):
// "age1…" for an age identity file holding exactly one X25519 identity, or
// "ssh-ed25519 AAAA…" / "ssh-rsa AAAA…" (no comment) for an unencrypted
// OpenSSH private key such as /etc/ssh/ssh_host_ed25519_key. The recipient
// is derived from the private key itself, never from a .pub file beside it.
// Errors never contain key material.
func IdentityRecipient(data []byte) (string, error) {
	if len(data) > MaxKeyFileSize {
		return "", fmt.Errorf("deriving recipient: %d bytes exceeds the limit of %d", len(data), MaxKeyFileSize)
	}
	trimmed := bytes.TrimSpace(data)
	if bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		ids, err := parseSSHIdentity(trimmed)
		if err != nil {
			return "", err
		}
		return ids[0].(*sshIdentity).recipient, nil
	}
	ids, err := parseAgeIdentities(data)
	if err != nil {
		return "", err
	}
	if len(ids) != 1 {
		return "", fmt.Errorf("deriving recipient: the identity file holds %d identities; want exactly one", len(ids))
	}
	x, ok := ids[0].(*age.X25519Identity)
	if !ok {
		return "", errors.New("deriving recipient: post-quantum age identities are not supported; want an age X25519 identity (AGE-SECRET-KEY-1…)")
	}
	return x.Recipient().String(), nil
}
