package audit

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// Checkpoint is a signed statement of a chain's head: replica's record
// Seq has hash Hash, at Time. Written into the log and kept in the
// keyring store, it proves how far the log reached and what it held: a
// log that ends before it was cut, one that disagrees with it was
// rewritten (the hashes alone could be recomputed by whoever can write
// the file; the signature cannot, the key never leaves the HSM or KMS).
type Checkpoint struct {
	Replica string    `json:"replica"`
	Seq     uint64    `json:"seq"`
	Hash    string    `json:"hash"`
	Time    time.Time `json:"time"`
	// Every is how many records the log wrote between checkpoints when it
	// signed this one: a verifier that finds a longer unsigned tail knows
	// checkpoints were removed.
	Every     int    `json:"every"`
	Signature string `json:"signature"` // ES256 r‖s, base64 (standard)
}

// Signer signs checkpoints with the audit key, an ES256 key held like any
// other Sigil key. Sign returns r‖s.
type Signer interface {
	Sign(ctx context.Context, digest []byte) ([]byte, error)
}

// digest is the SHA-256 of the text a checkpoint signs.
func (c *Checkpoint) digest() []byte {
	text := fmt.Sprintf("sigil audit checkpoint v1\nreplica %s\nseq %d\nhash %s\ntime %s\nevery %d\n",
		c.Replica, c.Seq, c.Hash, c.Time.UTC().Format(time.RFC3339Nano), c.Every)
	sum := sha256.Sum256([]byte(text))
	return sum[:]
}

// sign fills in c's signature.
func (c *Checkpoint) sign(ctx context.Context, s Signer) error {
	sig, err := s.Sign(ctx, c.digest())
	if err != nil {
		return err
	}
	c.Signature = base64.StdEncoding.EncodeToString(sig)
	return nil
}

// Verify checks c's signature with the audit public key.
func (c *Checkpoint) Verify(pub *ecdsa.PublicKey) error {
	sig, err := base64.StdEncoding.DecodeString(c.Signature)
	if err != nil || len(sig) != 64 {
		return errors.New("checkpoint signature is not 64 bytes of base64")
	}
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(pub, c.digest(), r, s) {
		return errors.New("checkpoint signature does not verify with the audit key")
	}
	return nil
}

// Anchor is what the keyring store keeps of a replica's log: its latest
// checkpoint, and where the checkpoint's own entry was written (seq and
// hash), so the log must reach that entry too: cutting the last line of a
// log closed cleanly is a missing tail, not a clean end.
type Anchor struct {
	Checkpoint
	RecordSeq  uint64 `json:"record_seq"`
	RecordHash string `json:"record_hash"`
}

// AnchorName is the name under which replica's latest checkpoint is kept
// in the keyring store.
func AnchorName(replica string) string { return "audit/" + replica }

// ParseAnchor decodes an anchor kept in the store.
func ParseAnchor(b []byte) (*Anchor, error) {
	var a Anchor
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("stored audit anchor: %w", err)
	}
	return &a, nil
}
