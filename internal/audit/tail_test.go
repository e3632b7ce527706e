package audit

import (
	"bytes"
	"os"
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
	altered := bytes.Replace(bytes.Clone(b), lines[len(lines)-3], bytes.Replace(lines[len(lines)-3], []byte(`"allowed"`), []byte(`"denied!"`), 1), 1)
	os.WriteFile(e.path, altered, 0o600)
	if _, chain, _ := Tail(e.path, 25); chain.OK {
		t.Error("a line rewritten in place shows as intact")
	}
	removed := bytes.Replace(bytes.Clone(b), append(lines[len(lines)-3], '\n'), nil, 1)
	os.WriteFile(e.path, removed, 0o600)
	if _, chain, _ := Tail(e.path, 25); chain.OK || !strings.Contains(chain.Detail, "broken") {
		t.Errorf("a line taken out shows as %+v", chain)
	}
}
