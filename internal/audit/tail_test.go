package audit

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"
)

// Tail shows the last lines with the chain checked over them: intact,
// it names the records it covers and the last checkpoint; a line
// rewritten in place, or one taken out, shows as a broken chain.
func TestTailChecksTheChainItShows(t *testing.T) {
	e := newEnv(t)
	l := e.open()
	writeN(t, l, 40)
	l.Close()
	got, chain, err := Tail(e.path, 25)
	if err != nil || len(got) != 25 || !chain.OK || chain.LastCheckpoint == nil || !strings.Contains(chain.Detail, "each links to the one before") {
		t.Fatalf("an intact tail: %d lines, %+v, %v", len(got), chain, err)
	}
	b, _ := os.ReadFile(e.path)
	lines := bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	victim := len(lines) - 3
	for bytes.Contains(lines[victim], []byte(`"checkpoint"`)) { // a record line, not a checkpoint's
		victim--
	}
	altered := bytes.Replace(bytes.Clone(b), lines[victim], bytes.Replace(lines[victim], []byte(`"sign.raw"`), []byte(`"sign.xxx"`), 1), 1)
	os.WriteFile(e.path, altered, 0o600)
	if _, chain, _ := Tail(e.path, 25); chain.OK {
		t.Error("a line rewritten in place shows as intact")
	}
	removed := bytes.Replace(bytes.Clone(b), append(lines[victim], '\n'), nil, 1)
	os.WriteFile(e.path, removed, 0o600)
	got, chain, _ = Tail(e.path, 25)
	if chain.OK || !strings.Contains(chain.Detail, "broken") {
		t.Errorf("a line taken out shows as %+v", chain)
	}
	// Past the break the newest records still show, the break marked.
	if len(got) != 25 || got[len(got)-1].Seq != 40+uint64(len(lines)-40) || !slices.ContainsFunc(got, func(e TailEntry) bool { return e.Break }) {
		t.Errorf("after a break: %d lines, last %d", len(got), got[len(got)-1].Seq)
	}
	if _, _, err := Tail(e.path, -1); err != nil {
		t.Errorf("a negative count: %v", err)
	}
}
