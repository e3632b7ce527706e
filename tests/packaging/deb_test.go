package packaging_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// root is the module's top folder.
func root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// need skips (fails under CI=true) without what the test runs: root
// (chroot, dpkg into another root), debootstrap, dpkg-deb.
func need(t *testing.T) {
	t.Helper()
	var why string
	switch {
	case os.Geteuid() != 0:
		why = "the package test installs into a chroot, which needs root"
	default:
		for _, c := range []string{"debootstrap", "dpkg-deb", "chroot", "openssl", "systemd-analyze"} {
			if _, err := exec.LookPath(c); err != nil {
				why = c + " is missing (make sys-deps)"
			}
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("required under CI=true: " + why)
	}
	t.Skip(why)
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// debianRoot is a fresh Debian 12 root in dir with what the package
// recommends (SoftHSM) and systemd (for systemd-analyze): debootstrapped
// once and kept as a tarball in bin/.
func debianRoot(t *testing.T, dir string) string {
	t.Helper()
	tarball := filepath.Join(root(), "bin", "debian-bookworm-root.tgz")
	rootfs := filepath.Join(dir, "root")
	if _, err := os.Stat(tarball); err != nil {
		run(t, dir, "debootstrap", "--variant=minbase", "--include=softhsm2,openssl,passwd,systemd,procps", "bookworm", rootfs, "http://deb.debian.org/debian")
		run(t, dir, "tar", "-C", rootfs, "-czf", tarball+".tmp", ".")
		if err := os.Rename(tarball+".tmp", tarball); err != nil {
			t.Fatal(err)
		}
		return rootfs
	}
	os.MkdirAll(rootfs, 0o755)
	run(t, dir, "tar", "-C", rootfs, "-xzf", tarball)
	return rootfs
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// make release builds the .deb; dpkg -i installs it in a fresh Debian
// root, where postinst makes the sigil user, a SoftHSM token with a
// random root-only PIN and the PKI; the unit passes systemd-analyze
// verify and scores OK on systemd-analyze security; the installed binary,
// as the sigil user with the PIN handed over as systemd's LoadCredential=
// would, serves the packaged configuration; the admin certificate
// postinst issued creates a key and signs, and openssl verifies the
// signature; removing and purging the package keeps the keyring.
func TestDebInstallsServesAndSigns(t *testing.T) {
	need(t)
	dir := t.TempDir()
	dist := filepath.Join(dir, "dist")
	out := run(t, root(), "make", "release", "ARCHES=amd64", "DIST="+dist)
	if !regexp.MustCompile(`needs glibc 2\.\d+ or later`).MatchString(out) {
		t.Errorf("make release does not say the glibc floor:\n%s", out)
	}
	debs, _ := filepath.Glob(filepath.Join(dist, "*.deb"))
	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if len(debs) != 1 || err != nil || !strings.Contains(string(sums), filepath.Base(debs[0])) {
		t.Fatalf("release artefacts: %v, SHA256SUMS %q (%v)", debs, sums, err)
	}
	conffiles := run(t, dir, "dpkg-deb", "-I", debs[0], "conffiles")
	contents := run(t, dir, "dpkg-deb", "-c", debs[0])
	for _, want := range []string{"./usr/bin/sigil", "./lib/systemd/system/sigil.service", "./etc/sigil/sigil.yaml", "./usr/share/man/man1/sigil-serve.1.gz", "./usr/share/doc/sigil/production.md"} {
		if !strings.Contains(contents, want) {
			t.Errorf("the .deb lacks %s", want)
		}
	}
	if !strings.Contains(conffiles, "/etc/sigil/sigil.yaml") || !strings.Contains(conffiles, "/etc/sigil/policy.yaml") { // an upgrade keeps the operator's
		t.Errorf("the configuration is not in conffiles:\n%s", conffiles)
	}

	rootfs := debianRoot(t, dir)
	chroot := func(args ...string) string {
		t.Helper()
		return run(t, dir, "chroot", append([]string{rootfs}, args...)...)
	}
	run(t, dir, "cp", debs[0], filepath.Join(rootfs, "tmp", "sigil.deb"))
	chroot("dpkg", "-i", "/tmp/sigil.deb")
	if id := chroot("id", "-u", "sigil"); strings.TrimSpace(id) == "0" {
		t.Fatal("the sigil user is root")
	}
	mode := func(path string) string { return strings.TrimSpace(chroot("stat", "-c", "%a %U", path)) }
	for path, want := range map[string]string{"/etc/sigil/credentials/pin": "600 root", "/etc/sigil/tls/server.key": "600 sigil", "/var/lib/sigil": "700 sigil", "/var/lib/sigil/keyring.db": "600 sigil"} {
		if got := mode(path); got != want {
			t.Errorf("%s: mode and owner %q, want %q", path, got, want)
		}
	}

	// Installing again (an upgrade) replaces no PIN, certificate or key.
	sum := func() string {
		return chroot("sha256sum", "/etc/sigil/credentials/pin", "/etc/sigil/tls/server.crt", "/etc/sigil/tls/server.key", "/etc/sigil/tls/ca.crt", "/etc/sigil/admin/client.crt")
	}
	before := sum()
	chroot("dpkg", "-i", "/tmp/sigil.deb")
	if after := sum(); after != before {
		t.Errorf("a second install changed the PIN or the PKI:\n%s\n%s", before, after)
	}

	// The unit as systemd reads it, and how exposed it leaves the service.
	if out, err := exec.Command("systemd-analyze", "verify", "--man=no", "--root="+rootfs, "/lib/systemd/system/sigil.service").CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	sec, _ := exec.Command("systemd-analyze", "security", "--offline=yes", "--root="+rootfs, "sigil.service").CombinedOutput()
	if m := regexp.MustCompile(`Overall exposure level for sigil.service: ([0-9.]+) (\S+)`).FindStringSubmatch(string(sec)); m == nil || m[2] != "OK" {
		t.Errorf("systemd-analyze security: %q\n%s", m, sec)
	}

	// Serve as systemd would: the sigil user, the PIN in a credentials
	// folder only it reads, on free ports.
	grpcPort, httpPort, adminPort := freePort(t), freePort(t), freePort(t)
	cfg := filepath.Join(rootfs, "etc", "sigil", "sigil.yaml")
	b, _ := os.ReadFile(cfg)
	b = []byte(strings.NewReplacer("127.0.0.1:7443", "127.0.0.1:"+grpcPort, "127.0.0.1:7080", "127.0.0.1:"+httpPort, "127.0.0.1:7081", "127.0.0.1:"+adminPort).Replace(string(b)))
	os.WriteFile(cfg, b, 0o644)
	chroot("install", "-d", "-m", "0700", "-o", "sigil", "-g", "sigil", "/run/credentials/sigil.service")
	chroot("install", "-m", "0400", "-o", "sigil", "-g", "sigil", "/etc/sigil/credentials/pin", "/run/credentials/sigil.service/pin")
	srv := exec.Command("chroot", "--userspec=sigil:sigil", rootfs, "env", "SOFTHSM2_CONF=/etc/sigil/softhsm2.conf",
		"CREDENTIALS_DIRECTORY=/run/credentials/sigil.service", "/usr/bin/sigil", "serve", "--config", "/etc/sigil/sigil.yaml")
	logs := &lockedBuffer{}
	srv.Stdout, srv.Stderr = logs, logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), `"msg":"serving"`) {
		if time.Now().After(deadline) {
			t.Fatalf("the installed server did not start:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	cli := []string{"--addr", "127.0.0.1:" + grpcPort, "--tls-ca", "/etc/sigil/tls/ca.crt", "--tls-cert", "/etc/sigil/admin/client.crt", "--tls-key", "/etc/sigil/admin/client.key"}
	chroot(append([]string{"/usr/bin/sigil", "keys", "create", "pkg-k1", "--alg", "ES256"}, cli...)...)
	var key struct {
		Generations []struct {
			PublicKeyPEM string `json:"public_key_pem"`
		} `json:"generations"`
	}
	if err := json.Unmarshal([]byte(chroot(append([]string{"/usr/bin/sigil", "keys", "get", "pkg-k1", "--json"}, cli...)...)), &key); err != nil || len(key.Generations) != 1 {
		t.Fatalf("keys get: %v", err)
	}
	msg := filepath.Join(rootfs, "tmp", "msg.txt")
	os.WriteFile(msg, []byte("signed by the installed package\n"), 0o644)
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(chroot(append([]string{"/usr/bin/sigil", "sign", "--key", "pkg-k1", "--message-file", "/tmp/msg.txt"}, cli...)...)))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "pub.pem"), []byte(key.Generations[0].PublicKeyPEM), 0o644)
	os.WriteFile(filepath.Join(dir, "msg.sig"), sig, 0o644)
	if out := run(t, dir, "openssl", "dgst", "-sha256", "-verify", "pub.pem", "-signature", "msg.sig", msg); !strings.Contains(out, "Verified OK") {
		t.Fatalf("openssl: %s", out)
	}
	if v := chroot("/usr/bin/sigil", "version"); strings.Contains(v, "(devel)") || strings.Contains(v, "commit unknown") {
		t.Errorf("the packaged binary's version: %s", v)
	}
	srv.Process.Kill()
	srv.Wait()

	chroot("dpkg", "--purge", "sigil")
	if _, err := os.Stat(filepath.Join(rootfs, "var", "lib", "sigil", "keyring.db")); err != nil {
		t.Errorf("purging the package removed the keyring: %v", err)
	}
}

// lockedBuffer is the server's output, written by exec's copying
// goroutine while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
