package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
)

// eachLine calls fn with every line of r, of any length, without its
// newline; a last line without one is passed with complete false.
func eachLine(r io.Reader, fn func(line []byte, complete bool) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			complete := line[len(line)-1] == '\n'
			if ferr := fn(bytes.TrimSuffix(line, []byte("\n")), complete); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// tail is what the end of a file holds: its last valid entry, and the
// bytes after it that are not one (a line cut short by a crash or a full
// disk, or damaged), which start at cut.
type tail struct {
	last *parsed
	cut  int64
	junk []Evidence
}

// maxJunkLines bounds how many damaged lines at a file's end are cut off
// as evidence before the file is treated as holding no valid entry.
const maxJunkLines = 64

// readTail finds the last valid entry of f, reading backwards from its
// end, so the cost does not grow with the file and no line is too long.
func readTail(f *os.File) (tail, error) {
	fi, err := f.Stat()
	if err != nil {
		return tail{}, err
	}
	end := fi.Size()
	t := tail{cut: end}
	for range maxJunkLines {
		if end == 0 {
			return t, nil
		}
		start, err := lineStart(f, end)
		if err != nil {
			return tail{}, err
		}
		line := make([]byte, end-start)
		if _, err := f.ReadAt(line, start); err != nil {
			return tail{}, err
		}
		complete := bytes.HasSuffix(line, []byte("\n"))
		if p, err := parse(bytes.TrimSuffix(line, []byte("\n"))); err == nil && complete {
			t.last = p
			return t, nil
		}
		t.junk = append([]Evidence{evidenceOf(line)}, t.junk...)
		t.cut, end = start, start
	}
	return t, nil
}

// lineStart returns the offset of the line that ends at end (its newline
// at end-1, or no newline for a partial last line).
func lineStart(f *os.File, end int64) (int64, error) {
	buf := make([]byte, 64<<10)
	pos := end - 1 // skip the line's own newline
	for pos > 0 {
		n := min(int64(len(buf)), pos)
		if _, err := f.ReadAt(buf[:n], pos-n); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return pos - n + int64(i) + 1, nil
		}
		pos -= n
	}
	return 0, nil
}

// evidencePrefix is how much of a cut line its evidence keeps.
const evidencePrefix = 1024

func evidenceOf(b []byte) Evidence {
	sum := sha256.Sum256(b)
	return Evidence{Digest: Digest{Length: len(b), SHA256: hex.EncodeToString(sum[:])}, Prefix: hex.EncodeToString(b[:min(len(b), evidencePrefix)])}
}
