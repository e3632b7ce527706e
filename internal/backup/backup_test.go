package backup

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/keyring"
)

// signWith signs a digest as the audit key does: raw r‖s.
func signWith(k *ecdsa.PrivateKey) func(context.Context, []byte) ([]byte, error) {
	return func(_ context.Context, digest []byte) ([]byte, error) {
		r, s, err := ecdsa.Sign(rand.Reader, k, digest)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 64)
		r.FillBytes(out[:32])
		s.FillBytes(out[32:])
		return out, nil
	}
}

func sealed(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	snap := &keyring.Snapshot{Revision: 7, Keys: map[string][]byte{"k": []byte(`{"id":"k"}`)}, Ledgers: map[string][]byte{}, Anchors: map[string][]byte{"a": []byte("x")}}
	b, err := Seal(context.Background(), Manifest{Created: time.Unix(1, 0).UTC(), SignedBy: SignedBy{Key: "sigil.audit", Generation: 1}}, snap, signWith(k))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A sealed backup verifies with its key and gives back the snapshot; one
// byte changed anywhere, or another key, is refused.
func TestSealVerify(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b := sealed(t, k)
	s, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := s.Verify(&k.PublicKey)
	if err != nil || snap.Revision != 7 || string(snap.Anchors["a"]) != "x" || s.Manifest.Counts["keys"] != 1 {
		t.Fatalf("verify: %+v %v", snap, err)
	}
	if _, err := s.Verify(&other.PublicKey); err == nil {
		t.Fatal("verified with another key")
	}
	for i := 0; i < len(b); i += 7 {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		s, err := Parse(c)
		if err != nil {
			continue
		}
		if _, err := s.Verify(&k.PublicKey); err == nil {
			t.Fatalf("a backup with byte %d changed verified", i)
		}
	}
}

// Parse takes an operator's file: whatever it holds, it answers an
// error or a backup to verify, never a panic.
func FuzzParse(f *testing.F) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.Add(sealed(&testing.T{}, k))
	f.Add([]byte(`{"manifest":{"format":"sigil-backup/1"},"snapshot":"","signature":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err != nil {
			return
		}
		s.Verify(&k.PublicKey)
	})
}
