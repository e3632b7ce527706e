package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/groupcommit"
)

// Anchors keeps the latest checkpoint outside the log; the keyring stores
// (bbolt, etcd) have this ability.
type Anchors interface {
	PutAnchor(ctx context.Context, name string, value []byte) error
	GetAnchor(ctx context.Context, name string) ([]byte, error)
}

// Options configure a Log.
type Options struct {
	Path    string
	MaxSize int64  // bytes before the file rotates; DefaultMaxSize if 0
	Replica string // whose chain this is; "local" if empty
	// Signer and Anchors, when both set, make signed checkpoints every
	// CheckpointEvery records or CheckpointInterval, at start and at
	// Close, kept in the log and in Anchors.
	Signer             Signer
	Anchors            Anchors
	CheckpointEvery    int           // DefaultCheckpointEvery if 0
	CheckpointInterval time.Duration // DefaultCheckpointInterval if 0
	// HeadInterval is the least time between two writes of the chain's
	// head (the last synced record's seq and hash, beside the latest
	// checkpoint) to Anchors: after every fsync, coalesced, one write at a
	// time, so a tail cut after a crash is found at the next start.
	// DefaultHeadInterval if 0; negative, the head is anchored only with
	// checkpoints (the whole unsigned tail can then be cut unnoticed).
	HeadInterval time.Duration
	Logger       *slog.Logger

	timeout time.Duration // anchorTimeout if 0 (tests shorten it)
}

// Defaults.
const (
	DefaultMaxSize            = 64 << 20
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = 10 * time.Second
	DefaultHeadInterval       = 200 * time.Millisecond
)

// Healing: after a write or fsync fails, the file is reopened by path
// with a backoff from healMin doubling to healMax.
const (
	healMin       = 100 * time.Millisecond
	healMax       = 5 * time.Second
	anchorTimeout = 5 * time.Second // a signature or store write taking longer has failed
)

// head is a point of the chain: a record's seq and hash.
type head struct {
	Seq  uint64
	Hash string
}

// Log appends records to a hash-chained file.
type Log struct {
	unlock     func() // releases the chain's lock (lockChain)
	unlockOnce sync.Once
	opts       Options
	log        *slog.Logger
	done       chan struct{}

	// Writes are group-committed (see groupcommit): the first caller to
	// find none under way writes its records and those that came
	// meanwhile, with no hand-off to a goroutine and back.
	group groupcommit.Group[*writeReq]
	wake  chan struct{} // holds a token when the log went down: the keeper schedules healing
	stop  chan struct{} // closed by Close: the keeper finishes the log

	closeMu sync.RWMutex // held to write (read) or to close (write)
	closed  bool

	up          atomic.Bool
	detail      atomic.Pointer[string]
	writeErrors atomic.Uint64
	tampers     atomic.Uint64
	signerHangs atomic.Bool          // a checkpoint signature never came back
	written     atomic.Pointer[head] // the last record written to the file
	synced      atomic.Pointer[head] // the last record known to be on disk

	dirty    chan struct{} // holds a token while written lines await fsync
	syncDone chan struct{}
	sign     chan head       // heads for the checkpointer to sign
	signed   chan Checkpoint // signed checkpoints for the keeper to write
	signDone chan struct{}

	// The anchorer keeps the store's anchor up with the synced head.
	checkpointed atomic.Pointer[Anchor] // the newest checkpoint written, with its entry
	stored       atomic.Pointer[Anchor] // what the store holds, as last written
	anchorWake   chan struct{}          // holds a token when there may be more to anchor
	anchorStop   chan struct{}
	anchorDone   chan struct{}
	anchorHangs  atomic.Bool // a store write never came back
	anchorErrors atomic.Uint64
	anchoredCP   *Anchor // the checkpoint stored holds; the anchorer's, then finish's

	// fileMu is held to fsync f or to replace it; only a holder of
	// writeMu replaces it, so a writer reads f without it.
	fileMu sync.Mutex
	f      *os.File

	// writeMu is held to write to the file and for the state below: by a
	// group's leader, and by the keeper goroutine (run) for checkpoints,
	// healing and closing.
	writeMu   sync.Mutex
	size      int64
	seq       uint64
	prev      string
	fileFirst uint64 // seq of this file's first entry
	since     int    // records since the last checkpoint
	nextHeal  time.Time
	healWait  time.Duration
}

// writeReq is one caller's records, written together, and what became
// of them.
type writeReq struct {
	entries []entry
	err     error
}

