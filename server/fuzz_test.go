package server

import (
	"context"
	"crypto/ecdsa"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
	"github.com/sigil-hsm/sigil/purpose/jwt"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/signer"
	"github.com/sigil-hsm/sigil/signer/pkcs11"
)

// fuzzKeyring is a keyring over a real SoftHSM token holding one raw key
// per algorithm (IDs "f-es256", …) and one JWT key ("f-jwt").
func fuzzKeyring(f *testing.F) *keyring.Keyring {
	f.Helper()
	ctx := context.Background()
	b, err := pkcs11.Open(ctx, "hsm-a", pkcs11.Config(softhsmtest.Token(f)))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { b.Close() })
	store, err := boltstore.Open(filepath.Join(f.TempDir(), "k.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	kr, err := keyring.New(ctx, keyring.Options{Store: store, Backends: map[string]signer.Backend{"hsm-a": b}, DefaultBackend: "hsm-a"})
	if err != nil {
		f.Fatal(err)
	}
	for _, alg := range []signer.Algorithm{signer.ES256, signer.ES384, signer.EdDSA, signer.RS256} {
		if _, err := kr.Create(ctx, keyring.CreateSpec{ID: "f-" + strings.ToLower(string(alg)), Purpose: raw.Name, Algorithm: alg}); err != nil {
			f.Fatal(err)
		}
	}
	if _, err := kr.Create(ctx, keyring.CreateSpec{ID: "f-jwt", Purpose: jwt.Name, Algorithm: signer.ES256}); err != nil {
		f.Fatal(err)
	}
	return kr
}

// FuzzSign sends arbitrary requests to the signing service: every answer
// is a signature that verifies or an error with a client-error code.
func FuzzSign(f *testing.F) {
	f.Add("f-es256", make([]byte, 32), []byte(nil), int32(0))
	f.Add("f-es384", make([]byte, 48), []byte(nil), int32(1))
	f.Add("f-eddsa", []byte(nil), []byte("hello"), int32(0))
	f.Add("f-rs256", make([]byte, 31), []byte(nil), int32(7))
	f.Add("f-jwt", make([]byte, 32), []byte(nil), int32(0))
	f.Add("../etc", []byte{1}, []byte{2}, int32(-1))
	kr := fuzzKeyring(f)
	_, impl := raw.Purpose{}.Service(purpose.Deps{Keys: kr})
	svc := impl.(sigilv1.SigningServiceServer)
	f.Fuzz(func(t *testing.T, keyID string, digest, message []byte, format int32) {
		req := &sigilv1.SignRequest{KeyId: keyID, Format: sigilv1.SignatureFormat(format)}
		if message != nil {
			req.Input = &sigilv1.SignRequest_Message{Message: message}
		} else if digest != nil {
			req.Input = &sigilv1.SignRequest_Digest{Digest: digest}
		}
		resp, err := svc.Sign(context.Background(), req)
		if err != nil {
			switch c := status.Code(toStatus(err)); c {
			case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition:
			default:
				t.Fatalf("code %v for a client error: %v", c, err)
			}
			return
		}
		k, _ := kr.Get(context.Background(), keyID)
		g, _ := k.Active()
		sig, input := resp.GetSignature(), digest
		if k.Algorithm == signer.EdDSA {
			input = message
		}
		if k.Algorithm.IsECDSA() && req.GetFormat() != sigilv1.SignatureFormat_SIGNATURE_FORMAT_RAW {
			if sig, err = signer.DERToRaw(sig, signer.CurveSize(g.Public().(*ecdsa.PublicKey).Curve)); err != nil {
				t.Fatal(err)
			}
		}
		if err := signer.Verify(g.Public(), k.Algorithm, input, sig); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzCreateKey sends arbitrary key specs: each is created as asked, or
// refused with InvalidArgument or AlreadyExists, and nothing half-made
// stays behind.
func FuzzCreateKey(f *testing.F) {
	f.Add("new-1", "ES256", "raw", "", int32(0))
	f.Add("new-2", "RS256", "jwt", "hsm-a", int32(3072))
	f.Add("f-es256", "ES256", "raw", "", int32(0))
	f.Add("UPPER", "ES256K", "eth", "", int32(0))
	f.Add("x", "ES256", "raw", "elsewhere", int32(0))
	f.Add("y", "PS256", "raw", "", int32(1024))
	kr := fuzzKeyring(f)
	svc := &keyService{keys: kr, purposes: purpose.All()}
	f.Fuzz(func(t *testing.T, id, alg, purp, backend string, bits int32) {
		before := len(kr.List(context.Background()))
		resp, err := svc.CreateKey(context.Background(), &sigilv1.CreateKeyRequest{Id: id, Algorithm: alg, Purpose: purp, Backend: backend, RsaBits: bits})
		after := len(kr.List(context.Background()))
		if err != nil {
			switch c := status.Code(toStatus(err)); c {
			case codes.InvalidArgument, codes.AlreadyExists:
			default:
				t.Fatalf("code %v for a client error: %v", c, err)
			}
			if after != before {
				t.Fatal("a refused create changed the keyring")
			}
			return
		}
		if resp.GetKey().GetId() != id || resp.GetKey().GetAlgorithm() != alg || after != before+1 {
			t.Fatalf("created %v for id %q alg %q", resp.GetKey(), id, alg)
		}
	})
}
