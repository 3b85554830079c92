package crypto

import (
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/certsync/certsync/internal/testing/testkeys"
)

func TestIdentityRecipient(t *testing.T) {
	t.Parallel()
	x := testkeys.X25519(t)
	hostKey := testkeys.Ed25519(t)
	tests := []struct {
		name, data, want string
	}{
		{"age", "# created: now\n" + x.String() + "\n", x.Recipient().String()},
		{"ssh ed25519", string(hostKey.PEM), hostKey.Line},
	}
	for _, tt := range tests {
		got, err := IdentityRecipient([]byte(tt.data))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
		r, err := ParseRecipient(got)
		if err != nil {
			t.Errorf("%s: the derived recipient does not parse: %v", tt.name, err)
		}
		if _, err := age.Encrypt(new(strings.Builder), r); err != nil {
			t.Errorf("%s: encrypt to derived recipient: %v", tt.name, err)
		}
	}
	y, _ := age.GenerateX25519Identity()
	for name, data := range map[string]string{
		"two identities": x.String() + "\n" + y.String() + "\n",
		"garbage":        "not a key\n",
		"empty":          "",
		"bad pem":        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
	} {
		_, err := IdentityRecipient([]byte(data))
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		if strings.Contains(err.Error(), x.String()[16:]) || strings.Contains(err.Error(), y.String()[16:]) {
			t.Errorf("%s: error shows key material: %v", name, err)
		}
	}
}