// Open opens (or creates) the audit file and continues its chain. A
// partial or damaged end is cut off and kept as evidence; a log that ends
// before, or disagrees with, the checkpoint anchored outside it is
// recorded as tampered with. Neither stops the start.
func Open(ctx context.Context, o Options) (*Log, error) {
	o.MaxSize = max(o.MaxSize, 0)
	if o.MaxSize == 0 {
		o.MaxSize = DefaultMaxSize
	}
	if o.Replica == "" {
		o.Replica = "local"
	}
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = DefaultCheckpointEvery
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = DefaultCheckpointInterval
	}
	if o.HeadInterval == 0 {
		o.HeadInterval = DefaultHeadInterval
	}
	if o.timeout <= 0 {
		o.timeout = anchorTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	l := &Log{opts: o, log: o.Logger, done: make(chan struct{}), wake: make(chan struct{}, 1), stop: make(chan struct{}),
		dirty: make(chan struct{}, 1), syncDone: make(chan struct{}), sign: make(chan head, 1),
		signed: make(chan Checkpoint, 1), signDone: make(chan struct{}), healWait: healMin,
		anchorWake: make(chan struct{}, 1), anchorStop: make(chan struct{}), anchorDone: make(chan struct{})}
	l.detail.Store(new(string))
	unlock, err := lockChain(o.Path)
	if err != nil {
		return nil, err
	}
	l.unlock = unlock
	expected, err := l.anchored(ctx)
	if err != nil {
		unlock()
		return nil, err
	}
	if err := l.openFile(expected, starting); err != nil {
		unlock()
		return nil, err
	}
	l.up.Store(true)
	if l.checkpointing() {
		if err := l.checkpointNow(ctx, true); err != nil {
			l.f.Close()
			unlock()
			return nil, errs.New(errs.Unavailable, "audit log: the start checkpoint: %w", err)
		}
	}
	go l.run()
	go l.syncer()
	go l.checkpointer()
	if l.checkpointing() {
		go l.anchorer()
	} else {
		close(l.anchorDone)
	}
	return l, nil
}

func (l *Log) checkpointing() bool { return l.opts.Signer != nil && l.opts.Anchors != nil }

// anchored reads the checkpoint kept outside the log, if any.
func (l *Log) anchored(ctx context.Context) (*head, error) {
	if !l.checkpointing() {
		return nil, nil
	}
	b, err := l.opts.Anchors.GetAnchor(ctx, AnchorName(l.opts.Replica))
	if errs.Is(err, errs.NotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit log: reading the anchored checkpoint: %w", err)
	}
	a, err := ParseAnchor(b)
	if err != nil {
		return nil, err
	}
	return &head{Seq: a.RecordSeq, Hash: a.RecordHash}, nil
}

// opening says why a file is opened.
type opening int

const (
	starting opening = iota // at start: the log must reach the anchored checkpoint
	healing                 // after a failure: it must reach what was written
	rotating                // a new file after the previous one was moved aside
)

