package backup

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
	"github.com/sigil-hsm/sigil/signer"
)

// fakeHSM holds objects by reference (pkcs11:object=LABEL) and finds
// them by name as the pkcs11 backend does.
type fakeHSM map[string]*ecdsa.PrivateKey

func (f fakeHSM) Public(_ context.Context, ref string) (crypto.PublicKey, error) {
	k, ok := f[ref]
	if !ok {
		return nil, errs.New(errs.NotFound, "no object %s", ref)
	}
	return &k.PublicKey, nil
}
func (f fakeHSM) Sign(context.Context, string, signer.Algorithm, []byte) ([]byte, error) {
	return nil, nil
}
func (f fakeHSM) Close() error               { return nil }
func (f fakeHSM) NameRef(name string) string { return "pkcs11:object=" + name }

// A tenant who may sign digests with a raw key of its own cannot make a
// backup restore: not by pointing the backup's audit key record at its
// key, nor by naming its key as the signer; and a pinned fingerprint
// refuses even the real audit key's backup if it is not that key.
func TestForgedBackupsAreRefused(t *testing.T) {
	audit, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tenant, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	hsm := fakeHSM{"pkcs11:object=sigil.audit.g1": audit, "pkcs11:object=team-a/mine.g1": tenant}
	record := func(id, purpose, ref string, k *ecdsa.PrivateKey) []byte {
		der, _ := signer.MarshalPublicKey(&k.PublicKey)
		b, _ := json.Marshal(keyring.Key{ID: id, Purpose: purpose, Algorithm: signer.ES256, Backend: "hsm",
			Generations: []keyring.Generation{{Number: 1, State: keyring.StateActive, Ref: ref, PublicKey: der}}})
		return b
	}
	restore := func(snap *keyring.Snapshot, by SignedBy, with *ecdsa.PrivateKey, pin string) error {
		file, err := Seal(context.Background(), Manifest{Created: time.Now(), SignedBy: by}, snap, signWith(with))
		if err != nil {
			t.Fatal(err)
		}
		st, err := boltstore.Open(filepath.Join(t.TempDir(), "k.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		_, err = Restore(context.Background(), file, RestoreOptions{Store: st, Backends: map[string]signer.Backend{"hsm": hsm}, Now: time.Now(), AuditKeySHA256: pin})
		if err == nil {
			if snap, _ := st.Snapshot(context.Background()); len(snap.Keys) == 0 {
				t.Fatal("a restore said it succeeded and wrote nothing")
			}
		}
		return err
	}
	swapped := &keyring.Snapshot{Revision: 1, Keys: map[string][]byte{"sigil.audit": record("sigil.audit", "audit", "pkcs11:object=team-a/mine.g1", tenant)}}
	if err := restore(swapped, SignedBy{Key: "sigil.audit", Generation: 1, Backend: "hsm"}, tenant, ""); err == nil {
		t.Error("a backup whose audit key record points at a tenant's key, signed by it, restored")
	}
	own := &keyring.Snapshot{Revision: 1, Keys: map[string][]byte{"team-a/mine": record("team-a/mine", "raw", "pkcs11:object=team-a/mine.g1", tenant)}}
	if err := restore(own, SignedBy{Key: "team-a/mine", Generation: 1, Backend: "hsm"}, tenant, ""); err == nil {
		t.Error("a backup naming a tenant's key as its signer restored")
	}
	good := &keyring.Snapshot{Revision: 1, Keys: map[string][]byte{"sigil.audit": record("sigil.audit", "audit", "pkcs11:object=sigil.audit.g1", audit)}}
	by := SignedBy{Key: "sigil.audit", Generation: 1, Backend: "hsm"}
	if err := restore(good, by, audit, Fingerprint(&tenant.PublicKey)); err == nil {
		t.Error("a backup restored against another pinned fingerprint")
	}
	if err := restore(good, by, audit, Fingerprint(&audit.PublicKey)); err != nil {
		t.Errorf("the real backup with its pinned fingerprint: %v", err)
	}
}

// A generation the backup caught being created is not rolled back (and
// its pair destroyed) by the restored keyring: kept retired when the
// backend holds the pair, dropped when it does not.
func TestRestoreSettlesCreatingGenerations(t *testing.T) {
	audit, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	made, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	hsm := fakeHSM{"pkcs11:object=sigil.audit.g1": audit, "pkcs11:object=k.g2": made}
	der, _ := signer.MarshalPublicKey(&audit.PublicKey)
	auditRec, _ := json.Marshal(keyring.Key{ID: "sigil.audit", Purpose: "audit", Algorithm: signer.ES256, Backend: "hsm",
		Generations: []keyring.Generation{{Number: 1, State: keyring.StateActive, Ref: "pkcs11:object=sigil.audit.g1", PublicKey: der}}})
	k, _ := json.Marshal(keyring.Key{ID: "k", Purpose: "raw", Algorithm: signer.ES256, Backend: "hsm", Generations: []keyring.Generation{
		{Number: 2, State: keyring.StateCreating, Ref: "pkcs11:object=k.g2"}, {Number: 3, State: keyring.StateCreating, Ref: "pkcs11:object=k.g3"}}})
	snap := &keyring.Snapshot{Revision: 1, Keys: map[string][]byte{"sigil.audit": auditRec, "k": k}}
	file, err := Seal(context.Background(), Manifest{Created: time.Now(), SignedBy: SignedBy{Key: "sigil.audit", Generation: 1, Backend: "hsm"}}, snap, signWith(audit))
	if err != nil {
		t.Fatal(err)
	}
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rep, err := Restore(context.Background(), file, RestoreOptions{Store: st, Backends: map[string]signer.Backend{"hsm": hsm}, Now: time.Now()})
	if err != nil || len(rep.Settled) != 2 {
		t.Fatalf("restore: %+v %v", rep, err)
	}
	got, err := st.Get(context.Background(), "k")
	if err != nil || len(got.Generations) != 1 || got.Generations[0].Number != 2 || got.Generations[0].State != keyring.StateRetired || len(got.Generations[0].PublicKey) == 0 {
		t.Fatalf("the settled record: %+v %v", got, err)
	}
}
