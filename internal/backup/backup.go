// Package backup is the file `sigil backup` writes and `sigil restore`
// reads: a manifest (what is in it, the store's revision, the audit
// chains' heads) and a snapshot of the whole keyring store, signed by
// the audit key, whose private half is in the HSM, so a backup altered
// anywhere is refused before anything is written.
package backup

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"io"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/signer"
)

// Format names this file format.
const Format = "sigil-backup/1"

// MaxSize bounds a backup read (and the snapshot it unpacks to).
const MaxSize = 1 << 30

// Manifest says what a backup holds.
type Manifest struct {
	Format     string         `json:"format"`
	Created    time.Time      `json:"created"`
	Revision   int64          `json:"revision"` // the store's, at the snapshot
	Counts     map[string]int `json:"counts"`   // keys, ledgers, anchors
	AuditHeads []Head         `json:"audit_heads"`
	// SignedBy is the audit key's generation that signed the backup.
	SignedBy SignedBy `json:"signed_by"`
}

// Head is one audit chain's anchored head at the snapshot.
type Head struct {
	Replica string `json:"replica"`
	Seq     uint64 `json:"seq"`
	Hash    string `json:"hash"`
}

// SignedBy names the key generation a backup is signed with: Sigil's
// audit key, in Backend, and its public key's fingerprint (the SHA-256
// of its SubjectPublicKeyInfo) for an operator to pin.
type SignedBy struct {
	Key          string `json:"key"`
	Generation   int    `json:"generation"`
	Backend      string `json:"backend"`
	PublicSHA256 string `json:"public_key_sha256"`
}

// envelope is the file: the manifest's exact bytes, the snapshot
// compressed, and the signature over both.
type envelope struct {
	Manifest  json.RawMessage `json:"manifest"`
	Snapshot  []byte          `json:"snapshot"`
	Signature []byte          `json:"signature"`
}

// digest is what the signature covers: the manifest, then the snapshot,
// each preceded by its length.
func digest(manifest, snapshot []byte) []byte {
	h := sha256.New()
	for _, part := range [][]byte{manifest, snapshot} {
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(part))))
		h.Write(part)
	}
	return h.Sum(nil)
}

// Seal writes a backup of snap described by m, signed by sign (a SHA-256
// digest signer: the audit key's).
func Seal(ctx context.Context, m Manifest, snap *keyring.Snapshot, sign func(context.Context, []byte) ([]byte, error)) ([]byte, error) {
	m.Format = Format
	m.Revision = snap.Revision
	m.Counts = map[string]int{"keys": len(snap.Keys), "ledgers": len(snap.Ledgers), "anchors": len(snap.Anchors)}
	manifest, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(snap)
	if err != nil {
		return nil, err
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(raw)
	if err := zw.Close(); err != nil {
		return nil, err
	}
	sig, err := sign(ctx, digest(manifest, z.Bytes()))
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "signing the backup with the audit key")
	}
	return json.Marshal(envelope{Manifest: manifest, Snapshot: z.Bytes(), Signature: sig})
}

// Sealed is a backup read but not yet trusted: Verify it before its
// snapshot is used.
type Sealed struct {
	Manifest Manifest
	env      envelope
}

// Parse reads a backup file's envelope and manifest.
func Parse(b []byte) (*Sealed, error) {
	var s Sealed
	if err := json.Unmarshal(b, &s.env); err != nil {
		return nil, errs.New(errs.InvalidArgument, "not a Sigil backup: %v", err)
	}
	if err := json.Unmarshal(s.env.Manifest, &s.Manifest); err != nil || s.Manifest.Format != Format {
		return nil, errs.New(errs.InvalidArgument, "not a %s backup (format %q)", Format, s.Manifest.Format)
	}
	return &s, nil
}

// Verify checks the signature with pub, the public key of the audit key
// generation the manifest names (read from its backend, not from the
// backup), and returns the snapshot.
func (s *Sealed) Verify(pub crypto.PublicKey) (*keyring.Snapshot, error) {
	if err := signer.Verify(pub, signer.ES256, digest(s.env.Manifest, s.env.Snapshot), s.env.Signature); err != nil {
		return nil, errs.New(errs.InvalidArgument, "the backup's signature does not verify with the audit key: it was altered, or made by another Sigil")
	}
	return s.unpack()
}

// unpack decompresses and decodes the snapshot.
func (s *Sealed) unpack() (*keyring.Snapshot, error) {
	zr, err := gzip.NewReader(bytes.NewReader(s.env.Snapshot))
	if err != nil {
		return nil, errs.New(errs.InvalidArgument, "the backup's snapshot: %v", err)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, MaxSize+1))
	if err != nil || len(raw) > MaxSize {
		return nil, errs.New(errs.InvalidArgument, "the backup's snapshot is unreadable or over %d bytes", MaxSize)
	}
	var snap keyring.Snapshot
	if err := json.Unmarshal(raw, &snap); err != nil {
		return nil, errs.New(errs.InvalidArgument, "the backup's snapshot: %v", err)
	}
	return &snap, nil
}

// ManifestJSON is the manifest as the file holds it.
func (s *Sealed) ManifestJSON() string { return string(s.env.Manifest) }
