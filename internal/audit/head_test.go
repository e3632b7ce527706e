package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/identity"
)

// within polls cond for up to d.
func within(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// anchoredAll waits until the store holds l's whole written head.
func anchoredAll(t *testing.T, l *Log) uint64 {
	t.Helper()
	var w *head
	if !within(5*time.Second, func() bool { w = l.written.Load(); s, h := l.Anchored(); return s == w.Seq && h == w.Hash }) {
		s, _ := l.Anchored()
		t.Fatalf("the store's head is record %d, 5 s after record %d was written", s, w.Seq)
	}
	return w.Seq
}

// killed is the world a kill -9 of e's server leaves behind at this
// moment: a copy of the log's files as they are (a killed process loses
// nothing it wrote) and of the store's anchors as they are, with the same
// audit key. The live Log goes on with the originals, out of the way.
func (e *env) killed() *env {
	e.t.Helper()
	e.anchors.mu.Lock()
	anchors := &memAnchors{m: maps.Clone(e.anchors.m)} // the store first: the file is at least as far
	e.anchors.mu.Unlock()
	k := &env{t: e.t, path: filepath.Join(e.t.TempDir(), "audit.jsonl"), signer: e.signer, anchors: anchors, opts: e.opts}
	files, _ := filepath.Glob(e.path + "*")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			e.t.Fatal(err)
		}
		os.WriteFile(k.path+strings.TrimPrefix(f, e.path), b, 0o600)
	}
	return k
}

// lastCheckpoint is the index of the last checkpoint line of ls.
func lastCheckpoint(t *testing.T, ls [][]byte) int {
	for i := len(ls) - 1; i >= 0; i-- {
		if bytes.Contains(ls[i], []byte(`"operation":"audit.checkpoint"`)) {
			return i
		}
	}
	t.Fatal("no checkpoint in the log")
	return 0
}

// tamperOf is the tamper record of the file at path.
func tamperOf(t *testing.T, path string) *Tamper {
	t.Helper()
	for _, p := range entriesOf(t, lines(t, path)) {
		if p.Tamper != nil {
			return p.Tamper
		}
	}
	return nil
}

// quietOpts keeps checkpoints away: the records written are the
// unsigned tail a crash leaves.
func quietOpts(o *Options) {
	o.CheckpointEvery, o.CheckpointInterval, o.HeadInterval = 100000, time.Hour, 10*time.Millisecond
}

// kill -9, then the records written since the last checkpoint are cut
// from the file: the next start records the cut in the chain (anchored
// head against the file's last record), counts it, and does not sign the
// shorter chain as intact; verify names it from the files alone and
// against the live head.
func TestTailCutAfterACrashIsRecordedAndVerified(t *testing.T) {
	e := newEnv(t)
	e.opts = quietOpts
	l := e.open()
	writeN(t, l, 60)
	head := anchoredAll(t, l)
	k := e.killed()
	l.Close()

	ls := lines(t, k.path)
	cp := lastCheckpoint(t, ls)
	cpSeq := entriesOf(t, ls[cp:cp+1])[0].Seq
	if head <= cpSeq+50 {
		t.Fatalf("the anchored head %d does not cover the tail after the checkpoint at %d", head, cpSeq)
	}
	stored := k.live()[0]
	if stored.RecordSeq != head {
		t.Fatalf("the store holds record %d, want the head %d", stored.RecordSeq, head)
	}
	os.WriteFile(k.path, bytes.Join(ls[:cp+1], nil), 0o600) // the unsigned tail erased

	// Before any restart, against the head the store holds.
	r, err := Verify([]string{k.path}, &k.signer.key.PublicKey, []Anchor{stored})
	if err != nil {
		t.Fatal(err)
	}
	wantProblem(t, r, fmt.Sprintf("missing tail: the files end at record %d", cpSeq), fmt.Sprintf("the live anchored head is record %d (hash %s)", head, stored.RecordHash),
		fmt.Sprintf("records %d to %d not provided", cpSeq+1, head))

	l = k.open()
	if l.Tampers() != 1 {
		t.Fatalf("tampers at the start after the tail was cut: %d", l.Tampers())
	}
	writeN(t, l, 5)
	l.Close()
	tp := tamperOf(t, k.path)
	if tp == nil {
		t.Fatal("no tamper record in the chain")
	}
	if tp.Expected == nil || *tp.Expected != (Point{head, stored.RecordHash}) || tp.Found == nil || tp.Found.Seq != cpSeq || tp.MissingFrom != cpSeq+1 || tp.MissingTo != head {
		t.Fatalf("the tamper record does not name the cut: %+v expected %+v found %+v", tp, tp.Expected, tp.Found)
	}
	cut := fmt.Sprintf("the log ends at record %d (hash %s) but the head anchored in the store is record %d (hash %s): records %d to %d are missing",
		cpSeq, tp.Found.Hash, head, stored.RecordHash, cpSeq+1, head)
	for _, live := range []bool{false, true} {
		r := k.verify(live)
		if r.OK() {
			t.Fatalf("live=%v: a cut log verified: %s", live, r.Summary())
		}
		wantProblem(t, r, "the log records tampering: "+cut, fmt.Sprintf("records %d to %d missing", cpSeq+1, head))
	}
}

