// Package jwks publishes public keys as a JSON Web Key Set (RFC 7517) for
// relying parties that verify Sigil's JWTs.
//
// A Publisher holds the documents (/.well-known/jwks.json for every JWT
// key, /keys/{id}/jwks.json per key) as bytes with their ETag and
// Cache-Control, rebuilt when the keyring changes and swapped atomically,
// so serving a request is a pointer load and a write: no JSON is built per
// request. The max-age comes from the keys' rotation schedules (invariant
// 2 of DESIGN.md): a relying party that honours it always has a generation
// before it sees a token from it.
//
// go-jose encodes every JWK except secp256k1 ones (RFC 8812), which it
// does not know; those few members, and their thumbprint, are written here
// by hand.
package jwks
