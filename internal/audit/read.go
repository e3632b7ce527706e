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

// maxReadLine bounds the memory a reader gives one line. Sigil's own
// lines are under MaxLine; longer ones (written by an older version, or
// by someone else) are read up to this and reported by size beyond it.
const maxReadLine = 4 << 20

// eachLine calls fn with every line of r, of any length, without its
// newline: a line over maxReadLine is passed as nil with its size, and a
// last line without a newline with complete false. Memory stays bounded.
func eachLine(r io.Reader, fn func(line []byte, size int, complete bool) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	size := 0
	for {
		chunk, err := br.ReadSlice('\n')
		size += len(chunk)
		if size <= maxReadLine {
			line = append(line, chunk...)
		} else {
			line = nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if size > 0 {
			complete := err == nil
			if complete {
				size--
				if line != nil {
					line = line[:len(line)-1]
				}
			}
			if ferr := fn(line, size, complete); ferr != nil {
				return ferr
			}
		}
		line, size = line[:0], 0
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
		if end-start <= maxReadLine {
			line := make([]byte, end-start)
			if _, err := f.ReadAt(line, start); err != nil {
				return tail{}, err
			}
			complete := bytes.HasSuffix(line, []byte("\n"))
			if p, err := parse(bytes.TrimSuffix(line, []byte("\n"))); err == nil && complete {
				t.last = p
				return t, nil
			}
			if complete && !bytes.HasPrefix(line, []byte(`{"seq":`)) {
				return tail{}, errForeign
			}
		}
		ev, err := evidenceAt(f, start, end)
		if err != nil {
			return tail{}, err
		}
		t.junk = append([]Evidence{ev}, t.junk...)
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

// errForeign refuses to cut a file's end that holds complete lines that
// are not audit lines at all: the path names another file (or the
// configuration is wrong), and cutting it would destroy someone's data.
var errForeign = errors.New("it ends with lines that are not audit lines; refusing to cut them (move the file away)")

// evidencePrefix is how much of a cut line its evidence keeps.
const evidencePrefix = 1024

// evidenceAt describes the bytes of f from start to end, read in a
// stream: their length, SHA-256 and first evidencePrefix bytes.
func evidenceAt(f *os.File, start, end int64) (Evidence, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, start, end-start)); err != nil {
		return Evidence{}, err
	}
	prefix := make([]byte, min(end-start, evidencePrefix))
	if _, err := f.ReadAt(prefix, start); err != nil {
		return Evidence{}, err
	}
	return Evidence{Digest: Digest{Length: int(end - start), SHA256: hex.EncodeToString(h.Sum(nil))}, Prefix: hex.EncodeToString(prefix)}, nil
}
