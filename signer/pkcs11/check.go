package pkcs11

import (
	"crypto/rand"
	"fmt"

	"github.com/sigil-hsm/sigil/signer"
)

// Token says what a checked token is.
type Token struct {
	Module, Label, Manufacturer, Model, Serial string
	Slot                                       uint
	// MaxSessions is what the token reports (0: it does not say).
	MaxSessions uint
}

// Capability is whether one algorithm works on a token: its mechanisms
// listed, and a key pair generated as a session object (gone when the
// session ends: nothing is left on the token), signed with and verified.
type Capability struct {
	Algorithm  signer.Algorithm
	Mechanisms bool   // the key generation and signing mechanisms are listed
	Works      bool   // generated, signed and verified
	Detail     string // why not, when it does not work
}

// RandomPIN is a PIN for a new token: 16 random bytes, hex.
func RandomPIN() ([]byte, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "%x", b), nil
}