// openFile opens the file at the configured path and makes the writer's
// chain state continue it. expected is where the log must reach (the
// anchored checkpoint at start, the last written record when healing);
// a file that falls short of it, or disagrees, gets a tamper record.
func (l *Log) openFile(expected *head, why opening) error {
	f, err := openRegular(l.opts.Path)
	if err != nil {
		return errs.New(errs.Unavailable, "audit log: %w", err)
	}
	t, err := readTail(f)
	if err == nil {
		err = truncateTo(f, t, l.opts.Path)
	}
	if err != nil {
		f.Close()
		return errs.New(errs.Unavailable, "audit log %s: %w", l.opts.Path, err)
	}
	l.fileMu.Lock()
	old := l.f
	l.f, l.size = f, t.cut
	l.fileMu.Unlock()
	if old != nil {
		old.Close()
	}
	have := l.fileHead(t, why)
	var tamper *Tamper
	switch {
	case why == healing && t.last == nil && l.fileFirst <= expected.Seq:
		tamper = &Tamper{Detail: fmt.Sprintf("%s was deleted or replaced by an empty file: records %d to %d went with it", l.opts.Path, l.fileFirst, expected.Seq),
			MissingFrom: l.fileFirst, MissingTo: expected.Seq, Expected: &Point{expected.Seq, expected.Hash}}
	case expected != nil && why != rotating:
		tamper = l.compare(have, *expected, why)
	}
	if tamper != nil && expected.Seq > have.Seq {
		have = *expected // the chain goes on from what was anchored; the gap stays provable
	}
	l.seq, l.prev = have.Seq, have.Hash
	l.written.Store(&have)
	var entries []entry
	if t.last != nil {
		first := firstEntry(f)
		if r := first.replica(); r != "" && r != l.opts.Replica {
			l.f.Close()
			return errs.New(errs.FailedPrecondition, "audit log %s holds the chain of replica %q, not %q: set audit.replica to %q, or give this replica a file of its own", l.opts.Path, r, l.opts.Replica, r)
		}
		l.fileFirst = first.Seq
	} else {
		l.fileFirst = l.seq + 1
		entries = append(entries, l.own(opFileStart, "ok", entry{FileStart: &FileStart{Replica: l.opts.Replica, PrevFileSeq: l.seq, PrevFileHash: l.prev}}))
	}
	for _, ev := range t.junk {
		entries = append(entries, l.own(opQuarantine, "quarantined", entry{Evidence: &ev}))
	}
	if tamper != nil {
		l.tampers.Add(1)
		l.log.Error("audit log tampered with", "detail", tamper.Detail, "missing_from", tamper.MissingFrom, "missing_to", tamper.MissingTo)
		entries = append(entries, l.own(opTamper, "tamper_detected", entry{Tamper: tamper}))
	}
	if err := l.writeEntries(entries); err != nil {
		return err
	}
	if err := l.f.Sync(); err != nil {
		return errs.New(errs.Unavailable, "audit log fsync: %w", err)
	}
	if t.last == nil {
		// A new file: its name must be on disk too before anything in it
		// is anchored, or a power loss could take synced records with it.
		if err := syncDir(l.opts.Path); err != nil {
			return errs.New(errs.Unavailable, "audit log: %w", err)
		}
	}
	l.setSynced(l.written.Load())
	return nil
}

// syncDir fsyncs the folder holding path, making a file created or
// renamed in it durable.
func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync of %s: %w", filepath.Dir(path), err)
	}
	return nil
}

// openRegular opens path for appending, creating it (0600), refusing a
// symbolic link or anything but a regular file: the log must never write
// into, or cut, a file it was pointed at.
func openRegular(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	return f, nil
}

// truncateTo cuts what follows the file's last valid entry.
func truncateTo(f *os.File, t tail, path string) error {
	fi, err := f.Stat()
	if err != nil || fi.Size() == t.cut {
		return err
	}
	if err := f.Truncate(t.cut); err != nil {
		return fmt.Errorf("cutting %d damaged bytes at the end of %s: %w", fi.Size()-t.cut, path, err)
	}
	return nil
}

// fileHead is the chain's head as the file shows it; an empty file
// continues the newest rotated file at start, or the chain in memory
// otherwise.
func (l *Log) fileHead(t tail, why opening) head {
	switch {
	case t.last != nil:
		return head{t.last.Seq, t.last.Hash}
	case why != starting:
		return head{l.seq, l.prev}
	}
	if h, ok := rotatedHead(l.opts.Path); ok {
		return h
	}
	return head{0, zeroHash}
}

// rotatedHead is the last entry of the newest rotated file.
func rotatedHead(path string) (head, bool) {
	n := 1
	for ; ; n++ {
		if _, err := os.Stat(fmt.Sprintf("%s.%d", path, n)); err != nil {
			break
		}
	}
	if n == 1 {
		return head{}, false
	}
	f, err := os.Open(fmt.Sprintf("%s.%d", path, n-1))
	if err != nil {
		return head{}, false
	}
	defer f.Close()
	t, err := readTail(f)
	if err != nil || t.last == nil {
		return head{}, false
	}
	return head{t.last.Seq, t.last.Hash}, true
}

// compare checks what the file holds against where it must reach (the
// head anchored in the store at start): short of it, records were cut
// from the end; at it with another hash, the chain was rewritten. A file
// past it is checked where it points, if that record is still in the
// file. The tamper record names both points.
func (l *Log) compare(have, want head, why opening) *Tamper {
	what := "the head anchored in the store is"
	if why == healing {
		what = "what Sigil had written (the file was deleted or replaced under it) reaches"
	}
	expected, found := &Point{want.Seq, want.Hash}, &Point{have.Seq, have.Hash}
	switch {
	case have.Seq < want.Seq:
		return &Tamper{Detail: fmt.Sprintf("the log ends at record %d (hash %s) but %s record %d (hash %s): records %d to %d are missing, cut from the end",
			have.Seq, have.Hash, what, want.Seq, want.Hash, have.Seq+1, want.Seq),
			MissingFrom: have.Seq + 1, MissingTo: want.Seq, Expected: expected, Found: found}
	case have.Seq == want.Seq && have.Hash != want.Hash:
		return &Tamper{Detail: fmt.Sprintf("record %d has hash %s in the log but %s record %d with hash %s: the log was rewritten", have.Seq, have.Hash, what, want.Seq, want.Hash),
			MissingFrom: 1, MissingTo: want.Seq, Expected: expected, Found: found}
	case have.Seq > want.Seq:
		if h, ok := hashAt(l.opts.Path, want.Seq); ok && h != want.Hash {
			return &Tamper{Detail: fmt.Sprintf("record %d has hash %s in the log but %s record %d with hash %s: the log was rewritten", want.Seq, h, what, want.Seq, want.Hash),
				MissingFrom: 1, MissingTo: want.Seq, Expected: expected, Found: &Point{want.Seq, h}}
		}
	}
	return nil
}

