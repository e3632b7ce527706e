// Package server is Sigil's network edge: identity, authorization, request
// checks and the audit record for every gRPC service; the key and audit
// services; the signing services each registered purpose brings (package
// purpose, known here only through its interface); the HTTP endpoints
// (JWK Sets, /healthz, /readyz, /metrics); and the one table that turns
// typed errors into gRPC status codes.
//
// Requests flow one way: admit, hand to the purpose's handler (which
// resolves the key in the keyring, calls its backend and encodes), record.
// The server never touches key material and the backends never see key
// IDs or clients.
package server
