// Package errs defines Sigil's typed errors.
//
// Every layer below the server (keyring, signer backends, config) returns
// errors of a Kind; the server maps each Kind to a gRPC status code in one
// table (server/status.go). Keeping the classification next to where the
// failure happens, and the mapping in one place, means a backend never
// imports gRPC and the API never has to guess what a string means.
//
// It lives under internal/ because the kinds are Sigil's own vocabulary,
// not an API other modules should build on.
package errs