// firstEntry is the first entry of f, or an empty one.
func firstEntry(f *os.File) *parsed {
	first := &parsed{}
	stop := errors.New("stop")
	eachLine(io.NewSectionReader(f, 0, 1<<62), func(b []byte, _ int, complete bool) error {
		if p, err := parse(b); b != nil && err == nil && complete {
			first = p
		}
		return stop
	})
	return first
}

// hashAt finds record seq in the file at path and returns its hash.
func hashAt(path string, seq uint64) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	var hash string
	found := errors.New("found")
	err = eachLine(f, func(b []byte, _ int, complete bool) error {
		if p, err := parse(b); b != nil && err == nil && complete && p.Seq == seq {
			hash = p.Hash
			return found
		}
		return nil
	})
	return hash, errors.Is(err, found)
}

// own is one of Sigil's own entries.
func (l *Log) own(op, outcome string, e entry) entry {
	e.Record = &Record{Time: time.Now().UTC(), Identity: "sigil", Operation: op, Outcome: outcome, Code: "OK"}
	return e
}

// Write records rec and returns once it is written to the file (and so
// survives a crash of the process; the syncer makes it durable). While
// the log cannot be written it fails at once with Unavailable.
func (l *Log) Write(rec *Record) error { return l.WriteAll([]*Record{rec}) }

// WriteAll records recs, in order, and returns once all are written (see
// Write). A batch's items are one write.
func (l *Log) WriteAll(recs []*Record) error {
	w := &writeReq{entries: make([]entry, len(recs))}
	for i, rec := range recs {
		r := *rec
		bound(&r)
		w.entries[i] = entry{Record: &r}
	}
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	if l.closed {
		return errs.New(errs.Unavailable, "audit log closed")
	}
	l.group.Do(w, l.commit)
	return w.err
}

// commit writes a group's records (see handle); if that took the log
// down, the keeper is woken to schedule healing.
func (l *Log) commit(batch []*writeReq) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.handle(batch)
	if !l.up.Load() {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// run is the keeper: it writes checkpoints as they come signed, asks for
// one when the interval passes, heals the file while no write does, and
// finishes the log when it is closed, each holding writeMu.
func (l *Log) run() {
	heal := time.NewTimer(time.Hour)
	heal.Stop()
	tick := time.NewTicker(l.opts.CheckpointInterval)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			l.writeMu.Lock()
			l.finish()
			l.writeMu.Unlock()
			return
		case cp := <-l.signed:
			l.locked(func() {
				if l.up.Load() {
					l.writeCheckpoint(cp)
				}
			})
		case <-tick.C:
			l.locked(func() {
				if l.since > 0 {
					l.checkpointDue()
				}
			})
		case <-heal.C:
			l.locked(func() { l.tryHeal() })
		case <-l.wake:
		}
		var next time.Time
		l.locked(func() { next = l.nextHeal })
		if !l.up.Load() {
			heal.Reset(max(time.Until(next), time.Millisecond))
		}
	}
}

func (l *Log) locked(fn func()) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	fn()
}

// handle writes a batch and answers its callers. A batch that fails is
// retried once on a freshly opened file (a deleted or replaced file
// heals at once); otherwise its records are refused, never answered OK.
func (l *Log) handle(batch []*writeReq) {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		if !l.up.Load() && !l.tryHeal() {
			err = l.unavailable()
			break
		}
		if err = l.writeBatch(batch); err == nil {
			break
		}
		l.down(err)
	}
	n := 0
	for _, w := range batch {
		w.err = err
		n += len(w.entries)
	}
	if err != nil {
		return
	}
	l.since += n
	if l.since >= l.opts.CheckpointEvery {
		l.checkpointDue()
	}
	if l.size >= l.opts.MaxSize {
		if err := l.rotate(); err != nil {
			l.down(err)
		}
	}
}

