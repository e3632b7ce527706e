// Package softhsm creates SoftHSM tokens in a private folder, for the
// --dev server and for tests. It drives softhsm2-util (from Debian's
// softhsm2 package, which also ships the module) rather than initialising
// the token through PKCS#11, because a token initialised in-process is not
// reliably visible to a module that process has already initialised.
//
// It is internal: production deployments bring their own HSM.
package softhsm

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Module is where Debian's softhsm2 package installs the PKCS#11 library.
const Module = "/usr/lib/softhsm/libsofthsm2.so"

// ConfEnv is the variable SoftHSM reads its configuration path from. It is
// read once, when the module is initialised, so it is process-wide.
const ConfEnv = "SOFTHSM2_CONF"

// Token is an initialised SoftHSM token.
type Token struct {
	Label   string
	PINFile string // 0600 file holding the user PIN; reference it as file:PATH
}

// Available reports why SoftHSM cannot be used here, or nil.
func Available() error {
	if _, err := os.Stat(Module); err != nil {
		return fmt.Errorf("SoftHSM module %s missing (apt-get install softhsm2): %w", Module, err)
	}
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		return fmt.Errorf("softhsm2-util missing (apt-get install softhsm2): %w", err)
	}
	return nil
}

// WriteConf writes a SoftHSM configuration under dir whose tokens live in
// dir/tokens, and returns its path.
func WriteConf(dir string) (string, error) {
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return "", err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	return conf, os.WriteFile(conf, []byte(body), 0o600)
}

// InitToken initialises a token labelled label in the SoftHSM configured by
// conf, with random user and SO PINs written to 0600 files in dir.
func InitToken(conf, dir, label string) (Token, error) {
	pin, err := writePIN(filepath.Join(dir, label+".pin"))
	if err != nil {
		return Token{}, err
	}
	soPIN, err := writePIN(filepath.Join(dir, label+".so-pin"))
	if err != nil {
		return Token{}, err
	}
	cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", soPIN, "--pin", pin)
	cmd.Env = append(os.Environ(), ConfEnv+"="+conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		return Token{}, fmt.Errorf("softhsm2-util --init-token: %w: %s", err, redact(out, pin, soPIN))
	}
	return Token{Label: label, PINFile: filepath.Join(dir, label+".pin")}, nil
}

func writePIN(path string) (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	pin := hex.EncodeToString(b)
	if err := os.WriteFile(path, []byte(pin+"\n"), 0o600); err != nil {
		return "", err
	}
	return pin, nil
}

// redact removes secrets from tool output before it goes into an error.
func redact(out []byte, secrets ...string) string {
	s := string(out)
	for _, sec := range secrets {
		s = strings.ReplaceAll(s, sec, "[redacted]")
	}
	return s
}

// TokenDir returns the folder in which the SoftHSM configured by
// WriteConf(dir) keeps the token labelled label: tests move it away to
// play a token whose storage disappears and returns.
func TokenDir(dir, label string) (string, error) {
	padded := []byte(fmt.Sprintf("%-32s", label)) // CK_TOKEN_INFO pads labels to 32 bytes
	objects, err := filepath.Glob(filepath.Join(dir, "tokens", "*", "token.object"))
	if err != nil {
		return "", err
	}
	for _, o := range objects {
		if b, err := os.ReadFile(o); err == nil && bytes.Contains(b, padded) {
			return filepath.Dir(o), nil
		}
	}
	return "", fmt.Errorf("no SoftHSM token labelled %q under %s", label, dir)
}
