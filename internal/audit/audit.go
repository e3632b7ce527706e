// Package audit writes Sigil's audit trail: one JSON line per decision
// (allowed, denied or failed), never a payload, token or claim value, only
// the SHA-256 of what was signed.
//
// The file is tamper-evident. Every line carries "prev", the hash of the
// line before it, and ends with "hash", the SHA-256 of the line up to that
// member; a file starts with an anchor line. Changing a byte of a line
// breaks that line's own hash; rewriting a line consistently breaks the
// next line's "prev". Rotated files continue the chain: a new file's
// anchor names the last hash of the one before.
//
// Writes are batched: a request's line is written, in one write() with
// whatever else is queued, before the request is answered. A second
// goroutine fsyncs whenever there are written lines not yet synced, so
// writes never wait for the disk. A crash of the process loses nothing
// that was answered (the lines are in the kernel's page cache); a crash
// of the machine loses at most the lines written since the last fsync
// began, and never corrupts earlier lines. Waiting for the fsync before
// answering would cost a disk flush per request (measured: half the
// signing throughput here).
package audit

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// Record is one decision.
type Record struct {
	Time          time.Time `json:"time"`
	RequestID     string    `json:"request_id"`
	Identity      string    `json:"identity,omitempty"`   // the typed identity a rule allowed
	Identities    []string  `json:"identities,omitempty"` // when none was allowed: all the client's typed identities
	Operation     string    `json:"operation"`
	KeyID         string    `json:"key_id,omitempty"`
	Generation    int       `json:"generation,omitempty"`
	Outcome       string    `json:"outcome"` // allowed, denied or failed
	Code          string    `json:"code"`
	LatencyMS     float64   `json:"latency_ms"`
	PayloadSHA256 string    `json:"payload_sha256,omitempty"`
	Peer          string    `json:"peer,omitempty"`
}

// line is a Record as written, with its place in the chain.
type line struct {
	Seq    uint64 `json:"seq"`
	Prev   string `json:"prev"`
	Anchor string `json:"anchor,omitempty"` // first line of a file only
	*Record
}

const zeroHash = "0000000000000000000000000000000000000000000000000000000000000000"

// DefaultMaxSize is when a file is rotated if the configuration says nothing.
const DefaultMaxSize = 64 << 20

// Log appends records to a hash-chained file.
type Log struct {
	path    string
	maxSize int64
	queue   chan pending
	done    chan struct{}
	dirty   chan struct{}         // holds a token while written lines await fsync
	synced  chan struct{}         // closed when the syncer has finished
	failed  atomic.Pointer[error] // set once a write, sync or rotation failed

	// fileMu is held to fsync f or to replace it; only the writer
	// goroutine replaces it, so the writer reads f without it.
	fileMu sync.Mutex
	f      *os.File

	// owned by the writer goroutine
	size int64
	seq  uint64
	prev string
}

type pending struct {
	rec *Record
	err chan error
}

// Open opens (or creates) the audit file at path and continues its chain.
func Open(path string, maxSize int64) (*Log, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	l := &Log{path: path, maxSize: maxSize, queue: make(chan pending, 1024), done: make(chan struct{}),
		dirty: make(chan struct{}, 1), synced: make(chan struct{})}
	if err := l.openFile(); err != nil {
		return nil, err
	}
	go l.run()
	go l.syncer()
	return l, nil
}

// openFile opens path for appending, reading the chain's tail from it, or
// starts it with an anchor.
func (l *Log) openFile() error {
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return errs.New(errs.Unavailable, "audit log: %w", err)
	}
	last, size, err := lastLine(f)
	if err != nil {
		f.Close()
		return errs.New(errs.FailedPrecondition, "audit log %s: %w", l.path, err)
	}
	l.f, l.size = f, size
	if last == nil {
		return l.anchor()
	}
	var tail struct {
		Seq  uint64 `json:"seq"`
		Hash string `json:"hash"`
	}
	if err := json.Unmarshal(last, &tail); err != nil || tail.Hash == "" {
		f.Close()
		return errs.New(errs.FailedPrecondition, "audit log %s: last line is not an audit line; run sigil audit verify", l.path)
	}
	l.seq, l.prev = tail.Seq, tail.Hash
	return nil
}

// anchor starts a file, chained to the last hash of the previous file.
func (l *Log) anchor() error {
	nonce := make([]byte, 16)
	rand.Read(nonce)
	if l.prev == "" {
		l.prev = zeroHash
	}
	if err := l.writeLine(line{Anchor: hex.EncodeToString(nonce), Record: &Record{Time: time.Now().UTC(), Outcome: "anchor"}}); err != nil {
		return err
	}
	return l.sync()
}

// fail records the first error that leaves the chain's tail uncertain;
// every later write is refused with it.
func (l *Log) fail(err error) { l.failed.CompareAndSwap(nil, &err) }

func (l *Log) failure() error {
	if p := l.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// lastLine returns the last line of f and f's size.
func lastLine(f *os.File) ([]byte, int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	var last []byte
	sc := bufio.NewScanner(io.NewSectionReader(f, 0, fi.Size()))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if len(sc.Bytes()) > 0 {
			last = append(last[:0], sc.Bytes()...)
		}
	}
	return last, fi.Size(), sc.Err()
}

// Write records rec and returns once it is written to the file (and so
// survives a crash of the process; the syncer makes it durable).
func (l *Log) Write(rec *Record) error {
	p := pending{rec: rec, err: make(chan error, 1)}
	select {
	case l.queue <- p:
	case <-l.done:
		return errs.New(errs.Unavailable, "audit log closed")
	}
	return <-p.err
}

