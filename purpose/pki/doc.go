// Package pki is the certificate authority purpose: a key of purpose pki
// is a CA whose private key, like every Sigil key, never leaves its HSM
// or KMS. It certifies the mTLS identities Sigil itself admits (server
// names, client SPIFFE IDs and DNS names), so an operator gets a
// production PKI from `sigil pki init` and `sigil pki issue` without a
// second CA tool.
//
// A pki key signs certificates only, and only through this package: the
// raw, jwt and eth services refuse it (purposes are exclusive), and its
// gRPC service only reads the CA certificates. Issuing runs on the
// server's host (`sigil pki issue --config`), by whoever can read the
// configuration and the PIN, and is audited there; an issuing RPC would
// need a policy of the names each client may certify, or pki.issue would
// be a way to mint any identity.
//
// Each generation of a CA key has one self-signed certificate, made when
// the generation is, kept in the store (an anchor), so the CA bundle
// clients trust holds every trusted generation across a rotation.
package pki