// kill -9 and nothing else, with the store at most as far as the disk:
// no tamper record, and the chain verifies. Cutting everything after the
// anchored head (all a power loss could take) is no tamper either;
// cutting the anchored head itself is.
func TestCrashWithoutCutIsNoTamper(t *testing.T) {
	e := newEnv(t)
	e.opts = quietOpts
	l := e.open()
	writeN(t, l, 40)
	anchoredAll(t, l)
	writeN(t, l, 1) // written; maybe not yet anchored
	k := e.killed()
	l.Close()

	l = k.open()
	if l.Tampers() != 0 {
		t.Fatalf("a plain crash was taken for tampering: %s", tamperOf(t, k.path).Detail)
	}
	writeN(t, l, 3)
	l.Close()
	if r := k.verify(true); !r.OK() {
		t.Fatalf("after a plain crash: %s\n%v", r.Summary(), r.Problems)
	}

	for _, c := range []struct {
		name   string
		drop   uint64 // records past the anchored head to keep cut, from the head
		tamper uint64
	}{{"everything after the anchored head lost", 0, 0}, {"the anchored head itself cut", 1, 1}} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.opts = quietOpts
			l := e.open()
			writeN(t, l, 30)
			head := anchoredAll(t, l)
			writeN(t, l, 7)
			k := e.killed()
			l.Close()
			var keep [][]byte
			for _, b := range lines(t, k.path) {
				if p := entriesOf(t, [][]byte{b}); len(p) == 1 && p[0].Seq <= head-c.drop {
					keep = append(keep, b)
				}
			}
			os.WriteFile(k.path, bytes.Join(keep, nil), 0o600)
			l = k.open()
			defer l.Close()
			if l.Tampers() != c.tamper {
				t.Fatalf("tampers %d, want %d", l.Tampers(), c.tamper)
			}
		})
	}
}

