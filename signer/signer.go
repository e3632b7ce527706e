package signer

import (
	"context"
	"crypto"
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
	Name      string
	Algorithm Algorithm
	// RSABits is the modulus size for RS256/PS256 keys: 2048 or 3072.
	RSABits int
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
	// is not an error, so cleanup can be retried.
	DestroyKey(ctx context.Context, ref string) error
	// NameRef returns a reference that finds the key created under name,
	// known before the key exists so a half-finished creation can be
	// cleaned up.
	NameRef(name string) string
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

// KeyLister is the ability to list the keys Sigil created in a backend,
// for the sweep that destroys keys no record names. It must return only
// keys Sigil made (by their names and Sigil's own marking), never another
// application's, and objects it cannot identify for certain are left out.
type KeyLister interface {
	ListKeys(ctx context.Context) ([]ListedKey, error)
}

// KeyDisabler is the ability to make a key refuse to sign at once, used
// when a generation is revoked (a KMS key is disabled; its deletion is
// scheduled later, with the generation's destruction).
type KeyDisabler interface {
	DisableKey(ctx context.Context, ref string) error
}
