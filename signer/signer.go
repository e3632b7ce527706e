package signer

import (
	"context"
	"crypto"
	"crypto/rsa"
)

// Backend signs with keys that stay inside it.
type Backend interface {
	// Public returns the public key of the key named by ref.
	Public(ctx context.Context, ref string) (crypto.PublicKey, error)
	// Sign signs input with the key named by ref using alg. Input is a
	// digest of alg's hash, or for EdDSA the message itself.
	Sign(ctx context.Context, ref string, alg Algorithm, input []byte) ([]byte, error)
	// Close releases the backend's sessions and connections.
	Close() error
}

// CreateKeyRequest asks a KeyManager for a new key pair.
type CreateKeyRequest struct {
	// Name is unique in the backend; the keyring derives it from the key ID
	// and generation ("auth-jwt.g3").
	Name string
	// Ref is where the key is made, from NewRef: recorded before the key
	// exists, it is what a failed or interrupted creation is cleaned up
	// by, and it finds this key and nothing else.
	Ref       string
	Algorithm Algorithm
	// RSABits is the modulus size for RS256/PS256 keys: 2048 or 3072.
	RSABits int
	// Owner marks the key as one keyring's, so that keyring's sweep lists
	// it (ListKeys) and another's sharing the backend never does.
	Owner []byte
}

// KeyInfo describes a key a KeyManager created.
type KeyInfo struct {
	Ref    string
	Public crypto.PublicKey
}

// KeyManager is the ability to create and destroy keys inside a backend.
type KeyManager interface {
	// CreateKey generates a key pair inside the backend. A key with the same
	// name is refused with errs.AlreadyExists.
	CreateKey(ctx context.Context, req CreateKeyRequest) (KeyInfo, error)
	// DestroyKey deletes every object ref names; a ref that names nothing
	// is not an error, so cleanup can be retried. It never deletes an
	// object Sigil did not make.
	DestroyKey(ctx context.Context, ref string) error
	// NewRef returns the reference a key about to be created under name
	// for owner will have, or one that finds that key and only it.
	NewRef(name string, owner []byte) (string, error)
}

// PoolStats is a snapshot of a backend's session or connection pool.
type PoolStats struct {
	Size  int
	InUse int
	// Waits counts checkouts that found every session busy.
	Waits uint64
}

// PoolReporter is the ability to report pool usage, for metrics.
type PoolReporter interface {
	PoolStats() PoolStats
}

// ListedKey is a key a KeyLister found: the name it was created under
// and a reference to it.
type ListedKey struct {
	Name string
	Ref  string
}

// KeyLister is the ability to list the keys one keyring created in a
// backend, for the sweep that destroys keys no record names. It must
// return only keys made with CreateKeyRequest.Owner equal to owner, never
// another application's or another keyring's, and objects it cannot
// identify for certain are left out.
type KeyLister interface {
	ListKeys(ctx context.Context, owner []byte) ([]ListedKey, error)
}

// KeyDisabler is the ability to make a key refuse to sign at once, used
// when a generation is revoked (a KMS key is disabled; its deletion is
// scheduled later, with the generation's destruction).
type KeyDisabler interface {
	DisableKey(ctx context.Context, ref string) error
}

// Importer is the ability of a backend to take in a key pair made
// outside it without the private key ever in clear on Sigil's side: the
// backend makes a wrapping key pair that can only unwrap, the operator
// wraps the private key to its public key offline, and the backend
// unwraps it into a sensitive, never extractable key.
type Importer interface {
	// NewWrappingKey makes the wrapping key pair at ref (from NewRef) and
	// returns its public key and the wrapping the backend unwraps (see
	// Wrapping).
	NewWrappingKey(ctx context.Context, ref string) (*rsa.PublicKey, Wrapping, error)
	// ImportKey unwraps imp into the key pair req describes (as CreateKey
	// would generate it), checked to be of req's algorithm and to be the
	// private key of imp.Public, and makes its public key object.
	// Nothing of it is left in the backend when it fails.
	ImportKey(ctx context.Context, req CreateKeyRequest, imp Import) (KeyInfo, error)
}

// Wrapping names how a wrapped key is made: an ephemeral AES-256 key
// encrypted with RSA-OAEP (hash OAEPHash, MGF1 with the same hash) to the
// wrapping public key, followed by the private key's PKCS#8 DER wrapped
// with that AES key (AES key wrap with padding, RFC 5649): what AWS KMS
// calls RSA_AES_KEY_WRAP_SHA_256 (or _SHA_1) and PKCS#11
// CKM_RSA_AES_KEY_WRAP.
type Wrapping struct {
	OAEPHash string // "sha256" or "sha1": what the backend can unwrap
}

// Name is the wrapping's name as AWS KMS spells it.
func (w Wrapping) Name() string {
	if w.OAEPHash == "sha1" {
		return "RSA_AES_KEY_WRAP_SHA_1"
	}
	return "RSA_AES_KEY_WRAP_SHA_256"
}

// Import is what ImportKey unwraps: the wrapped key, the wrapping key
// pair's reference, and the public key the private key must match.
type Import struct {
	WrappingRef string
	Wrapped     []byte
	Public      crypto.PublicKey
}

// Adopter is the ability of a backend to take over a key pair that is in
// it already, made by another tool: it checks the private key cannot
// leave (sensitive, not extractable) and may sign, and returns the name
// and reference the keyring records and the pair's public key.
type Adopter interface {
	Adopt(ctx context.Context, uri string) (name, ref string, pub crypto.PublicKey, err error)
}
