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

	if _, err := kr.SetPolicy(ctx, "auth", jwt.Name, &jwt.Policy{Skew: 40e9}); err != nil {
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
