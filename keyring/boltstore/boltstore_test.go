package boltstore

import (
	"path/filepath"
	"testing"

	"github.com/sigil-hsm/sigil/keyring/storetest"
)

func TestCompareAndSwap(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.CompareAndSwap(t, s)
	storetest.Anchors(t, s)
	storetest.UpdateAnchor(t, s)
}

func TestSnapshots(t *testing.T) {
	open := func(name string) *Store {
		s, err := Open(filepath.Join(t.TempDir(), name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	storetest.Snapshots(t, open("from.db"), open("into.db"))
}
