package audit

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// testSigner is an in-memory ES256 key standing in for the audit key the
// server keeps in its HSM (the e2e tests use that one).
type testSigner struct{ key *ecdsa.PrivateKey }

func newTestSigner(t testing.TB) *testSigner {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &testSigner{k}
}

func (s *testSigner) Sign(_ context.Context, digest []byte) ([]byte, error) {
	r, ss, err := ecdsa.Sign(rand.Reader, s.key, digest)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	ss.FillBytes(out[32:])
	return out, nil
}

// memAnchors is an in-memory keyring store's anchors.
type memAnchors struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (a *memAnchors) PutAnchor(_ context.Context, name string, v []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.m[name] = v
	return nil
}

func (a *memAnchors) GetAnchor(_ context.Context, name string) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if v, ok := a.m[name]; ok {
		return v, nil
	}
	return nil, errs.New(errs.NotFound, "no anchor")
}

// env is one replica's log: its path, key and anchors.
type env struct {
	t       *testing.T
	path    string
	signer  *testSigner
	anchors *memAnchors
	opts    func(*Options)
}

func newEnv(t *testing.T) *env {
	return &env{t: t, path: filepath.Join(t.TempDir(), "audit.jsonl"), signer: newTestSigner(t), anchors: &memAnchors{m: map[string][]byte{}}}
}

func (e *env) open() *Log {
	e.t.Helper()
	o := Options{Path: e.path, Replica: "r1", Signer: e.signer, Anchors: e.anchors, CheckpointEvery: 10}
	if e.opts != nil {
		e.opts(&o)
	}
	l, err := Open(context.Background(), o)
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// live is the anchored checkpoint, as `audit verify` fetches it.
func (e *env) live() []Anchor {
	a, err := ParseAnchor(e.anchors.m[AnchorName("r1")])
	if err != nil {
		e.t.Fatal(err)
	}
	return []Anchor{*a}
}

func (e *env) verify(live bool, files ...string) *Report {
	e.t.Helper()
	if len(files) == 0 {
		files = []string{e.path}
	}
	var l []Anchor
	if live {
		l = e.live()
	}
	r, err := Verify(files, &e.signer.key.PublicKey, l)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

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

func wantProblem(t *testing.T, r *Report, want ...string) {
	t.Helper()
	all := strings.Join(r.Problems, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Fatalf("problems do not name %q:\n%s", w, all)
		}
	}
}

func lines(t *testing.T, path string) [][]byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(b, []byte("\n"))
}

func TestChainVerifiesAcrossRestartsWithCheckpoints(t *testing.T) {
	e := newEnv(t)
	l := e.open()
	writeN(t, l, 40)
	l.Close()
	l = e.open() // continues the chain
	writeN(t, l, 10)
	l.Close()
	r := e.verify(true)
	if !r.OK() || r.Records < 53 || r.Checkpoints < 4 || r.Unsigned != 0 {
		t.Fatalf("%s\n%v", r.Summary(), r.Problems)
	}
}

