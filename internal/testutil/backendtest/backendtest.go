// Package backendtest is the conformance suite of signing backends: the
// same tests of every algorithm, the JWT path and the Ethereum path, run
// by each backend's own tests against a real instance of it (SoftHSM for
// pkcs11, the local-kms emulator for awskms). A backend that passes signs
// through every service exactly as the others do.
package backendtest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/core/types"
	ethcrypto "github.com/ethereum/go-ethereum/crypto"

	clienteth "github.com/sigil-hsm/sigil/client/eth"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/relyingparty"
	"github.com/sigil-hsm/sigil/internal/testutil/keyringtest"
	"github.com/sigil-hsm/sigil/jwks"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/purpose/eth"
	"github.com/sigil-hsm/sigil/purpose/jwt"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/signer"
)

// Key is an algorithm a backend offers, with its RSA size (0 otherwise).
type Key struct {
	Alg  signer.Algorithm
	Bits int
}

// Suite is a backend under test.
type Suite struct {
	Backend interface {
		signer.Backend
		signer.KeyManager
	}
	Keys []Key // what the backend offers; ES256K is needed for Ethereum
	// Verify checks a signature; signer.Verify if nil (an emulator may
	// differ from the standard where the service does not).
	Verify func(pub any, alg signer.Algorithm, in, sig []byte) error
}

// Run runs the whole suite.
func Run(t *testing.T, s Suite) {
	t.Run("SignAndVerify", func(t *testing.T) { SignAndVerify(t, s) })
	env := keyringtest.With(t, "under-test", s.Backend, keyringtest.Options{})
	t.Run("JWT", func(t *testing.T) { JWT(t, env.Keyring, s.Keys) })
	t.Run("Ethereum", func(t *testing.T) { Ethereum(t, env.Keyring, env.Store) })
	t.Run("Lifecycle", func(t *testing.T) { Lifecycle(t, s) })
}

// Lifecycle takes a raw key of the suite's first kind through what a
// Vault Transit or KMS user expects: rotation (the new generation signs,
// the old one's public key still verifies), disable and enable, and a
// scheduled deletion that, once its window has passed on a fake clock,
// leaves no generation's object able to sign in the backend.
func Lifecycle(t *testing.T, s Suite) {
	ctx := context.Background()
	now := time.Now()
	kr := keyringtest.With(t, "under-test", s.Backend, keyringtest.Options{Now: func() time.Time { return now }}).Keyring
	k := s.Keys[0]
	if _, err := kr.Create(ctx, keyring.CreateSpec{ID: "lifecycle", Purpose: raw.Name, Algorithm: k.Alg, RSABits: k.Bits}); err != nil {
		t.Fatal(err)
	}
	signWith := func() (keyring.Signing, []byte, []byte) {
		sg, err := kr.ForSigning(ctx, "lifecycle", raw.Name)
		if err != nil {
			t.Fatal(err)
		}
		in := k.Alg.Input([]byte("lifecycle"))
		sig, err := sg.Sign(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		return sg, in, sig
	}
	first, in1, sig1 := signWith()
	if _, err := kr.Rotate(ctx, "lifecycle", false); err != nil {
		t.Fatal(err)
	}
	second, _, _ := signWith()
	if second.Generation.Number != 2 || first.Generation.Number != 1 {
		t.Fatalf("generations %d then %d", first.Generation.Number, second.Generation.Number)
	}
	if signer.Verify(first.Generation.Public(), k.Alg, in1, sig1) != nil {
		t.Fatal("the first generation's signature no longer verifies after the rotation")
	}
	if _, err := kr.SetDisabled(ctx, "lifecycle", true); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.ForSigning(ctx, "lifecycle", raw.Name); !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("a disabled key: %v", err)
	}
	if _, err := kr.SetDisabled(ctx, "lifecycle", false); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.ScheduleDeletion(ctx, "lifecycle", keyring.MinDeletionWindow); err != nil {
		t.Fatal(err)
	}
	now = now.Add(keyring.MinDeletionWindow + time.Second)
	for range 4 {
		kr.Tick(ctx)
	}
	got, err := kr.Get(ctx, "lifecycle")
	if err != nil || !got.Deleted {
		t.Fatalf("after the deletion window: %+v %v", got, err)
	}
	for _, g := range []*keyring.Generation{first.Generation, second.Generation} {
		if _, err := s.Backend.Sign(ctx, g.Ref, k.Alg, in1); err == nil {
			t.Errorf("generation %d's object still signs after the deletion", g.Number)
		}
	}
}

