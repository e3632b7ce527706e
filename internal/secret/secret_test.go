package secret

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/internal/errs"
)

func TestResolve(t *testing.T) {
	t.Setenv("SIGIL_TEST_SECRET", "from-env")
	file := filepath.Join(t.TempDir(), "pin")
	os.WriteFile(file, []byte("from-file\n"), 0o600)
	for ref, want := range map[Ref]string{"env:SIGIL_TEST_SECRET": "from-env", Ref("file:" + file): "from-file"} {
		got, err := ref.Resolve("pin")
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v", ref, got, err)
		}
	}
}

func TestRefusalsNeverRepeatTheValue(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o600)
	for _, ref := range []Ref{"s3cr3t-literal", "", "env:", "file:", "env:SIGIL_TEST_NOT_SET", Ref("file:" + empty), "file:/nonexistent/pin"} {
		_, err := ref.Resolve("backends.hsm-a.pin")
		if !errs.Is(err, errs.InvalidArgument) || !strings.Contains(err.Error(), "backends.hsm-a.pin") {
			t.Errorf("%q: %v", ref, err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("error repeats the literal: %v", err)
		}
	}
}