// A crash mid-write leaves a partial line: quarantined, no tamper.
func TestCrashMidLineIsNoTamper(t *testing.T) {
	e := newEnv(t)
	e.opts = quietOpts
	l := e.open()
	writeN(t, l, 20)
	anchoredAll(t, l)
	k := e.killed()
	l.Close()
	f, _ := os.OpenFile(k.path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"seq":22,"prev":"ab`)
	f.Close()
	l = k.open()
	defer l.Close()
	if l.Tampers() != 0 {
		t.Fatalf("a partial last line was taken for tampering")
	}
}

// orderedAnchors fails the test's invariant if an anchored head is ever
// ahead of what the log has fsynced.
type orderedAnchors struct {
	*memAnchors
	log        atomic.Pointer[Log]
	puts       atomic.Int64
	violations atomic.Int64
}

func (a *orderedAnchors) PutAnchor(ctx context.Context, name string, v []byte) error {
	if l := a.log.Load(); l != nil {
		var an Anchor
		json.Unmarshal(v, &an)
		if an.RecordSeq > l.synced.Load().Seq {
			a.violations.Add(1)
		}
		a.puts.Add(1)
	}
	return a.memAnchors.PutAnchor(ctx, name, v)
}

// The head anchored is never ahead of the disk: otherwise a machine
// crash would lose records the store names, and be taken for tampering.
func TestAnchoredHeadNeverAheadOfDisk(t *testing.T) {
	e := newEnv(t)
	oa := &orderedAnchors{memAnchors: e.anchors}
	e.opts = func(o *Options) { o.Anchors = oa; o.HeadInterval = time.Nanosecond; o.CheckpointEvery = 50 }
	l := e.open()
	oa.log.Store(l)
	for range 20 {
		writeN(t, l, 50)
	}
	anchoredAll(t, l)
	l.Close()
	if oa.violations.Load() != 0 || oa.puts.Load() == 0 { // how many heads are coalesced into one write depends on the machine's load
		t.Fatalf("%d of %d anchored heads were ahead of the disk", oa.violations.Load(), oa.puts.Load())
	}
}

// faultyAnchors is a store that can fail or hang; it counts the writes
// in flight at once.
type faultyAnchors struct {
	*memAnchors
	mode        atomic.Int32 // 0 ok, 1 fail, 2 hang until ctx ends, 3 hang ignoring ctx
	release     chan struct{}
	inflight    atomic.Int32
	maxInflight atomic.Int32
	puts        atomic.Int64
}

func (a *faultyAnchors) PutAnchor(ctx context.Context, name string, v []byte) error {
	n := a.inflight.Add(1)
	defer a.inflight.Add(-1)
	for m := a.maxInflight.Load(); n > m && !a.maxInflight.CompareAndSwap(m, n); m = a.maxInflight.Load() {
	}
	a.puts.Add(1)
	switch a.mode.Load() {
	case 1:
		return errors.New("store down")
	case 2:
		<-ctx.Done()
		return ctx.Err()
	case 3:
		<-a.release
		return errors.New("store down")
	}
	return a.memAnchors.PutAnchor(ctx, name, v)
}

// The store fails, then hangs (heeding its context, then not): appends
// go on at full speed, one store write at a time, failures are counted,
// and the head is anchored again once the store is back. Close does not
// wait for a store that never answers beyond its bound.
func TestAnchorStoreDownDoesNotBlockAppends(t *testing.T) {
	e := newEnv(t)
	fa := &faultyAnchors{memAnchors: e.anchors, release: make(chan struct{})}
	t.Cleanup(func() { close(fa.release) })
	e.opts = func(o *Options) {
		o.Anchors, o.HeadInterval, o.CheckpointEvery, o.timeout = fa, time.Millisecond, 100000, 300*time.Millisecond
	}
	l := e.open()
	var slowest atomic.Int64
	write := func(n int) {
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				start := time.Now()
				if err := l.Write(&Record{Time: start, RequestID: fmt.Sprint(i), Operation: "sign.raw", Outcome: "allowed", Code: "OK"}); err != nil {
					t.Error(err)
				}
				if d := int64(time.Since(start)); d > slowest.Load() {
					slowest.Store(d)
				}
			})
			if i%50 == 0 {
				time.Sleep(2 * time.Millisecond) // many fsync'd groups
			}
		}
		wg.Wait()
	}
	appends := func(what string) {
		t.Helper()
		start := time.Now()
		write(1000)
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s: 1000 appends took %v", what, d)
		}
	}
	fa.mode.Store(1)
	appends("store failing")
	if !within(5*time.Second, func() bool { return l.AnchorErrors() >= 2 }) {
		t.Errorf("failed store writes not counted and retried: %d", l.AnchorErrors())
	}
	for _, mode := range []int32{2, 3} {
		fa.mode.Store(mode)
		before := fa.puts.Load()
		write(1)
		if !within(8*time.Second, func() bool { return fa.puts.Load() > before && fa.inflight.Load() == 1 }) {
			t.Fatalf("mode %d: no store write began", mode)
		}
		appends(fmt.Sprintf("a store write hanging (mode %d)", mode))
	}
	if s := time.Duration(slowest.Load()); s > time.Second {
		t.Errorf("an append waited %v while the store was down", s)
	}
	if fa.maxInflight.Load() != 1 {
		t.Errorf("%d store writes in flight at once", fa.maxInflight.Load())
	}
	if l.AnchorErrors() < 2 {
		t.Errorf("anchor errors counted: %d", l.AnchorErrors())
	}
	fa.mode.Store(0)
	// A write that never returns holds the one slot: the head is stale
	// until it does, and appends still pass.
	write(10)
	if s, _ := l.Anchored(); s == l.written.Load().Seq {
		t.Errorf("the head was anchored while the only store write hung")
	}
	start := time.Now()
	l.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Close took %v with a store write hanging", d)
	}
	if ls := lines(t, e.path); lastCheckpoint(t, ls) != len(ls)-2 {
		t.Error("no closing checkpoint in the log while the store hung")
	}

	// Back up: the head is anchored again, within the retry backoff.
	fa2 := &faultyAnchors{memAnchors: e.anchors, release: make(chan struct{})}
	close(fa2.release)
	e.opts = func(o *Options) { o.Anchors, o.HeadInterval, o.CheckpointEvery = fa2, time.Millisecond, 100000 }
	l = e.open()
	defer l.Close()
	fa2.mode.Store(1)
	writeN(t, l, 100)
	if !within(2*time.Second, func() bool { return l.AnchorErrors() > 0 }) {
		t.Fatal("failed store writes not counted")
	}
	fa2.mode.Store(0)
	writeN(t, l, 1)
	w := l.written.Load()
	if !within(10*time.Second, func() bool { s, _ := l.Anchored(); return s >= w.Seq }) {
		t.Fatal("the head was not anchored again after the store came back")
	}
}