func (l *Log) unavailable() error {
	return errs.New(errs.Unavailable, "audit log unavailable: %s", *l.detail.Load())
}

// writeBatch seals the batch's entries and writes them with one write(),
// then checks the file written to is still the one at the path. On
// failure the chain state is as before the batch.
func (l *Log) writeBatch(batch []*writeReq) error {
	var entries []entry
	for _, w := range batch {
		entries = append(entries, w.entries...)
	}
	return l.writeEntries(entries)
}

func (l *Log) writeEntries(entries []entry) error {
	if len(entries) == 0 {
		return nil
	}
	seq, prev := l.seq, l.prev
	var buf []byte
	for _, e := range entries {
		l.seq++
		e.Seq, e.Prev = l.seq, l.prev
		b, hash, err := seal(e)
		if err != nil {
			l.seq, l.prev = seq, prev
			return errs.New(errs.Internal, "audit log: %w", err)
		}
		l.prev = hash
		buf = append(buf, b...)
	}
	n, err := l.f.Write(buf)
	l.size += int64(n)
	if err == nil {
		err = l.stillAtPath()
	}
	if err != nil {
		l.seq, l.prev = seq, prev
		return errs.New(errs.Unavailable, "audit log write: %w", err)
	}
	l.written.Store(&head{l.seq, l.prev})
	select {
	case l.dirty <- struct{}{}:
	default: // a sync is already due
	}
	return nil
}

// stillAtPath reports an error if the open file is no longer the one at
// the configured path (deleted, or replaced by another file): records
// written to it would be lost.
func (l *Log) stillAtPath() error {
	open, err := l.f.Stat()
	if err != nil {
		return err
	}
	at, err := os.Stat(l.opts.Path)
	if err != nil || !os.SameFile(open, at) {
		return fmt.Errorf("%s was deleted or replaced", l.opts.Path)
	}
	return nil
}

// down marks the log unwritable: requests are refused (their responses
// withheld) until a heal succeeds.
func (l *Log) down(err error) {
	l.writeErrors.Add(1)
	msg := err.Error()
	l.detail.Store(&msg)
	if l.up.Swap(false) {
		l.log.Error("audit log cannot be written; responses are withheld until it heals", "err", err)
		l.nextHeal, l.healWait = time.Now(), healMin
	}
}

// tryHeal reopens the file by path when a heal is due, continuing the
// chain from what was written (a file that lost records says so).
func (l *Log) tryHeal() bool {
	if time.Now().Before(l.nextHeal) {
		return false
	}
	l.nextHeal = time.Now().Add(l.healWait)
	l.healWait = min(2*l.healWait, healMax)
	written := *l.written.Load()
	l.seq, l.prev = written.Seq, written.Hash
	if err := l.openFile(&written, healing); err != nil {
		msg := err.Error()
		l.detail.Store(&msg)
		return false
	}
	l.up.Store(true)
	l.detail.Store(new(string))
	l.log.Info("audit log writable again")
	return true
}

// syncer fsyncs the file whenever lines were written since the last
// fsync began, and records how far the disk holds the chain.
func (l *Log) syncer() {
	defer close(l.syncDone)
	for range l.dirty {
		begun := time.Now()
		l.fileMu.Lock()
		h := l.written.Load()
		err := l.f.Sync()
		l.fileMu.Unlock()
		if err != nil {
			l.log.Error("audit log fsync failed", "err", err)
			l.writeErrors.Add(1)
			msg := "fsync: " + err.Error()
			l.detail.Store(&msg)
			l.up.Store(false) // the next write, or the keeper, heals it
			select {
			case l.wake <- struct{}{}:
			default:
			}
			continue
		}
		l.setSynced(h)
		// At most one fsync begins a millisecond. Back to back, at one
		// request at a time, they cost every request on the machine tens
		// of microseconds (the secured Sign row of BENCHMARKS.md's
		// part-by-part table; pacing took a fifth off it in A/B runs); a
		// machine crash may lose a millisecond more of lines, less than
		// one fsync takes.
		time.Sleep(time.Until(begun.Add(syncPace)))
	}
}

// syncPace is the least time from one fsync's start to the next's.
const syncPace = time.Millisecond

// setSynced records that the disk holds the chain up to h (never moving
// back: the writer and the syncer both report it) and wakes the anchorer.
func (l *Log) setSynced(h *head) {
	for {
		cur := l.synced.Load()
		if cur != nil && cur.Seq >= h.Seq {
			return
		}
		if l.synced.CompareAndSwap(cur, h) {
			break
		}
	}
	l.wakeAnchorer()
}

