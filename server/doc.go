// Package server is Sigil's network edge: the gRPC services of
// proto/sigil/v1, the HTTP endpoints (/healthz, /readyz, /metrics), and the
// one table that turns typed errors into gRPC status codes.
//
// Requests flow one way: validate, resolve the key in the keyring, call
// the key's backend, encode. The server never touches key material and the
// backends never see key IDs or clients.
package server
