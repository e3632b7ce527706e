// Package storehealth makes the keyring store a dependency like a backend:
// a health loop probes it, calls fail fast with Unavailable while it is
// down, and each call gets a short deadline of its own instead of the
// caller's, so a store that stops answering (an etcd cluster without a
// quorum) costs a request at most Options.Timeout, never the client's
// whole deadline, and pins no handler.
//
// It is a layer around a store, not a switch in one: Guard wraps any
// keyring store with its abilities (Anchors, Ledger), and the server reads
// its Health for readiness as it reads each backend's. A store call is
// never run in a goroutine of its own: a store that ignores its context
// (bbolt waiting on a dead disk) holds its caller, but nothing outlives
// the caller.
package storehealth
