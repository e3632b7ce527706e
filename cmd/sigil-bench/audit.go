package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/keyring"
)

// auditTable: appending audit records (each answered after its fsync, as
// every response is) to a log whose chain head is anchored in the keyring
// store after each fsync (the default, at most every 200 ms) against one
// that anchors only its signed checkpoints, both in the bench's bbolt
// store and signed with the audit key.
func (b *bench) auditTable(dir string) ([]row, error) {
	open := func(name string, head time.Duration) (*audit.Log, error) {
		return audit.Open(b.ctx, audit.Options{Path: filepath.Join(dir, name+".jsonl"), Replica: name, HeadInterval: head,
			Signer: keyring.AuditSigner{Keyring: b.kr}, Anchors: b.store})
	}
	off, err := open("head-off", -1)
	if err != nil {
		return nil, err
	}
	defer off.Close()
	on, err := open("head-anchored", 0)
	if err != nil {
		return nil, err
	}
	defer on.Close()
	var n atomic.Uint64
	write := func(l *audit.Log) func(context.Context) error {
		return func(context.Context) error {
			return l.Write(&audit.Record{Time: time.Now().UTC(), RequestID: fmt.Sprint(n.Add(1)), Identity: "spiffe://bench/client", Operation: "sign.raw",
				KeyID: "bench", Outcome: "allowed", Code: "OK", PayloadSHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"})
		}
	}
	return b.pair("audit append", write(off), write(on), []int{1, 16})
}
