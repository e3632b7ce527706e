package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
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
	Logger             *slog.Logger
}

// Defaults.
const (
	DefaultMaxSize            = 64 << 20
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = 10 * time.Second
)

// Healing: after a write or fsync fails, the file is reopened by path
// with a backoff from healMin doubling to healMax.
const (
	healMin       = 100 * time.Millisecond
	healMax       = 5 * time.Second
	anchorTimeout = 5 * time.Second
)

// head is a point of the chain: a record's seq and hash.
type head struct {
	Seq  uint64
	Hash string
}

// Log appends records to a hash-chained file.
type Log struct {
	opts  Options
	log   *slog.Logger
	queue chan pending
	done  chan struct{}

	closeMu sync.RWMutex // held to send on queue (read) or close it (write)
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
	signed   chan Checkpoint // signed checkpoints for the writer to write
	anchor   chan Anchor     // written checkpoints for the checkpointer to anchor
	signDone chan struct{}

	// fileMu is held to fsync f or to replace it; only the writer
	// goroutine replaces it, so the writer reads f without it.
	fileMu sync.Mutex
	f      *os.File

	// owned by the writer goroutine
	size      int64
	seq       uint64
	prev      string
	fileFirst uint64 // seq of this file's first entry
	since     int    // records since the last checkpoint
	nextHeal  time.Time
	healWait  time.Duration
}

type pending struct {
	e   entry
	err chan error // nil for Sigil's own entries nobody waits for
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
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	l := &Log{opts: o, log: o.Logger, queue: make(chan pending, 1024), done: make(chan struct{}),
		dirty: make(chan struct{}, 1), syncDone: make(chan struct{}), sign: make(chan head, 1),
		signed: make(chan Checkpoint, 1), anchor: make(chan Anchor, 4), signDone: make(chan struct{}), healWait: healMin}
	l.detail.Store(new(string))
	expected, err := l.anchored(ctx)
	if err != nil {
		return nil, err
	}
	if err := l.openFile(expected, starting); err != nil {
		return nil, err
	}
	l.up.Store(true)
	if l.checkpointing() {
		if err := l.checkpointNow(ctx); err != nil {
			l.f.Close()
			return nil, errs.New(errs.Unavailable, "audit log: the start checkpoint: %w", err)
		}
	}
	go l.run()
	go l.syncer()
	go l.checkpointer()
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
			MissingFrom: l.fileFirst, MissingTo: expected.Seq}
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
	l.synced.Store(l.written.Load())
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