// Every way of cutting or rewriting the log that the first version let
// pass is named by Verify, and the truncations are flagged at the next
// start too.
func TestVerifyNamesEveryTruncationAndRewrite(t *testing.T) {
	e := newEnv(t)
	l := e.open()
	writeN(t, l, 80)
	l.Close()
	orig := lines(t, e.path)
	n := len(orig) - 1 // the last element is empty
	cases := []struct {
		name string
		keep func() [][]byte
		want []string
	}{
		{"last line removed", func() [][]byte { return orig[:n-1] }, []string{"missing tail"}},
		{"last 50 lines removed", func() [][]byte { return orig[:n-50] }, []string{"missing tail"}},
		{"first 10 lines removed", func() [][]byte { return orig[10:] }, []string{"starts at seq 11", "records 1 to 10 not provided"}},
		{"a line in the middle removed", func() [][]byte { return append(append([][]byte{}, orig[:30]...), orig[31:]...) }, []string{"records 31 to 31 missing"}},
		{"emptied", func() [][]byte { return nil }, []string{"no audit entries", "no files given"}},
		{"every hash recomputed after an edit", func() [][]byte { return rehash(t, orig, 20) }, []string{"the chain was rewritten"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			os.WriteFile(e.path, bytes.Join(c.keep(), nil), 0o600)
			r := e.verify(true)
			if r.OK() {
				t.Fatalf("verified: %s", r.Summary())
			}
			wantProblem(t, r, c.want...)
		})
	}
	// Truncated, then started: a permanent tamper record naming the range.
	os.WriteFile(e.path, bytes.Join(orig[:n-50], nil), 0o600)
	l = e.open()
	if l.Tampers() != 1 {
		t.Fatalf("tampers at start: %d", l.Tampers())
	}
	l.Close()
	if b, _ := os.ReadFile(e.path); !bytes.Contains(b, []byte(`"operation":"audit.tamper_detected"`)) || !bytes.Contains(b, []byte("are missing")) {
		t.Fatal("no tamper record after a truncated log was started")
	}
	wantProblem(t, e.verify(true), "the log records tampering")

	// Rewritten with every hash recomputed, then started: flagged too.
	e2 := newEnv(t)
	l = e2.open()
	writeN(t, l, 30)
	l.Close()
	os.WriteFile(e2.path, bytes.Join(rehash(t, lines(t, e2.path), 10), nil), 0o600)
	l = e2.open()
	defer l.Close()
	if l.Tampers() != 1 {
		t.Fatalf("a rewritten log started without a tamper record (%d)", l.Tampers())
	}
}

