package backup

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/sigil-hsm/sigil/internal/approval"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/signer"
)

// RestoreOptions are what a restore writes into and checks against.
type RestoreOptions struct {
	Store    keyring.Snapshotter
	Backends map[string]signer.Backend
	// Replace restores over a store that is not empty.
	Replace bool
	// Fenced says, for a key's purpose, whether its ledger is fenced on
	// restore, and the command that reconciles key id.
	Fenced func(purpose, id string) (reconcile string, ok bool)
	Now    time.Time
	// AuditKeySHA256, if set, is the audit key's fingerprint the operator
	// pins (from sigil backup's output): the backup must be signed by it.
	// Required for a backend that cannot find the audit key by its name.
	AuditKeySHA256 string
}

// Report is what a restore did.
type Report struct {
	Manifest          Manifest
	Keys, Generations int               // key records, and generations checked against their backends
	Fenced            map[string]string // key ID → the command that reconciles it
	ApprovalsExpired  int
	// Settled are the generations the backup caught being created: kept
	// as retired (they verify, never sign) when their backend holds the
	// pair, dropped when it does not.
	Settled []string
}

// Restore verifies a backup and writes it into an empty store: its
// signature against the audit key's public key as its backend holds it
// (a backup altered, or made by another Sigil, is refused before
// anything is written); every generation that can sign or verify
// against its backend (present, same public key); then the snapshot,
// with the ledgers of keys whose purpose fences them fenced and the
// requests held for approval that had not ended expired.
func Restore(ctx context.Context, file []byte, o RestoreOptions) (*Report, error) {
	sealed, err := Parse(file)
	if err != nil {
		return nil, err
	}
	pub, err := auditKey(ctx, sealed.Manifest.SignedBy, o)
	if err != nil {
		return nil, fmt.Errorf("the audit key that signed the backup: %w", err)
	}
	snap, err := sealed.Verify(pub)
	if err != nil {
		return nil, err
	}
	if err := sameAuditKey(snap, sealed.Manifest.SignedBy, pub); err != nil {
		return nil, err
	}
	rep := &Report{Manifest: sealed.Manifest, Fenced: map[string]string{}}
	if err := settleCreating(ctx, snap, o.Backends, o.Now, rep); err != nil {
		return nil, err
	}
	if err := checkGenerations(ctx, snap, o.Backends, rep); err != nil {
		return nil, err
	}
	if err := fence(snap, sealed.Manifest, o.Fenced, rep); err != nil {
		return nil, err
	}
	if rep.ApprovalsExpired, err = approval.ExpireRestored(snap.Anchors, o.Now); err != nil {
		return nil, err
	}
	if err := o.Store.Restore(ctx, snap, o.Replace); err != nil {
		return nil, err
	}
	return rep, nil
}

// auditKey is the public key the backup must be signed with: the object
// the backend holds under the audit key's own name (sigil.audit.gN; a
// reference the backup gives is not trusted, nor a key it names), and,
// when the operator pins one, the key of that fingerprint.
func auditKey(ctx context.Context, by SignedBy, o RestoreOptions) (crypto.PublicKey, error) {
	if by.Key != keyring.AuditKeyID || by.Generation < 1 {
		return nil, errs.New(errs.InvalidArgument, "the backup is signed by %q generation %d, not Sigil's audit key", by.Key, by.Generation)
	}
	b, ok := o.Backends[by.Backend]
	if !ok {
		return nil, errs.New(errs.FailedPrecondition, "backend %q (the audit key's) is not configured", by.Backend)
	}
	namer, ok := b.(interface{ NameRef(name string) string })
	if !ok {
		return nil, errs.New(errs.FailedPrecondition, "backend %q cannot find the audit key by its name: restore with --audit-key SHA256, the fingerprint sigil backup printed", by.Backend)
	}
	pub, err := b.Public(ctx, namer.NameRef(fmt.Sprintf("%s.g%d", keyring.AuditKeyID, by.Generation)))
	if err != nil {
		return nil, err
	}
	if _, ok := pub.(*ecdsa.PublicKey); !ok || signer.ES256.CheckPublic(pub) != nil {
		return nil, errs.New(errs.FailedPrecondition, "the object named as the audit key is no ES256 key")
	}
	if fp := Fingerprint(pub); o.AuditKeySHA256 != "" && !strings.EqualFold(fp, o.AuditKeySHA256) {
		return nil, errs.New(errs.FailedPrecondition, "the audit key's fingerprint is %s, not the %s pinned", fp, o.AuditKeySHA256)
	}
	return pub, nil
}

// sameAuditKey checks that the verified snapshot's record of the audit
// key holds the key that signed it.
func sameAuditKey(snap *keyring.Snapshot, by SignedBy, pub crypto.PublicKey) error {
	var k keyring.Key
	if err := json.Unmarshal(snap.Keys[keyring.AuditKeyID], &k); err != nil || k.Purpose != keyring.PurposeAudit {
		return errs.New(errs.InvalidArgument, "the backup holds no record of the audit key")
	}
	der, err := signer.MarshalPublicKey(pub)
	if err != nil {
		return err
	}
	for _, g := range k.Generations {
		if g.Number == by.Generation && bytes.Equal(g.PublicKey, der) && k.Backend == by.Backend {
			return nil
		}
	}
	return errs.New(errs.InvalidArgument, "the backup's record of the audit key does not hold the key that signed it")
}