// A certificate with 3001 identities: the first four are spelled, the
// total is exact (identity.Brief's count is not taken for one identity).
func TestIdentitiesAreCountedExactly(t *testing.T) {
	ids := make([]identity.ID, 3001)
	raw := make([]string, 3001)
	for i := range ids {
		ids[i] = identity.ID{Kind: identity.DNS, Name: fmt.Sprintf("h%d.example", i)}
		raw[i] = ids[i].String()
	}
	for _, c := range []struct {
		name  string
		ids   []string
		total int
		shown int
	}{
		{"identity.Brief of 3001", identity.Brief(ids), 3001, 4},
		{"3001 spelled out", raw, 3001, 4},
		{"two", raw[:2], 2, 2},
		{"five", raw[:5], 5, 4},
		{"Brief of five", identity.Brief(ids[:5]), 5, 4},
		{"none", nil, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			l := e.open()
			if err := l.Write(&Record{Time: time.Now(), Identities: c.ids, Operation: "sign.raw", Outcome: "denied", Code: "PermissionDenied"}); err != nil {
				t.Fatal(err)
			}
			l.Close()
			var got *parsed
			for _, p := range entriesOf(t, lines(t, e.path)) {
				if p.Record.Operation == "sign.raw" {
					got = p
				}
			}
			if got.IdentitiesTotal != c.total || len(got.Identities) != c.shown {
				t.Fatalf("recorded %d identities (%q) of total %d; want %d of %d", len(got.Identities), got.Identities, got.IdentitiesTotal, c.shown, c.total)
			}
			for i, id := range got.Identities {
				if id != raw[i] {
					t.Fatalf("identity %d recorded as %q, want %q", i, id, raw[i])
				}
			}
		})
	}
}
