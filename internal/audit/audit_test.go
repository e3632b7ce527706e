package audit

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

func writeN(t *testing.T, l *Log, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := l.Write(&Record{Time: time.Now(), RequestID: fmt.Sprint(i), Identity: "spiffe://t/c", Operation: "sign.raw", KeyID: "k", Outcome: "allowed", Code: "OK"}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

func TestChainVerifiesAndNamesTheAlteredLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := Open(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	writeN(t, l, 40)
	l.Close()
	// Reopening continues the chain.
	l, _ = Open(path, 0)
	writeN(t, l, 10)
	l.Close()
	if n, err := Verify([]string{path}); err != nil || n != 51 {
		t.Fatalf("Verify: %d lines, %v", n, err)
	}
	orig, _ := os.ReadFile(path)
	lines := bytes.SplitAfter(orig, []byte("\n"))

	// One byte changed in line 17: its own hash no longer matches.
	changed := bytes.Clone(orig)
	off := len(bytes.Join(lines[:16], nil)) + bytes.Index(lines[16], []byte(`"sign.raw"`)) + 2
	changed[off] ^= 0x01
	os.WriteFile(path, changed, 0o600)
	if _, err := Verify([]string{path}); err == nil || !strings.Contains(err.Error(), ":17:") {
		t.Fatalf("altered byte: %v", err)
	}
	// A line removed: the next line's prev breaks.
	os.WriteFile(path, bytes.Join(append(lines[:20:20], lines[21:]...), nil), 0o600)
	if _, err := Verify([]string{path}); err == nil || !strings.Contains(err.Error(), ":21:") || !strings.Contains(err.Error(), "chain") {
		t.Fatalf("removed line: %v", err)
	}
}

func TestRotationContinuesTheChain(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	l, err := Open(path, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for range 6 { // rotation happens between batches
		writeN(t, l, 10)
	}
	l.Close()
	files, _ := filepath.Glob(path + ".*")
	sort.Slice(files, func(i, j int) bool {
		return len(files[i]) < len(files[j]) || (len(files[i]) == len(files[j]) && files[i] < files[j])
	})
	if len(files) < 2 {
		t.Fatalf("no rotation: %v", files)
	}
	all := append(files, path)
	n, err := Verify(all)
	if err != nil || n != 60+len(all) {
		t.Fatalf("Verify across %d files: %d lines, %v", len(all), n, err)
	}
	// Out of order, the chain breaks at the first line of the misplaced file.
	if _, err := Verify([]string{all[1], all[0]}); err == nil {
		t.Fatal("files out of order verified")
	}
	for _, f := range all {
		if fi, _ := os.Stat(f); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v", f, fi.Mode().Perm())
		}
	}
}