// SignAndVerify creates a key of each kind, checks its public key, and
// signs random inputs that verify, and stop verifying when altered.
func SignAndVerify(t *testing.T, s Suite) {
	ctx := context.Background()
	verify := s.Verify
	if verify == nil {
		verify = func(pub any, alg signer.Algorithm, in, sig []byte) error { return signer.Verify(pub, alg, in, sig) }
	}
	for _, k := range s.Keys {
		t.Run(fmt.Sprintf("%s-%d", k.Alg, k.Bits), func(t *testing.T) {
			info, err := s.Backend.CreateKey(ctx, signer.CreateKeyRequest{Name: fmt.Sprintf("conf.%s-%d", k.Alg, k.Bits), Algorithm: k.Alg, RSABits: k.Bits})
			if err != nil {
				t.Fatal(err)
			}
			pub, err := s.Backend.Public(ctx, info.Ref)
			if err != nil {
				t.Fatal(err)
			}
			if err := k.Alg.CheckPublic(pub); err != nil {
				t.Fatal(err)
			}
			for range 8 { // ECDSA nonces differ each time; check several
				msg := make([]byte, 100)
				rand.Read(msg)
				in := k.Alg.Input(msg)
				sig, err := s.Backend.Sign(ctx, info.Ref, k.Alg, in)
				if err != nil {
					t.Fatal(err)
				}
				if err := verify(pub, k.Alg, in, sig); err != nil {
					t.Fatal(err)
				}
				in[0] ^= 1
				if verify(pub, k.Alg, in, sig) == nil {
					t.Fatal("a signature verifies over an altered input")
				}
			}
		})
	}
}