// entriesOf parses the lines of a log, each of which must be an entry.
func entriesOf(t *testing.T, lines [][]byte) []*parsed {
	t.Helper()
	var out []*parsed
	for _, b := range lines {
		if len(b) == 0 {
			continue
		}
		p, err := parse(bytes.TrimSuffix(b, []byte("\n")))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// rehash edits record at (a line index) and recomputes every hash after
// it, as someone who can write the file but not sign would.
func rehash(t *testing.T, orig [][]byte, at int) [][]byte {
	var out [][]byte
	prev := ""
	for i, p := range entriesOf(t, orig) {
		if i == at {
			p.Record.Outcome = "denied"
		}
		if prev != "" {
			p.Prev = prev
			if p.FileStart != nil {
				p.FileStart.PrevFileHash = prev
			}
		}
		line, hash, err := seal(p.entry)
		if err != nil {
			t.Fatal(err)
		}
		out, prev = append(out, line), hash
	}
	return out
}

// One request with a 262,000-character key ID of '<' (what a client with
// no rights at all could send): its record stays small, the log starts
// again and verifies.
func TestHostileFieldsAreBounded(t *testing.T) {
	e := newEnv(t)
	l := e.open()
	huge := strings.Repeat("<", 262000)
	details := map[string]string{"chain_id": "1", huge: "x", "tx_hash": huge}
	for i := range 20 {
		details["note-"+strconv.Itoa(i)] = strings.Repeat("n", 20000)
	}
	// Written alongside ordinary records in one group: the hostile one
	// neither fails them nor takes the log down.
	if err := l.WriteAll([]*Record{{Time: time.Now(), Operation: "sign.raw", Outcome: "allowed"},
		{Time: time.Now(), Identity: huge, Operation: "sign.raw", KeyID: huge, Outcome: "denied", Code: "PermissionDenied", Peer: "ad\xffmin", Details: details}}); err != nil {
		t.Fatal(err)
	}
	if len(details) != 23 || details["chain_id"] != "1" {
		t.Fatal("bounding a record changed its caller's details")
	}
	assertion := `{"id":"` + strings.Repeat("c", 1500) + `","authenticatorData":"x"}` // kept whole: AuditCheck reads it back
	if err := l.Write(&Record{Time: time.Now(), Operation: "approvals.approve", Outcome: "allowed", Details: map[string]string{"passkey_assertion": assertion, "decision": "approve"}}); err != nil {
		t.Fatal(err)
	}
	if up, why := l.Health(); !up {
		t.Fatalf("down after a hostile record: %s", why)
	}
	l.Close()
	for _, b := range lines(t, e.path) {
		if len(b) > MaxLine {
			t.Fatalf("a line of %d bytes", len(b))
		}
	}
	b, _ := os.ReadFile(e.path)
	if !bytes.Contains(b, []byte(`"invalid_key_id":{"length":262000`)) || bytes.Contains(b, []byte("<<<<")) {
		t.Fatal("the invalid key ID was not recorded as its length and hash")
	}
	if !bytes.Contains(b, []byte(`"passkey_assertion":"{\"id\":\"`+strings.Repeat("c", 1500)+`\",`)) {
		t.Fatal("a passkey assertion in a record's details was not kept whole")
	}
	l = e.open()
	l.Close()
	if r := e.verify(true); !r.OK() {
		t.Fatal(r.Problems)
	}
}

// A line cut short (a crash, a full disk) never stops a start: it is cut
// off, kept as evidence in a quarantine entry the chain covers, and the
// chain goes on.
func TestPartialLastLineIsQuarantined(t *testing.T) {
	e := newEnv(t)
	l := e.open()
	writeN(t, l, 5)
	l.Close()
	f, _ := os.OpenFile(e.path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"seq":99,"prev":"ab`)
	f.Close()
	l = e.open()
	writeN(t, l, 5)
	l.Close()
	r := e.verify(true)
	if !r.OK() || len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "20 damaged bytes") {
		t.Fatalf("%s %v %v", r.Summary(), r.Problems, r.Notes)
	}
}

func TestRotationKeepsSeqContiguousAcrossFiles(t *testing.T) {
	e := newEnv(t)
	e.opts = func(o *Options) { o.MaxSize = 2048 }
	l := e.open()
	for range 6 {
		writeN(t, l, 10)
	}
	l.Close()
	files, _ := filepath.Glob(e.path + ".*")
	if len(files) < 2 {
		t.Fatalf("no rotation: %v", files)
	}
	all := append([]string{e.path}, files...) // any order
	if r := e.verify(true, all...); !r.OK() {
		t.Fatal(r.Problems)
	}
	// A rotated file left out is a named gap: the first, or one between.
	wantProblem(t, e.verify(true, append([]string{e.path}, files[1:]...)...), "records 1 to", "not provided")
	wantProblem(t, e.verify(true, e.path, files[0]), "missing (between")
	for _, f := range all {
		if fi, _ := os.Stat(f); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v", f, fi.Mode().Perm())
		}
	}
}

// The file deleted under a writing server: a record whose write began
// after the deletion is answered OK only once it is in the file at the
// configured path; the new file says which records went with the old one.
func TestDeletedFileIsReplacedAndNoAnswerIsLost(t *testing.T) {
	e := newEnv(t)
	l := e.open()
	defer l.Close()
	writeN(t, l, 20)
	if err := os.Remove(e.path); err != nil {
		t.Fatal(err)
	}
	var ok []string
	for i := range 30 {
		id := fmt.Sprintf("after-%d", i)
		if err := l.Write(&Record{Time: time.Now(), RequestID: id, Identity: "spiffe://t/c", Operation: "sign.raw", Outcome: "allowed", Code: "OK"}); err == nil {
			ok = append(ok, id)
		}
	}
	b, err := os.ReadFile(e.path)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ok {
		if !bytes.Contains(b, []byte(`"request_id":"`+id+`"`)) {
			t.Fatalf("%s was answered OK but is not in the file at the path", id)
		}
	}
	if len(ok) == 0 || !bytes.Contains(b, []byte("was deleted or replaced")) {
		t.Fatalf("%d answered; the new file names no loss: %s", len(ok), b[:min(len(b), 600)])
	}
}

// A full filesystem: records are refused (never answered OK), the log
// reports itself down, and once space is freed it writes again without a
// restart. Then it starts again and verifies.
func TestFullDiskFailsClosedThenHeals(t *testing.T) {
	dir := t.TempDir()
	if err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).Run(); err != nil {
		if os.Getenv("CI") == "true" && os.Geteuid() == 0 {
			t.Fatalf("mounting a tmpfs as root under CI=true: %v", err)
		}
		t.Skipf("cannot mount a tmpfs (needs root): %v", err)
	}
	defer exec.Command("umount", dir).Run()
	e := newEnv(t)
	e.path = filepath.Join(dir, "audit.jsonl")
	l := e.open()
	filler := filepath.Join(dir, "filler")
	os.WriteFile(filler, make([]byte, 40<<10), 0o600)
	var refused atomic.Int32
	for i := 0; refused.Load() == 0 && i < 1000; i++ {
		err := l.Write(&Record{Time: time.Now(), RequestID: fmt.Sprint(i), Identity: "spiffe://t/c", Operation: "sign.raw", Outcome: "allowed", Code: "OK"})
		if err != nil {
			if !errs.Is(err, errs.Unavailable) {
				t.Fatalf("a full disk: %v, want Unavailable", err)
			}
			refused.Add(1)
		}
	}
	if up, detail := l.Health(); up || refused.Load() == 0 || l.WriteErrors() == 0 {
		t.Fatalf("after a full disk: up %v (%s), %d refused", up, detail, refused.Load())
	}
	os.Remove(filler)
	deadline := time.Now().Add(10 * time.Second)
	for up, _ := l.Health(); !up; up, _ = l.Health() {
		if time.Now().After(deadline) {
			t.Fatal("the log did not heal after space was freed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	writeN(t, l, 5)
	l.Close()
	l = e.open()
	l.Close()
	if r := e.verify(true); !r.OK() {
		t.Fatal(r.Problems)
	}
}

func TestRecordReaderSurvivesAnything(t *testing.T) {
	for _, in := range [][]byte{nil, []byte("\n\n"), bytes.Repeat([]byte("x"), 3<<20), []byte(`{"seq":1,"hash":"` + strings.Repeat("0", 64) + `"}`)} {
		f := filepath.Join(t.TempDir(), "a.jsonl")
		os.WriteFile(f, in, 0o600)
		if _, err := Verify([]string{f}, nil, nil); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
}

// FuzzReadLog feeds arbitrary file contents to the readers a start and a
// verify run: neither may panic or fail on content, however long or odd
// its lines; only a problem may be reported.
func FuzzReadLog(f *testing.F) {
	f.Add([]byte(`{"seq":1,"prev":"0000000000000000000000000000000000000000000000000000000000000000","time":"2026-01-01T00:00:00Z","identity":"sigil","operation":"audit.file_start","outcome":"ok","code":"OK","file_start":{"replica":"r","prev_file_seq":0,"prev_file_hash":""},"hash":"00"}` + "\n"))
	f.Add([]byte("\n\n{\n"))
	f.Add([]byte(`{"seq":2,"hash":"` + strings.Repeat("a", 64) + `"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "a.jsonl")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		key := newTestSigner(t)
		r, err := Verify([]string{path}, &key.key.PublicKey, nil)
		if err != nil {
			t.Fatalf("Verify failed on content instead of reporting it: %v", err)
		}
		if len(data) > 0 && r.OK() {
			t.Fatalf("arbitrary bytes verified as a signed chain: %q", data)
		}
		fh, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		tl, err := readTail(fh)
		if errors.Is(err, errForeign) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if tl.cut < 0 || tl.cut > int64(len(data)) {
			t.Fatalf("tail cut at %d of %d bytes", tl.cut, len(data))
		}
	})
}
