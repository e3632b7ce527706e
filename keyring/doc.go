// Package keyring maps the logical keys clients name (key IDs) to the
// generations that hold real key pairs in a backend, and keeps that mapping
// in a Store.
//
// The Store contract is compare-and-swap on a revision, the model of
// etcd's mod revisions, so the embedded bbolt store (keyring/boltstore) and
// a replicated one can be swapped without changing callers. The Keyring
// keeps every key in memory, parsed, so the signing path never touches
// the store; writes go to the store first and to memory after they commit.
//
// Creating a key spans two systems that cannot share a transaction (the
// store and the HSM), so it is a small saga: the record is written first in
// state "creating", the key pair is generated, then the record is
// completed. A failure in between removes the new objects and the record;
// if even that fails (a crash), the "creating" record tells a later
// attempt, or the next start, what to clean up.
//
// What a key may sign is its purpose (package purpose and its
// subpackages), which registers a Purpose here. The keyring knows no
// purpose by name: it stores each key's policy as the purpose encodes it,
// asks the purpose how the key rotates and what to derive from its public
// key, and reads a policy only for a rotation Schedule.
package keyring