func (l *Log) wakeAnchorer() {
	select {
	case l.anchorWake <- struct{}{}:
	default: // it is already due to look
	}
}

// checkpointDue asks the checkpointer to sign the synced head; a
// checkpoint already being signed makes this one unnecessary.
func (l *Log) checkpointDue() {
	if !l.checkpointing() {
		return
	}
	select {
	case l.sign <- *l.synced.Load():
		l.since = 0
	default:
	}
}

// checkpointer signs heads off the request path; the keeper writes them
// and the anchorer anchors them once their entries are on disk.
func (l *Log) checkpointer() {
	defer close(l.signDone)
	for h := range l.sign {
		cp, err := l.signHead(h)
		if err != nil {
			l.log.Error("audit checkpoint not signed", "seq", h.Seq, "err", err)
			continue
		}
		l.signed <- cp
	}
}

// anchorer keeps the store's anchor up with the chain: after each fsync,
// the synced head (the seq and hash of the last record on disk, needing
// no signature: the store is outside the file) beside the newest
// checkpoint whose own entry is on disk. Heads are coalesced: one write
// at a time, at most one every HeadInterval, a failed one retried with a
// backoff. Nothing waits for it: a store that is down or slow only
// widens the window in which a cut tail goes unnoticed, and says so.
// Only what is on disk is anchored, so a crash alone, even of the
// machine, never leaves the store ahead of the log.
func (l *Log) anchorer() {
	defer close(l.anchorDone)
	var (
		inflight <-chan error // while a write runs
		cancel   = func() {}
		putting  Anchor
		with     *Anchor // the checkpoint putting carries
		began    time.Time
		retryAt  time.Time
		backoff  = healMin
		failing  bool
	)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-l.anchorStop:
			cancel()
			if inflight != nil && !l.anchorHangs.Load() {
				select {
				case err := <-inflight:
					if err == nil {
						l.setStored(putting)
						l.anchoredCP = with
					}
				case <-time.After(l.opts.timeout):
					l.anchorHangs.Store(true)
				}
			}
			return
		case <-l.anchorWake:
		case <-timer.C:
		case err := <-inflight:
			cancel()
			inflight = nil
			l.anchorHangs.Store(false)
			if err != nil {
				l.anchorErrors.Add(1)
				if !failing {
					l.log.Error("audit head not anchored in the store; retrying (a tail cut meanwhile would go unnoticed)", "seq", putting.RecordSeq, "err", err)
				}
				failing, retryAt, backoff = true, time.Now().Add(backoff), min(2*backoff, healMax)
				break
			}
			l.setStored(putting)
			l.anchoredCP = with
			if failing {
				l.log.Info("audit head anchored in the store again", "seq", putting.RecordSeq)
			}
			failing, retryAt, backoff = false, time.Time{}, healMin
		}
		if inflight != nil {
			if time.Since(began) >= l.opts.timeout && !l.anchorHangs.Swap(true) {
				l.anchorErrors.Add(1)
				l.log.Error("audit head not anchored: the store has not answered", "seq", putting.RecordSeq, "after", l.opts.timeout)
			}
			continue
		}
		next, cp, due := l.nextAnchor()
		if !due {
			continue
		}
		if wait := max(time.Until(began.Add(l.opts.HeadInterval)), time.Until(retryAt)); wait > 0 {
			timer.Reset(wait)
			continue
		}
		var ctx context.Context
		ctx, cancel = context.WithTimeout(context.Background(), l.opts.timeout)
		began, putting, with = time.Now(), next, cp
		inflight = l.startPut(ctx, next)
		timer.Reset(l.opts.timeout) // to notice a write that never returns
	}
}

// nextAnchor is what the store should hold now: the newest checkpoint
// whose entry is synced, and the synced head (or that entry, with head
// anchoring off); due if the store holds less. Only the anchorer calls
// it, or finish once the anchorer has stopped.
func (l *Log) nextAnchor() (next Anchor, cp *Anchor, due bool) {
	stored, s := *l.stored.Load(), *l.synced.Load()
	next, cp = stored, l.anchoredCP
	if c := l.checkpointed.Load(); c != nil && c != cp && c.RecordSeq <= s.Seq {
		next.Checkpoint, cp = c.Checkpoint, c
		if c.RecordSeq > next.RecordSeq {
			next.RecordSeq, next.RecordHash = c.RecordSeq, c.RecordHash
		}
	}
	if l.opts.HeadInterval > 0 && s.Seq > next.RecordSeq {
		next.RecordSeq, next.RecordHash = s.Seq, s.Hash
	}
	return next, cp, cp != l.anchoredCP || next.RecordSeq != stored.RecordSeq
}

