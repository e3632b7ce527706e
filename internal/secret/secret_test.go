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

// A file reference may start with $CREDENTIALS_DIRECTORY/ (systemd's
// LoadCredential=), and says so clearly when it is not set.
func TestCredentialsDirectory(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/pin", []byte("throwaway-pin\n"), 0o600)
	t.Setenv(CredentialsDir, dir)
	if v, err := Ref("file:$CREDENTIALS_DIRECTORY/pin").Resolve("pin"); err != nil || string(v) != "throwaway-pin" {
		t.Fatalf("with the variable set: %q %v", v, err)
	}
	t.Setenv(CredentialsDir, "")
	if _, err := Ref("file:$CREDENTIALS_DIRECTORY/pin").Resolve("pin"); err == nil || !strings.Contains(err.Error(), "CREDENTIALS_DIRECTORY is not set") {
		t.Fatalf("unset: %v", err)
	}
	if _, err := Ref("file:/nonexistent/$HOME/pin").Resolve("pin"); err == nil || !strings.Contains(err.Error(), "/nonexistent/$HOME/pin") {
		t.Fatalf("another variable is not expanded: %v", err)
	}
}
