package audit

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// TailEntry is one line of a log's tail: its record (a checkpoint's line
// holds one too), its place in the chain, and whether it fails to link to
// the line shown before it.
type TailEntry struct {
	Seq        uint64
	Hash       string
	Record     Record
	Checkpoint *Checkpoint
	Break      bool
}

// TailChain is what the lines of a tail show of the chain: whether each
// line's own hash holds and each links to the one before it, and the
// last checkpoint among them. The hashes are plain SHA-256: whoever can
// write the file can recompute them, so lines that link prove nothing
// until they reach something that cannot be rewritten (the live log's
// head, a checkpoint signed with the audit key): the caller checks that.
type TailChain struct {
	OK             bool
	Detail         string
	LastCheckpoint *Checkpoint
}

// tailBytes bounds how much of a file's end Tail reads.
const tailBytes = 1 << 20

// Tail reads the last n complete lines of the log file at path (from its
// last MiB at most: the cost does not grow with the file), checks each
// line's own hash and that each links to the one before it, and goes on
// past a break (marked on the entry after it), so the newest records
// always show. A line being written (no newline yet) is left out.
func Tail(path string, n int) ([]TailEntry, TailChain, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, TailChain{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, TailChain{}, err
	}
	start := max(st.Size()-tailBytes, 0)
	buf := make([]byte, st.Size()-start)
	k, err := f.ReadAt(buf, start)
	if err != nil && err != io.EOF {
		return nil, TailChain{}, err
	}
	buf = buf[:k]
	if start > 0 { // the first line read is likely a piece of one
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
		buf = buf[:i]
	} else {
		buf = nil
	}
	var lines [][]byte
	if len(buf) > 0 {
		lines = bytes.Split(buf, []byte("\n"))
	}
	lines = lines[max(len(lines)-max(n, 0), 0):]
	chain := TailChain{OK: true}
	fail := func(format string, a ...any) {
		if chain.OK {
			chain.OK, chain.Detail = false, fmt.Sprintf(format, a...)
		}
	}
	var out []TailEntry
	for _, l := range lines {
		p, err := parse(l)
		if err != nil {
			fail("a line after record %d does not check: %v", lastSeq(out), err)
			continue
		}
		e := TailEntry{Seq: p.Seq, Hash: p.Hash, Record: *p.Record, Checkpoint: p.Checkpoint}
		if k := len(out); k > 0 && (p.Seq != out[k-1].Seq+1 || p.Prev != out[k-1].Hash) {
			e.Break = true
			fail("record %d does not link to record %d before it: the chain is broken there", p.Seq, out[k-1].Seq)
		}
		out = append(out, e)
		if p.Checkpoint != nil {
			chain.LastCheckpoint = p.Checkpoint
		}
	}
	switch {
	case len(out) == 0:
		fail("no complete record in the file's last MiB")
	case chain.OK:
		chain.Detail = fmt.Sprintf("records %d to %d: each line's own hash holds and each links to the one before", out[0].Seq, out[len(out)-1].Seq)
	}
	return out, chain, nil
}

func lastSeq(es []TailEntry) uint64 {
	if len(es) == 0 {
		return 0
	}
	return es[len(es)-1].Seq
}

// Path is the file the log writes, and Replica whose chain it holds.
func (l *Log) Path() string    { return l.opts.Path }
func (l *Log) Replica() string { return l.opts.Replica }