// setStored records a copy of a as what the store holds.
func (l *Log) setStored(a Anchor) { l.stored.Store(&a) }

// startPut writes a to the store in a goroutine of its own, which writes
// nothing but the store and the channel returned: one abandoned at Close
// (a store that ignores its context) ends when the store answers, and
// touches nothing of the Log's.
func (l *Log) startPut(ctx context.Context, a Anchor) <-chan error {
	done := make(chan error, 1)
	go func() { done <- l.putAnchor(ctx, a) }()
	return done
}

// putBounded writes a to the store, giving up when ctx ends even if the
// store does not.
func (l *Log) putBounded(ctx context.Context, a Anchor) error {
	select {
	case err := <-l.startPut(ctx, a):
		return err
	case <-ctx.Done():
		return errs.New(errs.Unavailable, "the store did not answer: %w", ctx.Err())
	}
}

func (l *Log) putAnchor(ctx context.Context, a Anchor) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return l.opts.Anchors.PutAnchor(ctx, AnchorName(l.opts.Replica), b)
}

// signHead signs h with the audit key, giving up after the timeout even
// if the signer does not (a call into a hung HSM): the signer is then
// taken to hang, and shutdown does not wait for it.
func (l *Log) signHead(h head) (Checkpoint, error) {
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.timeout)
	defer cancel()
	cp := Checkpoint{Replica: l.opts.Replica, Seq: h.Seq, Hash: h.Hash, Time: time.Now().UTC(), Every: l.opts.CheckpointEvery}
	done := make(chan error, 1)
	signed := make(chan Checkpoint, 1)
	go func(cp Checkpoint) { err := cp.sign(ctx, l.opts.Signer); signed <- cp; done <- err }(cp)
	select {
	case err := <-done:
		return <-signed, err
	case <-ctx.Done():
		l.signerHangs.Store(true)
		return cp, errs.New(errs.Unavailable, "the audit key did not sign within %v", l.opts.timeout)
	}
}

// writeCheckpoint writes cp's entry and hands it to the anchorer, which
// anchors it once the entry is synced. A failed write takes the log down
// like any other.
func (l *Log) writeCheckpoint(cp Checkpoint) error {
	if err := l.writeEntries([]entry{l.own(opCheckpoint, "ok", entry{Checkpoint: &cp})}); err != nil {
		l.down(err)
		return err
	}
	w := l.written.Load()
	l.checkpointed.Store(&Anchor{Checkpoint: cp, RecordSeq: w.Seq, RecordHash: w.Hash})
	l.wakeAnchorer()
	return nil
}

// checkpointNow signs the whole log, writes the checkpoint, syncs and
// (if anchor) anchors it before returning: at start and at a clean
// shutdown, while no anchorer runs.
func (l *Log) checkpointNow(ctx context.Context, anchor bool) error {
	if err := l.syncNow(); err != nil {
		return err
	}
	cp, err := l.signHead(*l.synced.Load())
	if err != nil {
		return err
	}
	if err := l.writeEntries([]entry{l.own(opCheckpoint, "ok", entry{Checkpoint: &cp})}); err != nil {
		return err
	}
	if err := l.syncNow(); err != nil {
		return err
	}
	w := l.written.Load()
	a := &Anchor{Checkpoint: cp, RecordSeq: w.Seq, RecordHash: w.Hash}
	l.checkpointed.Store(a)
	if !anchor {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, l.opts.timeout)
	defer cancel()
	if err := l.putBounded(ctx, *a); err != nil {
		return err
	}
	l.stored.Store(a)
	l.anchoredCP = a
	return nil
}

// syncNow fsyncs the file and records the chain synced to what was
// written.
func (l *Log) syncNow() error {
	l.fileMu.Lock()
	err := l.f.Sync()
	l.fileMu.Unlock()
	if err != nil {
		return err
	}
	l.setSynced(l.written.Load())
	return nil
}

// rotate moves the file aside (path.1, path.2, …), synced, and starts a
// new one whose first entry names the last of the one before.
func (l *Log) rotate() error {
	l.fileMu.Lock()
	err := l.f.Sync()
	if err == nil {
		err = moveAside(l.opts.Path)
	}
	l.fileMu.Unlock()
	if err != nil {
		return errs.New(errs.Unavailable, "audit log rotation: %w", err)
	}
	l.setSynced(l.written.Load())
	return l.openFile(l.written.Load(), rotating)
}

