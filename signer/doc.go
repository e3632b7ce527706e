// Package signer is the contract between Sigil and the places keys live.
//
// A Backend signs with keys it holds and reports their public keys; it never
// returns private key material, and it knows nothing of key IDs, purposes,
// policies or JWTs (those belong to the keyring and the server). Abilities
// that not every backend has are separate small interfaces (KeyManager,
// PoolReporter, HealthReporter), checked with a type assertion, in the style
// of smallstep/crypto's kms package.
//
// Backends register an Opener under their type name, which is also the
// scheme of the references they issue ("pkcs11" for RFC 7512 URIs). The
// server opens the backends a configuration names through Open, without
// importing any backend's configuration type.
//
// Signatures cross this contract in one encoding per key type, so callers
// convert in one place: ECDSA as r‖s (each half the curve's byte size, the
// JWS encoding), RSA as the signature bytes, Ed25519 as 64 bytes.
package signer
