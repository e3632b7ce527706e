package audit

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// Found by an attack review; kept as regression tests.

// Rewrite: delete 2 records in the middle, drop the checkpoints that no longer
// match, renumber and rehash. Keep the last checkpoint: its signed seq is
// beyond the new end, so Verify never compares it.
func TestVerifyRefusesARewriteKeepingAFutureCheckpoint(t *testing.T) {
	e := newEnv(t)
	l := e.open()
	writeN(t, l, 80)
	l.Close()
	orig := lines(t, e.path)
	ps := entriesOf(t, orig)
	const del1, del2 = 30, 31 // seqs deleted (ordinary records)
	lastCP := -1
	for i, p := range ps {
		if p.Checkpoint != nil {
			lastCP = i
		}
	}
	var kept []*parsed
	for i, p := range ps {
		if p.Seq == del1 || p.Seq == del2 {
			if p.Checkpoint != nil || p.FileStart != nil {
				t.Fatal("pick other seqs")
			}
			continue
		}
		if p.Checkpoint != nil && p.Seq > del1 && i != lastCP {
			continue // would not match after renumbering
		}
		kept = append(kept, p)
	}
	os.WriteFile(e.path, renumber(t, kept), 0o600)
	if r := e.verify(false); r.OK() {
		t.Errorf("offline verify accepts a chain with 2 records deleted and renumbered: %s", r.Summary())
	}
	if r := e.verify(true); r.OK() {
		t.Errorf("verify with the live head accepts it: %s", r.Summary())
	}
}

// renumber seals entries as one chain from seq 1, as someone who can
// write the file (but not sign) would.
func renumber(t *testing.T, entries []*parsed) []byte {
	t.Helper()
	var out [][]byte
	prev := zeroHash
	for i, p := range entries {
		p.Seq, p.Prev = uint64(i+1), prev
		line, hash, err := seal(p.entry)
		if err != nil {
			t.Fatal(err)
		}
		out, prev = append(out, line), hash
	}
	return bytes.Join(out, nil)
}

// Drop every checkpoint after an edit, keep the start one: offline verify
// passes with many unsigned records (beyond `every`).
func TestVerifyRefusesStrippedCheckpoints(t *testing.T) {
	e := newEnv(t)
	l := e.open()
	writeN(t, l, 80)
	l.Close()
	var kept []*parsed
	for _, p := range entriesOf(t, lines(t, e.path)) {
		if p.Checkpoint != nil && p.Seq > 5 {
			continue
		}
		if p.Seq == 40 {
			p.Record.Outcome = "denied"
		}
		kept = append(kept, p)
	}
	os.WriteFile(e.path, renumber(t, kept), 0o600)
	if r := e.verify(false); r.OK() {
		t.Errorf("offline verify passes a rewritten log with %d unsigned records (every=10)", r.Unsigned)
	}
}

// The audit path replaced by a symlink to a foreign file: the heal follows
// it, truncates the foreign file and writes audit lines into it.
func TestSymlinkAtThePathIsNeverFollowed(t *testing.T) {
	e := newEnv(t)
	l := e.open()
	writeN(t, l, 5)
	foreign := filepath.Join(t.TempDir(), "precious.txt")
	var content strings.Builder
	for i := range 100 {
		fmt.Fprintf(&content, "precious line %d\n", i)
	}
	os.WriteFile(foreign, []byte(content.String()), 0o600)
	os.Remove(e.path)
	if err := os.Symlink(foreign, e.path); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		err := l.Write(&Record{Time: time.Now(), Operation: "sign.raw", Outcome: "allowed", Code: "OK"})
		t.Logf("write %d: %v", i, err)
		time.Sleep(200 * time.Millisecond)
	}
	l.Close()
	b, _ := os.ReadFile(foreign)
	n := strings.Count(string(b), "precious line")
	t.Logf("foreign file now has %d of 100 precious lines, %d bytes, audit lines inside: %v", n, len(b), strings.Contains(string(b), `"seq"`))
	if n != 100 {
		t.Errorf("BUG: Sigil truncated a foreign file reached through a symlink at the audit path: %d/100 lines left", n)
	}
}

// A record written while/after the log closes (a handler that outlives
// grpc.Stop) panics with "send on closed channel".
func TestWriteAfterCloseIsRefused(t *testing.T) {
	e := newEnv(t)
	l := e.open()
	l.Close()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("BUG: Write after Close panics: %v", r)
		}
	}()
	for i := 0; i < 100; i++ {
		err := l.Write(&Record{Time: time.Now(), Operation: "sign.raw", Outcome: "allowed", Code: "OK"})
		if i == 0 {
			t.Logf("write after close: %v", err)
		}
	}
}

// Rotation while the disk is full: a false tamper record with from > to.
func TestRotationOnAFullDiskIsNoTamper(t *testing.T) {
	for try := 0; try < 20; try++ {
		dir := t.TempDir()
		if err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).Run(); err != nil {
			t.Skip(err)
		}
		e := newEnv(t)
		e.path = filepath.Join(dir, "audit.jsonl")
		e.opts = func(o *Options) { o.MaxSize = 3000 + int64(try)*97 }
		l := e.open()
		filler := filepath.Join(dir, "filler")
		os.WriteFile(filler, make([]byte, (44+try%8)<<10), 0o600)
		for i := 0; i < 400; i++ {
			l.Write(&Record{Time: time.Now(), RequestID: fmt.Sprint(i), Operation: "sign.raw", Outcome: "allowed", Code: "OK"})
		}
		os.Remove(filler)
		time.Sleep(6 * time.Second / 5)
		writeN(t, l, 3)
		l.Close()
		var all []string
		ents, _ := os.ReadDir(dir)
		for _, de := range ents {
			if strings.HasPrefix(de.Name(), "audit.jsonl") {
				all = append(all, filepath.Join(dir, de.Name()))
			}
		}
		r := e.verify(true, all...)
		exec.Command("umount", dir).Run()
		if !r.OK() {
			t.Errorf("try %d: verify of a log that was only ever on a full disk (never tampered with): %v", try, r.Problems)
			return
		}
	}
}