func moveAside(path string) error {
	for n := 1; ; n++ {
		aside := fmt.Sprintf("%s.%d", path, n)
		if _, err := os.Stat(aside); errors.Is(err, os.ErrNotExist) {
			return os.Rename(path, aside)
		}
	}
}

// finish runs when the queue is closed: a last checkpoint (or, when the
// audit key cannot sign, the last head) anchored, the last fsync. A store
// that does not answer gets no write: the checkpoint is only logged.
func (l *Log) finish() {
	signing := l.stopCheckpointer()
	storing := l.stopAnchorer()
	if !storing {
		l.log.Error("audit: the store does not answer; closing without anchoring the last head")
	}
	if l.up.Load() && l.checkpointing() {
		ctx, cancel := context.WithTimeout(context.Background(), l.opts.timeout)
		switch {
		case signing && !l.signerHangs.Load():
			if err := l.checkpointNow(ctx, storing); err != nil {
				l.log.Error("audit: the closing checkpoint failed", "err", err)
			}
		case storing && l.syncNow() == nil:
			if next, cp, due := l.nextAnchor(); due {
				if err := l.putBounded(ctx, next); err != nil {
					l.log.Error("audit: the last head was not anchored", "seq", next.RecordSeq, "err", err)
				} else {
					l.setStored(next)
					l.anchoredCP = cp
				}
			}
		}
		cancel()
	}
	close(l.dirty)
	<-l.syncDone
	l.f.Sync()
	l.f.Close()
	close(l.done)
}

// stopAnchorer stops the anchorer; it reports false if a store write
// never came back (the anchorer gives up waiting for it after a bound).
func (l *Log) stopAnchorer() bool {
	if !l.checkpointing() {
		return true
	}
	close(l.anchorStop)
	<-l.anchorDone
	return !l.anchorHangs.Load()
}

// stopCheckpointer stops the checkpointer, writing what it signed
// meanwhile. A signer that hangs must not hang shutdown: after a bound it
// gives up, and reports false.
func (l *Log) stopCheckpointer() bool {
	close(l.sign)
	giveUp := time.After(l.opts.timeout + time.Second)
	for {
		select {
		case cp := <-l.signed:
			if l.up.Load() {
				l.writeCheckpoint(cp)
			}
		case <-l.signDone:
			return true
		case <-giveUp:
			l.log.Error("audit: the checkpointer did not stop; closing without a last checkpoint")
			return false
		}
	}
}

// Close stops accepting records, writes what is queued and a closing
// checkpoint, and closes the file.
func (l *Log) Close() error {
	l.closeMu.Lock() // once writes in flight have returned
	if !l.closed {
		l.closed = true
		close(l.stop)
	}
	l.closeMu.Unlock()
	<-l.done
	l.unlockOnce.Do(l.unlock)
	return nil
}

// lockChain takes the lock of the chain written at path (an flock on
// .NAME.lock beside it, out of the way of audit.jsonl* globs; released
// when the process ends, however it ends): two
// processes appending to one file would interleave and break the chain,
// so the second is refused.
func lockChain(path string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, errs.New(errs.Unavailable, "audit log: its lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, errs.New(errs.FailedPrecondition, "the audit log %s is being written by another process (a running server?): one process writes a chain; stop it first", path)
	}
	return func() { f.Close() }, nil
}

// Health reports whether records can be written now and, if not, why.
func (l *Log) Health() (bool, string) { return l.up.Load(), *l.detail.Load() }

// WriteErrors counts failed writes and fsyncs since start.
func (l *Log) WriteErrors() uint64 { return l.writeErrors.Load() }

// Tampers counts tamper records written since start.
func (l *Log) Tampers() uint64 { return l.tampers.Load() }

// Head returns the last record known to be on disk.
func (l *Log) Head() (seq uint64, hash string) {
	h := l.synced.Load()
	return h.Seq, h.Hash
}

// Anchored returns the head the store holds, as last written (0 and ""
// without checkpoints).
func (l *Log) Anchored() (seq uint64, hash string) {
	if a := l.stored.Load(); a != nil {
		return a.RecordSeq, a.RecordHash
	}
	return 0, ""
}

// AnchorErrors counts store writes of the chain's head that failed or
// did not answer: while they fail, a tail cut after a crash would not be
// found at the next start.
func (l *Log) AnchorErrors() uint64 { return l.anchorErrors.Load() }
