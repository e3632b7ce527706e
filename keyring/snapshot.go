package keyring

import (
	"context"
	"time"
)

// Snapshot is everything a store holds, read at one revision: the key
// records, the ledgers (spends, nonces) and the anchors (JWK Set
// definitions, held approvals, namespaces, audit checkpoints, CA
// certificates), each as the store keeps its bytes. A backup is one.
type Snapshot struct {
	Revision int64             `json:"revision"` // the store's revision (bbolt: its transaction ID)
	Keys     map[string][]byte `json:"keys"`
	Ledgers  map[string][]byte `json:"ledgers"`
	Anchors  map[string][]byte `json:"anchors"`
}

// Snapshotter is the ability of a store to be backed up and restored
// whole.
type Snapshotter interface {
	// Snapshot reads everything the store holds in one consistent read
	// (a bbolt read transaction, an etcd revision).
	Snapshot(ctx context.Context) (*Snapshot, error)
	// Restore writes s into the store in one transaction. An empty store
	// is required unless replace, which first removes what it holds.
	Restore(ctx context.Context, s *Snapshot, replace bool) error
}

// Fence stops a key's ledger from taking anything until it is lifted:
// after a restore from a backup, the key may have signed what the backup
// does not know (nonces, spends), so its purpose refuses to sign with it
// until the ledger is reconciled with what happened since.
type Fence struct {
	Since  time.Time `json:"since"` // when the backup was taken
	Reason string    `json:"reason"`
	// Heads are the audit chains' heads at the backup: the records the
	// audit logs given to a reconciliation must hold on from.
	Heads []ChainHead `json:"heads,omitempty"`
}

// ChainHead is one replica's audit chain head: a record's seq and hash.
type ChainHead struct {
	Replica string `json:"replica"`
	Seq     uint64 `json:"seq"`
	Hash    string `json:"hash"`
}
