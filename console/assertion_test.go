package console

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
)

// An assertion a gRPC client attaches to a decision is not taken on
// trust: not JSON, an unknown or another identity's or a revoked passkey,
// another origin or challenge, are all refused.
func TestVerifyRefusesWhatItCannotCheck(t *testing.T) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := Store{A: st}
	ctx := context.Background()
	p := &Passkey{Identity: "spiffe://example.org/alice", Credential: webauthn.Credential{ID: []byte("cred-1")}, Created: time.Now()}
	if err := s.AddPasskey(ctx, p); err != nil {
		t.Fatal(err)
	}
	rp := Relying{Origin: "https://sigil.example.org", RPID: "sigil.example.org"}
	challenge := Challenge("a1", "approve", "00")
	clientData, _ := json.Marshal(map[string]string{"type": "webauthn.get", "challenge": "AAAA", "origin": "https://evil.example"})
	assertion := func(id string) []byte {
		b, _ := json.Marshal(map[string]any{"credential_id": id, "authenticator_data": "AAAA", "client_data_json": clientData, "signature": "AAAA"})
		return b
	}
	for name, c := range map[string]struct {
		raw      []byte
		identity string
	}{
		"not JSON":           {[]byte("nope"), "spiffe://example.org/alice"},
		"unknown credential": {assertion("bm8tc3VjaA"), "spiffe://example.org/alice"},
		"another identity":   {assertion(p.ID()), "spiffe://example.org/mallory"},
		"another origin":     {assertion(p.ID()), "spiffe://example.org/alice"},
	} {
		if _, err := s.Verify(ctx, c.raw, c.identity, challenge, rp); err == nil {
			t.Errorf("%s: verified", name)
		} else if k := errs.KindOf(err); k != errs.PermissionDenied && k != errs.InvalidArgument {
			t.Errorf("%s: %v", name, err)
		}
	}
	s.Revoke(ctx, p.ID())
	if _, err := s.Verify(ctx, assertion(p.ID()), "spiffe://example.org/alice", challenge, rp); err == nil {
		t.Error("a revoked passkey's assertion verified")
	}
}
