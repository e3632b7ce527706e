package audit

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Since finds every way audit files can fall short of a chain from a
// head on: the head's record missing, another record in its place, a
// record after it missing; and takes the whole chain, a file given twice
// included.
func TestSinceFindsWhatIsMissing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	l, err := Open(context.Background(), Options{Path: path, Replica: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := l.Write(&Record{Operation: "sign", KeyID: "k", Outcome: "allowed", Identity: strings.Repeat("x", i)}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	b, _ := os.ReadFile(path)
	lines := strings.SplitAfter(string(b), "\n")
	var head Head
	for _, line := range lines {
		var e struct {
			Seq  uint64
			Hash string
		}
		json.Unmarshal([]byte(line), &e)
		if e.Seq == 5 {
			head = Head{Replica: "r1", Seq: 5, Hash: e.Hash}
		}
	}
	if head.Hash == "" {
		t.Fatalf("no record 5 in\n%s", b)
	}
	write := func(name string, keep func(i int, line string) string) string {
		var out strings.Builder
		for i, line := range lines {
			out.WriteString(keep(i, line))
		}
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(out.String()), 0o600)
		return p
	}
	whole := write("whole", func(_ int, line string) string { return line })
	for _, c := range []struct {
		name  string
		files []string
		heads []Head
		want  string // "" for no problem
	}{
		{"the whole chain", []string{whole}, []Head{head}, ""},
		{"a file given twice", []string{whole, whole}, []Head{head}, ""},
		{"a record after the head missing", []string{write("gap", func(_ int, line string) string {
			if strings.Contains(line, `"seq":7,`) {
				return ""
			}
			return line
		})}, []Head{head}, "records 7 to 8 are missing"},
		{"the head's record missing", []string{write("late", func(_ int, line string) string {
			if strings.Contains(line, `"seq":5,`) || strings.Contains(line, `"seq":4,`) {
				return ""
			}
			return line
		})}, []Head{head}, "do not hold record 5"},
		{"another chain at the head", []string{whole}, []Head{{Replica: "r1", Seq: 5, Hash: strings.Repeat("0", 64)}}, "was rewritten"},
		{"a replica with no files", []string{whole}, []Head{head, {Replica: "r2", Seq: 3, Hash: head.Hash}}, "replica r2"},
		{"a last line a crash cut", []string{write("torn", func(i int, line string) string {
			if i == len(lines)-2 {
				return line[:len(line)/2]
			}
			return line
		})}, []Head{head}, ""},
	} {
		problems, err := Since(c.files, c.heads)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(problems, "; ")
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: problems %q, want %q", c.name, got, c.want)
		}
	}
}
