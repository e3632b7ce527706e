package boltstore

import (
	"context"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/sigil-hsm/sigil/keyring/storetest"
)

func TestGroupCommitKeepsEveryRewrite(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.GroupCommit(t, s)
}

// A rewrite the store cannot write (a name past bbolt's limit) fails
// alone, though it shared its transaction with others.
func TestGroupCommitAWriteRefusedFailsAlone(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	tooLong := string(make([]byte, 40000)) // bbolt keys are at most 32768 bytes
	var wg sync.WaitGroup
	errsOf := make([]error, 40)
	for i := range errsOf {
		wg.Go(func() {
			name := "ok-" + strconv.Itoa(i)
			if i%4 == 0 {
				name = tooLong
			}
			errsOf[i] = s.UpdateAnchor(ctx, name, func([]byte) ([]byte, error) { return []byte("v"), nil })
		})
	}
	wg.Wait()
	for i, err := range errsOf {
		if (err != nil) != (i%4 == 0) {
			t.Errorf("rewrite %d: %v", i, err)
		}
	}
}
