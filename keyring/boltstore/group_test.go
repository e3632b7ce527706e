package boltstore

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// Concurrent rewrites of one value, batched into shared transactions,
// each see the one before: 32 increments make 32. A rewrite whose fn
// fails or panics fails alone; the others in its batch are written.
func TestGroupCommitKeepsEveryRewrite(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	refused := errors.New("refused")
	var wg sync.WaitGroup
	errsOf := make([]error, 96)
	for i := range errsOf {
		wg.Go(func() {
			errsOf[i] = s.UpdateAnchor(ctx, "counter", func(old []byte) ([]byte, error) {
				switch i % 3 {
				case 1:
					return nil, refused
				case 2:
					panic("a broken rewrite")
				}
				n, _ := strconv.Atoi(string(old))
				return []byte(strconv.Itoa(n + 1)), nil
			})
		})
	}
	wg.Wait()
	for i, err := range errsOf {
		switch i % 3 {
		case 0:
			if err != nil {
				t.Errorf("rewrite %d: %v", i, err)
			}
		case 1:
			if !errors.Is(err, refused) {
				t.Errorf("rewrite %d: %v, want its own error", i, err)
			}
		case 2:
			if !errs.Is(err, errs.Internal) {
				t.Errorf("rewrite %d panicked: %v", i, err)
			}
		}
	}
	if v, err := s.GetAnchor(ctx, "counter"); err != nil || string(v) != "32" {
		t.Fatalf("counter %q, %v: want 32", v, err)
	}
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
