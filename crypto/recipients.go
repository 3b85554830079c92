package crypto

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"golang.org/x/crypto/ssh"
)

// recipientKinds lists the accepted recipient forms for error messages.
const recipientKinds = `"age1…" (age X25519), "ssh-ed25519 AAAA…" or "ssh-rsa AAAA…"`

// ParseRecipient parses a node's recipient: an age X25519 recipient
// ("age1…"), or an OpenSSH public key line of type ssh-ed25519 or ssh-rsa,
// optionally followed by a comment (the form of /etc/ssh/ssh_host_*_key.pub).
// Surrounding white space is ignored.
func ParseRecipient(s string) (age.Recipient, error) {
	t := strings.TrimSpace(s)
	bad := func(why string) error {
		return fmt.Errorf("parsing recipient %q: %s; want %s", t, why, recipientKinds)
	}
	switch {
	case strings.HasPrefix(t, "age1pq1"):
		return nil, bad("post-quantum age recipients are not supported")
	case strings.HasPrefix(t, "age1"):
		r, err := age.ParseX25519Recipient(t)
		if err != nil {
			return nil, bad("not a valid age X25519 recipient")
		}
		return newX25519Recipient(r, t), nil
	case strings.HasPrefix(t, "ssh-ed25519 "), strings.HasPrefix(t, "ssh-rsa "):
		pub, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(t))
		if err != nil || len(bytes.TrimSpace(rest)) != 0 {
			return nil, bad("not one valid SSH public key line")
		}
		var r age.Recipient
		var tag string
		var key *curve25519Key
		switch pub.Type() {
		case ssh.KeyAlgoED25519:
			r, err = agessh.NewEd25519Recipient(pub)
			tag, key = sshEd25519Key(pub)
		case ssh.KeyAlgoRSA:
			r, err = agessh.NewRSARecipient(pub)
		default:
			return nil, bad(fmt.Sprintf("SSH key type %q", pub.Type()))
		}
		if err != nil {
			return nil, bad(err.Error())
		}
		// The canonical text, without the comment: what the stanza
		// index hashes (index.go).
		return &sshRecipient{Recipient: r, text: sshPublicText(pub), tag: tag, key: key}, nil
	default:
		// The value is not echoed: it may be a secret pasted in the wrong place.
		return nil, fmt.Errorf("parsing recipient: unknown kind; want %s", recipientKinds)
	}
}

// ParseIdentities parses a node's identity file: either an age identity
// file (lines "AGE-SECRET-KEY-1…", empty lines and "#" comments) or an
// unencrypted OpenSSH private key of type ed25519 or rsa, such as
// /etc/ssh/ssh_host_ed25519_key. Passphrase-protected keys are refused.
// Errors never contain key material.
func ParseIdentities(data []byte) ([]age.Identity, error) {
	if len(data) > MaxKeyFileSize {
		return nil, fmt.Errorf("parsing identities: %d bytes exceeds the limit of %d", len(data), MaxKeyFileSize)
	}
	trimmed := bytes.TrimSpace(data)
	if bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		return parseSSHIdentity(trimmed)
	}
	return parseAgeIdentities(data)
}

// sshPublicText is an SSH public key's canonical recipient text:
// "ssh-ed25519 AAAA…" or "ssh-rsa AAAA…", without a comment.
func sshPublicText(pub ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
}

// parseSSHIdentity parses an unencrypted OpenSSH, PKCS#1 or PKCS#8 private
// key as an age identity, an *sshIdentity that knows its recipient.
func parseSSHIdentity(data []byte) ([]age.Identity, error) {
	if bytes.HasPrefix(data, []byte("-----BEGIN AGE ENCRYPTED FILE-----")) {
		return nil, errors.New("parsing identities: passphrase-protected age identity files are not supported")
	}
	key, err := ssh.ParseRawPrivateKey(data)
	if err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, errors.New("parsing identities: the SSH private key is passphrase-protected; use an unencrypted key (such as the host key) or an age identity")
		}
		// The parse error is not wrapped: it could describe key bytes.
		return nil, errors.New("parsing identities: not a valid unencrypted OpenSSH private key")
	}
	var id age.Identity
	var pub any
	switch k := key.(type) {
	case *ed25519.PrivateKey:
		id, err = agessh.NewEd25519Identity(*k)
		pub = k.Public()
	case ed25519.PrivateKey:
		id, err = agessh.NewEd25519Identity(k)
		pub = k.Public()
	case *rsa.PrivateKey:
		id, err = agessh.NewRSAIdentity(k)
		pub = &k.PublicKey
	default:
		return nil, fmt.Errorf("parsing identities: SSH key type %T is not supported; want ed25519 or rsa", key)
	}
	if err != nil {
		return nil, errors.New("parsing identities: the SSH private key cannot be used as an age identity")
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, errors.New("parsing identities: the SSH key has no usable public key")
	}
	return []age.Identity{&sshIdentity{Identity: id, recipient: sshPublicText(sshPub)}}, nil
}

// parseAgeIdentities parses an age identity file.
func parseAgeIdentities(data []byte) ([]age.Identity, error) {
	var ids []age.Identity
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxKeyFileSize)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !utf8.ValidString(line) {
			return nil, fmt.Errorf("parsing identities: line %d is not valid UTF-8", n)
		}
		var id age.Identity
		var err error
		switch {
		case strings.HasPrefix(line, "AGE-SECRET-KEY-PQ-1"):
			id, err = age.ParseHybridIdentity(line)
		case strings.HasPrefix(line, "AGE-SECRET-KEY-1"):
			id, err = age.ParseX25519Identity(line)
		default:
			return nil, fmt.Errorf("parsing identities: line %d is not an age identity (AGE-SECRET-KEY-1…) nor the start of an OpenSSH private key", n)
		}
		if err != nil {
			// The parse error is not wrapped: it could echo key characters.
			return nil, fmt.Errorf("parsing identities: line %d is not a valid age identity", n)
		}
		ids = append(ids, id)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parsing identities: line %d: %v", n+1, err)
	}
	if len(ids) == 0 {
		return nil, errors.New("parsing identities: no identity found")
	}
	return ids, nil
}