// compare checks what the file holds against where it must reach: short
// of it, records are missing; at it with another hash, the chain was
// rewritten. A file past the anchor is checked where the anchor points,
// if that record is still in the file.
func (l *Log) compare(have, want head, why opening) *Tamper {
	what := "the anchored checkpoint"
	if why == healing {
		what = "what Sigil had written (the file was deleted or replaced under it)"
	}
	switch {
	case have.Seq < want.Seq:
		return &Tamper{Detail: fmt.Sprintf("the log ends at seq %d but %s reached seq %d: records %d to %d are missing", have.Seq, what, want.Seq, have.Seq+1, want.Seq),
			MissingFrom: have.Seq + 1, MissingTo: want.Seq}
	case have.Seq == want.Seq && have.Hash != want.Hash:
		return &Tamper{Detail: fmt.Sprintf("record %d does not match %s: the log was rewritten", want.Seq, what), MissingFrom: 1, MissingTo: want.Seq}
	case have.Seq > want.Seq:
		if h, ok := hashAt(l.opts.Path, want.Seq); ok && h != want.Hash {
			return &Tamper{Detail: fmt.Sprintf("record %d does not match %s: the log was rewritten", want.Seq, what), MissingFrom: 1, MissingTo: want.Seq}
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
func (l *Log) Write(rec *Record) error {
	r := *rec
	bound(&r)
	p := pending{e: entry{Record: &r}, err: make(chan error, 1)}
	l.closeMu.RLock()
	if l.closed {
		l.closeMu.RUnlock()
		return errs.New(errs.Unavailable, "audit log closed")
	}
	l.queue <- p
	l.closeMu.RUnlock()
	return <-p.err
}

// run writes queued records in batches, one write() per batch, heals
// the file after failures, and writes checkpoints as they come signed.
func (l *Log) run() {
	heal := time.NewTimer(time.Hour)
	heal.Stop()
	tick := time.NewTicker(l.opts.CheckpointInterval)
	defer tick.Stop()
	for {
		select {
		case p, ok := <-l.queue:
			if !ok {
				l.finish()
				return
			}
			l.handle(l.batch(p))
		case cp := <-l.signed:
			if l.up.Load() {
				l.writeCheckpoint(cp)
			}
		case <-tick.C:
			if l.since > 0 {
				l.checkpointDue()
			}
		case <-heal.C:
			l.tryHeal()
		}
		if !l.up.Load() {
			heal.Reset(max(time.Until(l.nextHeal), time.Millisecond))
		}
	}
}

// batch collects p and whatever else is queued, up to 256 records.
func (l *Log) batch(p pending) []pending {
	batch := []pending{p}
	for len(batch) < 256 {
		select {
		case q, ok := <-l.queue:
			if !ok {
				return batch
			}
			batch = append(batch, q)
		default:
			return batch
		}
	}
	return batch
}

// handle writes a batch and answers its waiters. A batch that fails is
// retried once on a freshly opened file (a deleted or replaced file
// heals at once); otherwise its records are refused, never answered OK.
func (l *Log) handle(batch []pending) {
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
	for _, p := range batch {
		if p.err != nil {
			p.err <- err
		}
	}
	if err != nil {
		return
	}
	l.since += len(batch)
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
func (l *Log) writeBatch(batch []pending) error {
	entries := make([]entry, len(batch))
	for i, p := range batch {
		entries[i] = p.e
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
		l.fileMu.Lock()
		h := l.written.Load()
		err := l.f.Sync()
		l.fileMu.Unlock()
		if err != nil {
			l.log.Error("audit log fsync failed", "err", err)
			l.writeErrors.Add(1)
			msg := "fsync: " + err.Error()
			l.detail.Store(&msg)
			l.up.Store(false) // the writer heals it
			continue
		}
		l.synced.Store(h)
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

// checkpointer signs heads off the request path, and anchors checkpoints
// in the store once their entries are on disk (so a power loss never
// leaves an anchor the log cannot reach).
func (l *Log) checkpointer() {
	defer close(l.signDone)
	for {
		select {
		case h, ok := <-l.sign:
			if !ok {
				l.anchorPending()
				return
			}
			if cp, err := l.signHead(h); err != nil {
				l.log.Error("audit checkpoint not signed", "seq", h.Seq, "err", err)
			} else {
				l.signed <- cp
			}
		case a := <-l.anchor:
			l.store(a)
		}
	}
}

// anchorPending anchors what the writer has handed over already.
func (l *Log) anchorPending() {
	for {
		select {
		case a := <-l.anchor:
			l.store(a)
		default:
			return
		}
	}
}

// store waits until a's entry is synced, then anchors it.
func (l *Log) store(a Anchor) {
	for deadline := time.Now().Add(anchorTimeout); l.synced.Load().Seq < a.RecordSeq; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			l.log.Error("audit checkpoint not anchored: its entry was not synced", "seq", a.RecordSeq)
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), anchorTimeout)
	defer cancel()
	if err := l.putAnchor(ctx, a); err != nil {
		l.log.Error("audit checkpoint not anchored", "seq", a.RecordSeq, "err", err)
	}
}

func (l *Log) putAnchor(ctx context.Context, a Anchor) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return l.opts.Anchors.PutAnchor(ctx, AnchorName(l.opts.Replica), b)
}

// signHead signs h with the audit key, giving up after anchorTimeout even
// if the signer does not (a call into a hung HSM): the signer is then
// taken to hang, and shutdown does not wait for it.
func (l *Log) signHead(h head) (Checkpoint, error) {
	ctx, cancel := context.WithTimeout(context.Background(), anchorTimeout)
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
		return cp, errs.New(errs.Unavailable, "the audit key did not sign within %v", anchorTimeout)
	}
}

// writeCheckpoint writes cp's entry and hands it to the checkpointer to
// anchor. A failed write takes the log down like any other.
func (l *Log) writeCheckpoint(cp Checkpoint) error {
	if err := l.writeEntries([]entry{l.own(opCheckpoint, "ok", entry{Checkpoint: &cp})}); err != nil {
		l.down(err)
		return err
	}
	w := l.written.Load()
	select {
	case l.anchor <- Anchor{Checkpoint: cp, RecordSeq: w.Seq, RecordHash: w.Hash}:
	default: // the checkpointer is behind; the next checkpoint supersedes this one
	}
	return nil
}

// checkpointNow signs the whole log, writes the checkpoint, syncs and
// anchors it before returning: at start and at a clean shutdown.
func (l *Log) checkpointNow(ctx context.Context) error {
	l.fileMu.Lock()
	err := l.f.Sync()
	l.fileMu.Unlock()
	if err != nil {
		return err
	}
	l.synced.Store(l.written.Load())
	cp, err := l.signHead(*l.synced.Load())
	if err != nil {
		return err
	}
	if err := l.writeEntries([]entry{l.own(opCheckpoint, "ok", entry{Checkpoint: &cp})}); err != nil {
		return err
	}
	l.fileMu.Lock()
	err = l.f.Sync()
	l.fileMu.Unlock()
	if err != nil {
		return err
	}
	w := l.written.Load()
	l.synced.Store(w)
	return l.putAnchor(ctx, Anchor{Checkpoint: cp, RecordSeq: w.Seq, RecordHash: w.Hash})
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
	l.synced.Store(l.written.Load())
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

// finish runs when the queue is closed: a last checkpoint, the last fsync.
func (l *Log) finish() {
	if l.stopCheckpointer() && l.up.Load() && l.checkpointing() && !l.signerHangs.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), anchorTimeout)
		if err := l.checkpointNow(ctx); err != nil {
			l.log.Error("audit: the closing checkpoint failed", "err", err)
		}
		cancel()
	}
	close(l.dirty)
	<-l.syncDone
	l.f.Sync()
	l.f.Close()
	close(l.done)
}

// stopCheckpointer stops the checkpointer, writing what it signed
// meanwhile. A signer that hangs must not hang shutdown: after a bound it
// gives up, and reports false.
func (l *Log) stopCheckpointer() bool {
	close(l.sign)
	giveUp := time.After(anchorTimeout + time.Second)
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
	l.closeMu.Lock()
	if !l.closed {
		l.closed = true
		close(l.queue)
	}
	l.closeMu.Unlock()
	<-l.done
	return nil
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