// JWT mints a token with a JWT key of each kind and verifies it against
// the served JWK Set as a relying party does (one that fetched the set
// once the keys existed); altered claims fail.
func JWT(t *testing.T, kr *keyring.Keyring, keys []Key) {
	ctx := context.Background()
	pub := jwks.NewPublisher()
	if err := jwks.Follow(ctx, kr, jwt.Sets{}, pub, slog.Default()); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range keys {
		id := fmt.Sprintf("jwt-%s-%d", strings.ToLower(string(k.Alg)), k.Bits)
		if _, err := kr.Create(ctx, keyring.CreateSpec{ID: id, Purpose: jwt.Name, Algorithm: k.Alg, RSABits: k.Bits}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		t.Run(id, func(t *testing.T) {
			// The key's own JWK Set: ES256K keys join no shared set here.
			rp := relyingparty.New(func() ([]byte, time.Duration, error) { d, _ := pub.Key(id); return d.Body, d.MaxAge, nil }, time.Now, time.Minute)
			sg, err := kr.ForSigning(ctx, id, jwt.Name)
			if err != nil {
				t.Fatal(err)
			}
			p, err := jwt.Prepare(jwt.Request{Claims: []byte(`{"sub":"conformance"}`)}, jwt.PolicyOf(sg.Key), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			tok, err := jwt.Sign(ctx, sg, p)
			if err != nil {
				t.Fatal(err)
			}
			if err := rp.Verify(tok.Compact); err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(tok.Compact, ".")
			parts[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory","exp":4000000000}`))
			if rp.Verify(strings.Join(parts, ".")) == nil {
				t.Fatal("a token with altered claims verified")
			}
		})
	}
}

// Ethereum signs a transaction of every type, from JSON and from RLP,
// whose sender go-ethereum recovers as the key's address, and EIP-191 and
// EIP-712 signatures that recover to it too.
func Ethereum(t *testing.T, kr *keyring.Keyring, ledger keyring.Ledger) {
	ctx := context.Background()
	if _, err := kr.Create(ctx, keyring.CreateSpec{ID: "conformance-wallet", Purpose: eth.Name, Algorithm: signer.ES256K,
		Policy: &eth.Policy{ChainIDs: []uint64{1}}}); err != nil {
		t.Fatal(err)
	}
	sg, err := kr.ForSigning(ctx, "conformance-wallet", eth.Name)
	if err != nil {
		t.Fatal(err)
	}
	svc := &eth.Signer{Ledger: ledger, Now: time.Now, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for name, js := range TransactionJSON {
		t.Run(name, func(t *testing.T) {
			u, err := eth.ParseJSON([]byte(js))
			if err != nil {
				t.Fatal(err)
			}
			fromRLP, err := eth.ParseRLP(UnsignedRLP(u))
			if err != nil {
				t.Fatalf("RLP: %v", err)
			}
			for _, in := range []eth.Unsigned{u, fromRLP} {
				out, err := svc.SignTx(ctx, sg, in)
				if err != nil {
					t.Fatal(err)
				}
				tx := new(types.Transaction)
				if err := tx.UnmarshalBinary(out.Raw); err != nil {
					t.Fatal(err)
				}
				from, err := types.Sender(types.LatestSignerForChainID(tx.ChainId()), tx)
				if err != nil || from.Hex() != eth.Address(sg.Key) || out.From != from || tx.Hash() != out.Hash {
					t.Fatalf("sender %s (%v), want %s", from.Hex(), err, eth.Address(sg.Key))
				}
				if tx.Type() != u.Tx.Type() || tx.Nonce() != u.Tx.Nonce() || tx.Value().Cmp(u.Tx.Value()) != 0 || tx.ChainId().Uint64() != 1 {
					t.Fatalf("signed tx differs from the request: %+v", tx)
				}
			}
		})
	}
	t.Run("EIP-191", func(t *testing.T) {
		msg := []byte("conformance")
		sig, err := svc.SignMessage(ctx, sg, msg)
		if err != nil {
			t.Fatal(err)
		}
		recovers(t, accounts.TextHash(msg), sig, eth.Address(sg.Key))
	})
	t.Run("EIP-712", func(t *testing.T) {
		sig, hash, err := svc.SignTypedData(ctx, sg, []byte(MailTypedData))
		if err != nil {
			t.Fatal(err)
		}
		if hash.Hex() != MailDigest {
			t.Fatalf("digest %s, EIP-712 publishes %s", hash.Hex(), MailDigest)
		}
		recovers(t, hash[:], sig, eth.Address(sg.Key))
	})
}

// recovers checks that sig (v 27 or 28) over hash recovers to address.
func recovers(t *testing.T, hash, sig []byte, address string) {
	t.Helper()
	if len(sig) != 65 || (sig[64] != 27 && sig[64] != 28) {
		t.Fatalf("signature %x: want r‖s‖v with v 27 or 28", sig)
	}
	sig = append([]byte(nil), sig...)
	sig[64] -= 27
	pub, err := ethcrypto.SigToPub(hash, sig)
	if err != nil || ethcrypto.PubkeyToAddress(*pub).Hex() != address {
		t.Fatalf("signature recovers to another address than %s: %v", address, err)
	}
}

// UnsignedRLP is u's signing encoding (clienteth.UnsignedRLP).
func UnsignedRLP(u eth.Unsigned) []byte {
	b, _ := clienteth.UnsignedRLP(u.Tx, u.ChainID)
	return b
}