// Fingerprint is a public key's SHA-256 fingerprint (of its DER
// SubjectPublicKeyInfo), hex.
func Fingerprint(pub crypto.PublicKey) string {
	der, err := signer.MarshalPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// publicOf reads a generation's public key from its backend and checks
// it is the one its record holds.
func publicOf(ctx context.Context, backends map[string]signer.Backend, name, ref string, recorded []byte) (any, error) {
	b, ok := backends[name]
	if !ok {
		return nil, errs.New(errs.FailedPrecondition, "backend %q is not configured", name)
	}
	pub, err := b.Public(ctx, ref)
	if err != nil {
		return nil, err
	}
	der, err := signer.MarshalPublicKey(pub)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(der, recorded) {
		return nil, errs.New(errs.FailedPrecondition, "the object %s in backend %q has another public key than the record", ref, name)
	}
	return pub, nil
}

// settleCreating decides the generations the backup caught being
// created, which a keyring would otherwise roll back on its first start,
// destroying a pair that may have been finished and used since: a pair
// the backend holds is kept as retired (its public key read now), one it
// does not is dropped from the record.
func settleCreating(ctx context.Context, snap *keyring.Snapshot, backends map[string]signer.Backend, now time.Time, rep *Report) error {
	for id, v := range snap.Keys {
		var k keyring.Key
		if err := json.Unmarshal(v, &k); err != nil {
			return errs.New(errs.InvalidArgument, "the backup's record of %q: %v", id, err)
		}
		changed := false
		kept := k.Generations[:0]
		for _, g := range k.Generations {
			if g.State != keyring.StateCreating {
				kept = append(kept, g)
				continue
			}
			changed = true
			b, ok := backends[k.Backend]
			if !ok {
				return errs.New(errs.FailedPrecondition, "backend %q of %q is not configured", k.Backend, id)
			}
			pub, err := b.Public(ctx, g.Ref)
			switch {
			case errors.Is(err, signer.ErrKeyMissing) || errs.Is(err, errs.NotFound):
				rep.Settled = append(rep.Settled, fmt.Sprintf("%s generation %d: never made, dropped", id, g.Number))
				continue
			case err != nil:
				return fmt.Errorf("%s generation %d, being created at the backup: %w", id, g.Number, err)
			}
			if g.PublicKey, err = signer.MarshalPublicKey(pub); err != nil {
				return err
			}
			g.State, g.RetiredAt, g.Abandoned = keyring.StateRetired, now, false
			kept = append(kept, g)
			rep.Settled = append(rep.Settled, fmt.Sprintf("%s generation %d: made after the backup, kept retired", id, g.Number))
		}
		if !changed {
			continue
		}
		k.Generations = kept
		b, err := json.Marshal(&k)
		if err != nil {
			return err
		}
		snap.Keys[id] = b
	}
	return nil
}

// checkGenerations reads every trusted generation's public key from its
// backend; any missing or different is a refusal naming them all.
func checkGenerations(ctx context.Context, snap *keyring.Snapshot, backends map[string]signer.Backend, rep *Report) error {
	var bad []string
	for id, v := range snap.Keys {
		var k keyring.Key
		if err := json.Unmarshal(v, &k); err != nil {
			return errs.New(errs.InvalidArgument, "the backup's record of %q: %v", id, err)
		}
		rep.Keys++
		for _, g := range k.Generations {
			if !g.Trusted() || g.Ref == "" {
				continue
			}
			rep.Generations++
			if _, err := publicOf(ctx, backends, k.Backend, g.Ref, g.PublicKey); err != nil {
				bad = append(bad, fmt.Sprintf("%s generation %d: %v", id, g.Number, err))
			}
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return errs.New(errs.FailedPrecondition, "%d generation(s) of the backup do not match their backends, nothing was restored: %v", len(bad), bad)
	}
	return nil
}

// fence fences the ledger of every key whose purpose asks it, creating
// the record of a key that had none (it may have signed since).
func fence(snap *keyring.Snapshot, m Manifest, fenced func(purpose, id string) (string, bool), rep *Report) error {
	if fenced == nil {
		return nil
	}
	since := m.Created
	heads := make([]keyring.ChainHead, 0, len(m.AuditHeads))
	for _, h := range m.AuditHeads {
		heads = append(heads, keyring.ChainHead(h))
	}
	for id, v := range snap.Keys {
		var k keyring.Key
		if err := json.Unmarshal(v, &k); err != nil {
			return err
		}
		cmd, ok := fenced(k.Purpose, id)
		if !ok || k.Deleted {
			continue
		}
		rec, err := keyring.DecodeLedger(snap.Ledgers[id])
		if err != nil {
			return errs.New(errs.InvalidArgument, "the backup's ledger of %q: %v", id, err)
		}
		rec.Fence = &keyring.Fence{Since: since, Reason: "restored from a backup taken " + since.UTC().Format(time.RFC3339), Heads: heads}
		if snap.Ledgers[id], err = keyring.EncodeLedger(rec); err != nil {
			return err
		}
		rep.Fenced[id] = cmd
	}
	return nil
}