// A huge junk tail (no newline) at start: readTail holds the whole line in memory.
func TestHugeLinesCostBoundedMemory(t *testing.T) {
	e := newEnv(t)
	l := e.open()
	writeN(t, l, 5)
	l.Close()
	f, _ := os.OpenFile(e.path, os.O_APPEND|os.O_WRONLY, 0)
	chunk := bytes.Repeat([]byte("A"), 1<<20)
	for i := 0; i < 300; i++ {
		f.Write(chunk)
	}
	f.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l = e.open()
	runtime.ReadMemStats(&after)
	l.Close()
	t.Logf("Open with a 300 MiB partial last line allocated %d MiB", (after.TotalAlloc-before.TotalAlloc)>>20)
	// verify reading the same kind of line
	f, _ = os.OpenFile(e.path, os.O_APPEND|os.O_WRONLY, 0)
	for i := 0; i < 300; i++ {
		f.Write(chunk)
	}
	f.Close()
	runtime.GC()
	runtime.ReadMemStats(&before)
	e.verify(false)
	runtime.ReadMemStats(&after)
	t.Logf("Verify with a 300 MiB line allocated %d MiB", (after.TotalAlloc-before.TotalAlloc)>>20)
}

// The replica name changes between runs (default: the host name, which
// changes with every pod): the cut made while down is not flagged.
func TestAnotherReplicasLogIsRefused(t *testing.T) {
	e := newEnv(t)
	l := e.open()
	writeN(t, l, 40)
	l.Close()
	orig := lines(t, e.path)
	os.WriteFile(e.path, bytes.Join(orig[:len(orig)-1-20], nil), 0o600) // cut the last 20 lines
	// Started under another replica name, the log would be compared with
	// that name's anchor (none) and the cut would go unnoticed: refused.
	_, err := Open(context.Background(), Options{Path: e.path, Replica: "r2", Signer: e.signer, Anchors: e.anchors})
	if !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), `holds the chain of replica "r1"`) {
		t.Fatalf("opened the log of replica r1 as r2: %v", err)
	}
	l = e.open() // under its own name, the cut is flagged
	defer l.Close()
	if l.Tampers() != 1 {
		t.Fatalf("tampers at start after a cut: %d", l.Tampers())
	}
}

// Lines removed from the head / middle of the current file before a
// restart: not flagged at start.
func TestStartAndMiddleCuts(t *testing.T) {
	e := newEnv(t)
	l := e.open()
	writeN(t, l, 40)
	l.Close()
	orig := lines(t, e.path)
	cut := append(append([][]byte{}, orig[:10]...), orig[20:]...)
	os.WriteFile(e.path, bytes.Join(cut, nil), 0o600)
	l = e.open()
	t.Logf("tampers at start after 10 records cut from the middle: %d", l.Tampers())
	if l.Tampers() == 0 {
		t.Logf("NOTE: start does not notice records cut from the middle (verify does)")
	}
	l.Close()
}

// Quiet system: are the last records ever signed?
func TestQuietLogIsSigned(t *testing.T) {
	e := newEnv(t)
	e.opts = func(o *Options) { o.CheckpointInterval = 200 * time.Millisecond; o.CheckpointEvery = 1000 }
	l := e.open()
	for i := 0; i < 3; i++ {
		writeN(t, l, 50)
		time.Sleep(50 * time.Millisecond)
	}
	// Nothing more is written: within some intervals (a loaded machine
	// stretches them) the last record is signed all the same.
	a, w := &Anchor{}, l.written.Load()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		w = l.written.Load()
		b, _ := e.anchors.GetAnchor(context.Background(), AnchorName("r1"))
		if got, err := ParseAnchor(b); err == nil {
			a = got
		}
		if a.Seq+1 >= w.Seq { // the last line is the checkpoint's own entry
			break
		}
	}
	t.Logf("written seq %d, anchored checkpoint signs seq %d (entry %d)", w.Seq, a.Seq, a.RecordSeq)
	if a.Seq+1 < w.Seq {
		t.Errorf("records %d..%d never signed after 10 s idle with interval 200ms", a.Seq+1, w.Seq)
	}
	l.Close()
}

type hangSigner struct {
	*testSigner
	hang atomic.Bool
}

func (h *hangSigner) Sign(ctx context.Context, d []byte) ([]byte, error) {
	if h.hang.Load() {
		select {} // a cgo call into a hung HSM does not see ctx
	}
	return h.testSigner.Sign(ctx, d)
}

// The audit key's HSM stops answering: Close (SIGTERM) never returns.
func TestCloseDoesNotHangOnAHungSigner(t *testing.T) {
	e := newEnv(t)
	hs := &hangSigner{testSigner: e.signer}
	e.opts = func(o *Options) { o.Signer = hs; o.CheckpointInterval = 100 * time.Millisecond }
	l := e.open()
	hs.hang.Store(true)
	writeN(t, l, 5)
	time.Sleep(300 * time.Millisecond) // a checkpoint is now being signed
	done := make(chan struct{})
	go func() { l.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Errorf("BUG: Close has not returned 15 s after the audit signer hung (anchorTimeout 10 s); SIGTERM would hang")
	}
}
