package audit

import "slices"

// Head is a point of one replica's chain: a record's seq and hash.
type Head struct {
	Replica string
	Seq     uint64
	Hash    string
}

// Since checks that files hold each replica's chain from its head in
// heads onward: the record at the head's seq, with the head's hash, and
// every record after it, each linked to the one before, to the files'
// end. What reads the records since a point (a restore's
// reconciliation) learns this way that none of them is missing but
// those past the files' end. A partial last line is a write a crash cut,
// whose request was never answered: not a problem. It returns each
// problem found.
func Since(files []string, heads []Head) ([]string, error) {
	r := &Report{}
	chains := map[string][]placed{}
	for _, name := range files {
		entries, err := readFile(name, r, true)
		if err != nil {
			return nil, err
		}
		if len(entries) > 0 {
			replica := replicaOf(entries)
			chains[replica] = append(chains[replica], entries...)
		}
	}
	for _, h := range heads {
		entries := chains[h.Replica]
		slices.SortStableFunc(entries, func(a, b placed) int { return cmpSeq(a.Seq, b.Seq) })
		i := slices.IndexFunc(entries, func(e placed) bool { return e.Seq == h.Seq })
		if i < 0 {
			r.problem("replica %s: the files do not hold record %d, its chain's head at the backup: give that replica's files from it on", h.Replica, h.Seq)
			continue
		}
		if entries[i].Hash != h.Hash {
			r.problem("replica %s: record %d (%s:%d) is not the one at the backup (hash %s, the backup has %s): the chain was rewritten", h.Replica, h.Seq, entries[i].file, entries[i].line, entries[i].Hash, h.Hash)
			continue
		}
		prev := entries[i]
		for _, e := range entries[i+1:] {
			if e.Seq == prev.Seq && e.Hash == prev.Hash {
				continue // the same file given twice
			}
			if e.Seq != prev.Seq+1 || e.Prev != prev.Hash {
				r.problem("replica %s: records %d to %d are missing or not linked (%s:%d follows %s:%d)", h.Replica, prev.Seq+1, e.Seq, e.file, e.line, prev.file, prev.line)
				break
			}
			prev = e
		}
	}
	return r.Problems, nil
}

// Records are every record of files, in the files' order; damaged lines
// are skipped (Verify names them).
func Records(files []string) ([]Record, error) {
	var out []Record
	for _, name := range files {
		entries, err := readFile(name, &Report{}, true)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.Record != nil {
				out = append(out, *e.Record)
			}
		}
	}
	return out, nil
}