// run writes queued records in batches, one write() per batch.
func (l *Log) run() {
	for p := range l.queue {
		batch := []pending{p}
	more:
		for len(batch) < 256 {
			select {
			case q, ok := <-l.queue:
				if !ok {
					break more
				}
				batch = append(batch, q)
			default:
				break more
			}
		}
		err := l.writeBatch(batch)
		for _, q := range batch {
			q.err <- err
		}
		if err == nil {
			select {
			case l.dirty <- struct{}{}:
			default: // a sync is already due
			}
		}
		if err == nil && l.size >= l.maxSize {
			err = l.rotate()
		}
		if err != nil {
			l.fail(err)
		}
	}
	close(l.dirty)
	<-l.synced
	l.f.Close()
	close(l.done)
}

// syncer fsyncs the file whenever lines were written since the last
// fsync began, and once more when the writer stops.
func (l *Log) syncer() {
	defer close(l.synced)
	for range l.dirty {
		l.fileMu.Lock()
		err := l.sync()
		l.fileMu.Unlock()
		if err != nil {
			l.fail(err)
		}
	}
	if err := l.sync(); err != nil {
		l.fail(err)
	}
}

// writeBatch writes the batch's lines with one write().
func (l *Log) writeBatch(batch []pending) error {
	if err := l.failure(); err != nil {
		return err
	}
	var buf []byte
	for _, p := range batch {
		b, err := l.next(line{Record: p.rec})
		if err != nil {
			return err
		}
		buf = append(buf, b...)
	}
	return l.write(buf)
}

// writeLine writes one line on its own (anchors).
func (l *Log) writeLine(ln line) error {
	b, err := l.next(ln)
	if err != nil {
		return err
	}
	return l.write(b)
}

// next seals ln as the next line of the chain.
func (l *Log) next(ln line) ([]byte, error) {
	l.seq++
	if ln.Anchor != "" {
		l.seq = 0
	}
	ln.Seq, ln.Prev = l.seq, l.prev
	b, hash, err := seal(ln)
	if err != nil {
		return nil, err
	}
	l.prev = hash
	return b, nil
}

func (l *Log) write(b []byte) error {
	n, err := l.f.Write(b)
	l.size += int64(n)
	if err != nil {
		err = errs.New(errs.Unavailable, "audit log write: %w", err)
		l.fail(err)
	}
	return err
}

// seal encodes ln and appends its own hash: the SHA-256 of the line up to
// the "hash" member.
func seal(ln line) ([]byte, string, error) {
	body, err := json.Marshal(ln)
	if err != nil {
		return nil, "", err
	}
	prefix := append(body[:len(body)-1:len(body)-1], `,"hash":"`...)
	sum := sha256.Sum256(prefix)
	hash := hex.EncodeToString(sum[:])
	return append(append(prefix, hash...), '"', '}', '\n'), hash, nil
}

func (l *Log) sync() error {
	if err := l.f.Sync(); err != nil {
		return errs.New(errs.Unavailable, "audit log fsync: %w", err)
	}
	return nil
}

// rotate moves the file aside (path.1, path.2, …), synced, and starts a
// new one whose anchor continues the chain.
func (l *Log) rotate() error {
	l.fileMu.Lock()
	defer l.fileMu.Unlock()
	if err := l.sync(); err != nil {
		return err
	}
	l.f.Close()
	for n := 1; ; n++ {
		aside := fmt.Sprintf("%s.%d", l.path, n)
		if _, err := os.Stat(aside); errors.Is(err, os.ErrNotExist) {
			if err := os.Rename(l.path, aside); err != nil {
				return errs.New(errs.Unavailable, "audit log rotation: %w", err)
			}
			break
		}
	}
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE|os.O_APPEND|os.O_EXCL, 0o600)
	if err != nil {
		return errs.New(errs.Unavailable, "audit log rotation: %w", err)
	}
	l.f, l.size = f, 0
	return l.anchor()
}

// Close stops accepting records, writes what is queued and closes the file.
func (l *Log) Close() error {
	close(l.queue)
	<-l.done
	return nil
}

// Verify checks the chain through files, in order, and returns an error
// naming the first line that is broken (file:line).
func Verify(files []string) (lines int, err error) {
	prev := ""
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return lines, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for n := 1; sc.Scan(); n++ {
			hash, err := check(sc.Bytes(), prev)
			if err != nil {
				f.Close()
				return lines, fmt.Errorf("%s:%d: %w", name, n, err)
			}
			prev = hash
			lines++
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return lines, fmt.Errorf("%s: %w", name, err)
		}
	}
	return lines, nil
}

// check verifies one line's own hash and its link to prev ("" for the
// first line read, whose predecessor is not at hand).
func check(b []byte, prev string) (string, error) {
	i := bytes.LastIndex(b, []byte(`,"hash":"`))
	if i < 0 || len(b) != i+len(`,"hash":"`)+64+2 || !bytes.HasSuffix(b, []byte(`"}`)) {
		return "", errors.New("not an audit line (no hash)")
	}
	prefix := b[:i+len(`,"hash":"`)]
	sum := sha256.Sum256(prefix)
	hash := hex.EncodeToString(sum[:])
	if string(b[len(prefix):len(prefix)+64]) != hash {
		return "", errors.New("line altered: its hash does not match its content")
	}
	var ln struct {
		Prev string `json:"prev"`
	}
	if err := json.Unmarshal(b, &ln); err != nil {
		return "", fmt.Errorf("not JSON: %v", err)
	}
	if prev != "" && ln.Prev != prev {
		return "", errors.New("chain broken: prev is not the hash of the line before (a line was removed, inserted or rewritten)")
	}
	return hash, nil
}
