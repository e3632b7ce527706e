package keyring_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
	"github.com/sigil-hsm/sigil/purpose/eth"
	"github.com/sigil-hsm/sigil/purpose/jwt"
)

// Key records written before purposes owned their policies ("jwt", "eth"
// and "address" beside the key's fields) load with their policies and
// address, and the next write stores the current form.
func TestRecordsOfTheFirstFormatLoad(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keyring.db")
	fixture, err := os.ReadFile("testdata/records-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	var records map[string]json.RawMessage
	if err := json.Unmarshal(fixture, &records); err != nil {
		t.Fatal(err)
	}
	writeRaw(t, path, records)

	store, err := boltstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	kr, err := keyring.New(ctx, keyring.Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := kr.Get(ctx, "auth")
	if err != nil {
		t.Fatal(err)
	}
	if p := jwt.PolicyOf(auth); p.RotateEvery.Hours() != 2 || p.PublishAhead.Minutes() != 30 || p.MaxTokenTTL.Minutes() != 10 || p.Skew.Seconds() != 30 {
		t.Errorf("jwt policy after loading: %+v", p)
	}
	wallet, err := kr.Get(ctx, "wallet")
	if err != nil {
		t.Fatal(err)
	}
	p := eth.PolicyOf(wallet)
	if !p.AllowsChain(10) || p.AllowsChain(5) || p.DailyLimit == nil || p.DailyLimit.String() != "1000000000000000000" || len(p.AllowTo) != 1 {
		t.Errorf("eth policy after loading: %+v", p)
	}
	if eth.Address(wallet) != "0x71C7656EC7ab88b098defB751B7401B5f6d8976F" {
		t.Errorf("address after loading: %q", eth.Address(wallet))
	}

	// A null policy beside a legacy one: the legacy one counts.
	if k, _ := kr.Get(ctx, "nullpol"); jwt.PolicyOf(k).MaxTokenTTL.Minutes() != 10 {
		t.Errorf("null policy beside a legacy one: %+v", jwt.PolicyOf(k))
	}
	// A legacy address joins the attributes there are.
	if k, _ := kr.Get(ctx, "merged"); k.Attributes["note"] != "kept" || eth.Address(k) != "0x3535353535353535353535353535353535353535" {
		t.Errorf("attributes: %v", k.Attributes)
	}
	// A stored schedule that breaks the invariants does not stop the
	// keyring: that key refuses to sign and is not rotated until it is
	// given a valid policy.
	_, err = kr.ForSigning(ctx, "badsched", jwt.Name)
	if !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("signing with a key whose stored policy is invalid: %v", err)
	}
	kr.Tick(ctx) // the other jwt keys are due, and have no backend here: errors for them
	if k, _ := kr.Get(ctx, "badsched"); len(k.Generations) != 1 {
		t.Errorf("the scheduler rotated a key whose policy is invalid: %d generations", len(k.Generations))
	}
	if _, err := kr.SetPolicy(ctx, "badsched", jwt.Name, &jwt.Policy{}); err != nil {
		t.Fatal(err)
	}
	if k, _ := kr.Get(ctx, "badsched"); k.CheckPurpose(jwt.Name) != nil || jwt.PolicyOf(k).RotateEvery != jwt.DefaultPolicy.RotateEvery {
		t.Errorf("after a valid policy was set: %v", k.CheckPurpose(jwt.Name))
	}

	if _, err := kr.SetPolicy(ctx, "auth", jwt.Name, &jwt.Policy{Schedule: keyring.Schedule{Skew: 40e9}}); err != nil {
		t.Fatal(err)
	}
	stored, err := store.Get(ctx, "auth")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(stored)
	if strings.Contains(string(body), `"jwt":`) || !strings.Contains(string(body), `"policy":{"rotate_every":7200000000000,"publish_ahead":1800000000000,"max_token_ttl":600000000000,"skew":40000000000}`) {
		t.Errorf("rewritten record: %s", body)
	}
}

// writeRaw stores records as boltstore does (revision, then JSON), as an
// older Sigil wrote them.
func writeRaw(t *testing.T, path string, records map[string]json.RawMessage) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("keys"))
		if err != nil {
			return err
		}
		rev := uint64(0)
		for id, body := range records {
			rev++
			if err := b.Put([]byte(id), append(binary.BigEndian.AppendUint64(nil, rev), body...)); err != nil {
				return err
			}
		}
		return b.SetSequence(rev)
	})
	if err != nil {
		t.Fatal(err)
	}
}
