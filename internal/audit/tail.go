package audit

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// TailEntry is one line of a log's tail: its record (a checkpoint's line
// holds one too) and its place in the chain.
type TailEntry struct {
	Seq        uint64
	Hash       string
	Record     Record
	Checkpoint *Checkpoint
}

// TailChain is what the lines of a tail show of the chain: whether each
// line's own hash holds and each links to the one before it, and the
// last checkpoint among them.
type TailChain struct {
	OK             bool
	Detail         string
	LastCheckpoint *Checkpoint
}

// tailBytes bounds how much of a file's end Tail reads.
const tailBytes = 1 << 20

// Tail reads the last n complete lines of the log file at path (from its
// last MiB at most: the cost does not grow with the file), each line's
// own hash checked, and checks that each links to the one before it. A
// line being written (no newline yet) is left out. It proves the lines
// it shows were not altered or reordered since written, not that none
// were cut before them: that is sigil audit verify's, over every file.
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
	if _, err := f.ReadAt(buf, start); err != nil && err != io.EOF {
		return nil, TailChain{}, err
	}
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
	lines = lines[max(len(lines)-n, 0):]
	chain := TailChain{OK: true}
	var out []TailEntry
	for _, l := range lines {
		p, err := parse(l)
		if err != nil {
			chain.OK, chain.Detail = false, fmt.Sprintf("a line after record %d does not check: %v", lastSeq(out), err)
			break
		}
		if k := len(out); k > 0 && (p.Seq != out[k-1].Seq+1 || p.Prev != out[k-1].Hash) {
			chain.OK, chain.Detail = false, fmt.Sprintf("record %d does not link to record %d before it: the chain is broken there", p.Seq, out[k-1].Seq)
			break
		}
		out = append(out, TailEntry{Seq: p.Seq, Hash: p.Hash, Record: *p.Record, Checkpoint: p.Checkpoint})
		if p.Checkpoint != nil {
			chain.LastCheckpoint = p.Checkpoint
		}
	}
	if chain.OK && len(out) > 0 {
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
