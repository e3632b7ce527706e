// Package jwks publishes public keys as JSON Web Keys. For now it computes
// the RFC 7638 thumbprint that names every generation (its JWK "kid"); the
// JWK Set document and its HTTP handler arrive with JWT signing.
package jwks
