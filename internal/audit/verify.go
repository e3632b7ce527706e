package audit

import (
	"crypto/ecdsa"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Report is what Verify proved, and every problem it found, each named
// by file and line or by the records it concerns.
type Report struct {
	Records     int      // entries whose own hash and link verified
	Checkpoints int      // checkpoints whose signature and head verified
	Unsigned    int      // records after the last verified checkpoint
	Replicas    []string // the chains the files hold
	Problems    []string
	Notes       []string
}

// OK reports whether the files are a complete, intact chain.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// placed is an entry with where it was read.
type placed struct {
	*parsed
	file string
	line int
}

// Verify checks files (rotated and current, of one or several replicas,
// in any order) with the audit public key, and, when live is given, that
// each replica's files reach the checkpoint anchored in the keyring
// store. Every gap is named: a missing head ("starts at seq N"), a
// missing range, a missing tail, a rewritten chain (a checkpoint that
// does not verify or does not match its record), a damaged line.
func Verify(files []string, pub *ecdsa.PublicKey, live []Anchor) (*Report, error) {
	r := &Report{}
	chains := map[string][]placed{}
	for _, name := range files {
		entries, err := readFile(name, r, false)
		if err != nil {
			return nil, err
		}
		if len(entries) == 0 {
			r.problem("%s: no audit entries", name)
			continue
		}
		replica := replicaOf(entries)
		chains[replica] = append(chains[replica], entries...)
	}
	for replica, entries := range chains {
		r.Replicas = append(r.Replicas, replica)
		slices.SortStableFunc(entries, func(a, b placed) int { return cmpSeq(a.Seq, b.Seq) })
		hashes := r.walk(replica, entries)
		r.checkpoints(replica, entries, hashes, pub)
		for _, a := range live {
			if a.Replica == replica {
				r.reaches(replica, entries, hashes, a, pub)
			}
		}
	}
	for _, a := range live {
		if _, ok := chains[a.Replica]; !ok {
			r.problem("replica %s: no files given, but its log reaches seq %d", a.Replica, a.RecordSeq)
		}
	}
	slices.Sort(r.Replicas)
	return r, nil
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// readFile parses every line of a file; damaged lines are problems, and
// a partial last line too unless tornTail (then a note: a write cut by a
// crash, whose request was never answered).
func readFile(name string, r *Report, tornTail bool) ([]placed, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []placed
	n := 0
	err = eachLine(f, func(b []byte, size int, complete bool) error {
		n++
		if b == nil {
			r.problem("%s:%d: a line of %d bytes, not an audit line", name, n, size)
			return nil
		}
		p, err := parse(b)
		switch {
		case !complete && tornTail:
			r.Notes = append(r.Notes, fmt.Sprintf("%s:%d: partial last line (%d bytes), a write cut by a crash", name, n, size))
		case !complete:
			r.problem("%s:%d: partial last line (%d bytes)", name, n, size)
		case err != nil:
			r.problem("%s:%d: %v", name, n, err)
		case len(out) > 0 && p.Seq <= out[len(out)-1].Seq:
			r.problem("%s:%d: seq %d after seq %d: lines out of order", name, n, p.Seq, out[len(out)-1].Seq)
		default:
			out = append(out, placed{p, name, n})
		}
		return nil
	})
	return out, err
}

// replicaOf is the replica a file's entries belong to.
func replicaOf(entries []placed) string {
	for _, e := range entries {
		if name := e.replica(); name != "" {
			return name
		}
	}
	return "(unknown)"
}

// walk checks seq contiguity and the hash links of one replica's
// entries, in seq order, and returns every record's hash by seq.
func (r *Report) walk(replica string, entries []placed) map[uint64]string {
	hashes := map[uint64]string{}
	if first := entries[0]; first.Seq != 1 {
		r.problem("replica %s: starts at seq %d (%s:%d); records 1 to %d not provided", replica, first.Seq, first.file, first.line, first.Seq-1)
	} else if first.Prev != zeroHash {
		r.problem("replica %s: the first record (%s:%d) does not start the chain", replica, first.file, first.line)
	}
	for i, e := range entries {
		hashes[e.Seq] = e.Hash
		r.Records++
		if name := e.replica(); name != "" && name != replica {
			r.problem("%s:%d: an entry of replica %q in the chain of replica %q", e.file, e.line, name, replica)
		}
		if e.Tamper != nil {
			r.problem("%s:%d: the log records tampering: %s", e.file, e.line, e.Tamper.Detail)
		}
		if e.Evidence != nil {
			r.Notes = append(r.Notes, fmt.Sprintf("%s:%d: %d damaged bytes were cut from the end of the log and kept as evidence", e.file, e.line, e.Evidence.Length))
		}
		if i == 0 {
			continue
		}
		prev := entries[i-1]
		switch {
		case e.Seq == prev.Seq:
			r.problem("%s:%d: seq %d appears twice (also %s:%d)", e.file, e.line, e.Seq, prev.file, prev.line)
		case e.Seq != prev.Seq+1:
			r.problem("replica %s: records %d to %d missing (between %s:%d and %s:%d)", replica, prev.Seq+1, e.Seq-1, prev.file, prev.line, e.file, e.line)
		case e.Prev != prev.Hash:
			r.problem("%s:%d: chain broken: prev is not the hash of record %d (a record was rewritten or replaced)", e.file, e.line, prev.Seq)
		case e.FileStart != nil && (e.FileStart.PrevFileSeq != prev.Seq || e.FileStart.PrevFileHash != prev.Hash):
			r.problem("%s:%d: the file does not continue the one before it", e.file, e.line)
		}
	}
	return hashes
}

// checkpoints verifies each checkpoint's signature and that it matches
// the record it signs; it counts what the last one leaves unsigned.
func (r *Report) checkpoints(replica string, entries []placed, hashes map[uint64]string, pub *ecdsa.PublicKey) {
	var proven uint64
	var last *Checkpoint
	found := false
	for _, e := range entries {
		cp := e.Checkpoint
		if cp == nil {
			continue
		}
		found = true
		if pub == nil {
			r.problem("%s:%d: no audit key given: the checkpoint cannot be checked", e.file, e.line)
			continue
		}
		if err := cp.Verify(pub); err != nil {
			r.problem("%s:%d: %v (the chain was rewritten, or another key signed it)", e.file, e.line, err)
			continue
		}
		switch h, ok := hashes[cp.Seq]; {
		case !ok:
			r.problem("%s:%d: the checkpoint signs record %d, which is not in the files", e.file, e.line, cp.Seq)
			continue
		case h != cp.Hash:
			r.problem("%s:%d: the checkpoint of record %d does not match it: the chain was rewritten", e.file, e.line, cp.Seq)
			continue
		}
		r.Checkpoints++
		if cp.Seq > proven {
			proven, last = cp.Seq, cp
		}
	}
	if !found {
		r.problem("replica %s: no checkpoint in the files: nothing in this chain is signed", replica)
	}
	unsigned := 0
	for _, e := range entries {
		if e.Seq > proven && e.Checkpoint == nil {
			unsigned++
		}
	}
	r.Unsigned += unsigned
	// The log signs its head every Every records: an unsigned tail more
	// than twice that long means checkpoints were removed. (A running
	// server's tail, or a crashed one's, stays under it; a clean shutdown
	// or the next start signs it all.)
	if last != nil && last.Every > 0 && unsigned > 2*last.Every {
		r.problem("replica %s: %d records after the last checkpoint, though the log signs every %d: checkpoints were removed", replica, unsigned, last.Every)
	}
}

// reaches checks that the files hold the live anchor: the record its
// checkpoint signs, and the head anchored beside it (the checkpoint's own
// entry or a later record: the chain as far as it was on disk).
func (r *Report) reaches(replica string, entries []placed, hashes map[uint64]string, a Anchor, pub *ecdsa.PublicKey) {
	if pub == nil {
		r.problem("replica %s: no audit key given: the live checkpoint cannot be checked", replica)
		return
	}
	if err := a.Verify(pub); err != nil {
		r.problem("replica %s: the live anchored checkpoint: %v", replica, err)
		return
	}
	last := entries[len(entries)-1]
	switch {
	case last.Seq < a.RecordSeq:
		r.problem("replica %s: missing tail: the files end at record %d (%s:%d) but the live anchored head is record %d (hash %s); records %d to %d not provided (cut, or their file not given)",
			replica, last.Seq, last.file, last.line, a.RecordSeq, a.RecordHash, last.Seq+1, a.RecordSeq)
	case hashes[a.Seq] != a.Hash:
		r.problem("replica %s: record %d does not match the live anchored checkpoint (hash %s in the files, %s signed): the chain was rewritten", replica, a.Seq, orNone(hashes[a.Seq]), a.Hash)
	case hashes[a.RecordSeq] != a.RecordHash:
		r.problem("replica %s: record %d does not match the live anchored head (hash %s in the files, %s anchored): the chain was rewritten", replica, a.RecordSeq, orNone(hashes[a.RecordSeq]), a.RecordHash)
	}
}

func orNone(h string) string {
	if h == "" {
		return "none"
	}
	return h
}

// Summary is the one-line verdict.
func (r *Report) Summary() string {
	if !r.OK() {
		return fmt.Sprintf("audit trail NOT intact: %d problems (%d records read, %d checkpoints verified)", len(r.Problems), r.Records, r.Checkpoints)
	}
	return fmt.Sprintf("ok: %d records and %d checkpoints verified, chain complete and intact (replicas: %s); %d records after the last checkpoint are not yet signed",
		r.Records, r.Checkpoints, strings.Join(r.Replicas, ", "), r.Unsigned)
}
