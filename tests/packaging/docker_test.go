package packaging_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// dockerfile is the repository's Dockerfile as stages of instructions
// (continuation lines joined).
func dockerfile(t *testing.T) [][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root(), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	var stages [][]string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "FROM ") {
			stages = append(stages, nil)
		}
		if len(stages) > 0 {
			stages[len(stages)-1] = append(stages[len(stages)-1], line)
		}
	}
	return stages
}

// No container engine runs on these machines (no Docker daemon; podman
// cannot pull base images without a registry), so the Dockerfile is
// checked and its build steps run here: two stages; a final stage on a
// shell-less base, with no RUN (nothing there could run it), a numeric
// non-root USER, an exec-form ENTRYPOINT and nothing secret; the build
// stage's go build and its gathering of SoftHSM's libraries, run as
// written, give a binary and the module's libraries.
func TestDockerfile(t *testing.T) {
	stages := dockerfile(t)
	if len(stages) != 2 {
		t.Fatalf("%d stages, want a build stage and a final one", len(stages))
	}
	final := strings.Join(stages[1], "\n")
	if !strings.Contains(stages[1][0], "distroless") {
		t.Errorf("the final stage is not on a shell-less base: %s", stages[1][0])
	}
	for _, bad := range []string{"\nRUN ", "ENV SIGIL_", "PIN", "SECRET", "AWS_"} {
		if strings.Contains(final, bad) {
			t.Errorf("the final stage has %q", strings.TrimSpace(bad))
		}
	}
	if !regexp.MustCompile(`(?m)^USER [1-9][0-9]*:[1-9][0-9]*$`).MatchString(final) {
		t.Error("the final stage does not run as a numeric non-root user")
	}
	if !regexp.MustCompile(`(?m)^ENTRYPOINT \["/usr/bin/sigil"\]$`).MatchString(final) {
		t.Error("the entrypoint is not the binary in exec form")
	}

	// The build stage's steps, run here (this is the Debian its image is).
	if _, err := os.Stat("/usr/lib/softhsm/libsofthsm2.so"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("SoftHSM is required under CI=true")
		}
		t.Skip(err)
	}
	out := t.TempDir()
	var ran int
	for _, step := range stages[0] {
		cmd, ok := strings.CutPrefix(step, "RUN ")
		if !ok || strings.Contains(cmd, "apt-get") || strings.Contains(cmd, "go mod download") {
			continue // the image's own package installs and module cache
		}
		cmd = strings.ReplaceAll(cmd, "/out/", out+"/")
		cmd = strings.ReplaceAll(cmd, "${VERSION}", "dockerfile-test")
		c := exec.Command("sh", "-ec", cmd)
		c.Dir = root()
		if b, err := c.CombinedOutput(); err != nil {
			t.Fatalf("build step %q: %v\n%s", cmd, err, b)
		}
		ran++
	}
	if ran != 2 {
		t.Fatalf("%d build steps ran, want the go build and the library gathering", ran)
	}
	v, err := exec.Command(filepath.Join(out, "sigil"), "version").CombinedOutput()
	if err != nil || !strings.Contains(string(v), "dockerfile-test") {
		t.Fatalf("the built binary: %v %s", err, v)
	}
	libs, _ := filepath.Glob(filepath.Join(out, "lib", "*.so*"))
	names := strings.Join(libs, " ")
	if !strings.Contains(names, "libsofthsm2.so") || !strings.Contains(names, "libcrypto") || strings.Contains(names, "/libc.so") {
		t.Fatalf("the gathered libraries: %v", libs)
	}
}
