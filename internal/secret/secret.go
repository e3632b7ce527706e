// Package secret resolves references to secrets: "env:NAME" reads an
// environment variable, "file:PATH" reads a file. Literal values are refused,
// so a PIN or credential can never sit in a configuration file, and no error
// from this package ever contains a secret value (only the reference).
//
// It is internal because the reference syntax is Sigil's configuration
// contract (CONFIG.md), shared by every backend.
package secret

import (
	"bytes"
	"os"
	"strings"

	"github.com/sigil-hsm/sigil/internal/errs"
)

// Ref is a reference to a secret: "env:NAME" or "file:PATH".
type Ref string

// IsRef reports whether s is written as a reference (env: or file:).
func IsRef(s string) bool { return strings.HasPrefix(s, "env:") || strings.HasPrefix(s, "file:") }

// Validate checks the form of r without reading the secret. Its error
// names field and never repeats r's value, which may be a pasted secret.
func (r Ref) Validate(field string) error {
	s := string(r)
	switch {
	case s == "":
		return errs.New(errs.InvalidArgument, "%s: missing (want env:NAME or file:PATH)", field)
	case strings.HasPrefix(s, "env:") && len(s) > len("env:"):
		return nil
	case strings.HasPrefix(s, "file:") && len(s) > len("file:"):
		return nil
	}
	return errs.New(errs.InvalidArgument, "%s: must be a reference env:NAME or file:PATH, never a literal secret", field)
}

// Resolve reads the secret r refers to. Trailing newlines of a file are
// dropped. An empty secret is an error.
func (r Ref) Resolve(field string) ([]byte, error) {
	if err := r.Validate(field); err != nil {
		return nil, err
	}
	var val []byte
	if name, ok := strings.CutPrefix(string(r), "env:"); ok {
		v, set := os.LookupEnv(name)
		if !set {
			return nil, errs.New(errs.InvalidArgument, "%s: environment variable %s is not set", field, name)
		}
		val = []byte(v)
	} else {
		path, err := credentialPath(strings.TrimPrefix(string(r), "file:"), field)
		if err != nil {
			return nil, err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, errs.New(errs.InvalidArgument, "%s: reading %s: %w", field, path, err)
		}
		val = bytes.TrimRight(b, "\r\n")
	}
	if len(val) == 0 {
		return nil, errs.New(errs.InvalidArgument, "%s: %s is empty", field, r)
	}
	return val, nil
}

// CredentialsDir is the variable systemd sets to the folder holding the
// unit's LoadCredential= files (root-only files handed to a service that
// runs as another user).
const CredentialsDir = "CREDENTIALS_DIRECTORY"

// credentialPath expands a file reference's leading $CREDENTIALS_DIRECTORY/,
// the one variable a path may name, so a packaged configuration can say
// file:$CREDENTIALS_DIRECTORY/pin.
func credentialPath(path, field string) (string, error) {
	rest, ok := strings.CutPrefix(path, "$"+CredentialsDir+"/")
	if !ok {
		return path, nil
	}
	dir := os.Getenv(CredentialsDir)
	if dir == "" {
		return "", errs.New(errs.InvalidArgument, "%s: %s is not set (systemd sets it for a unit with LoadCredential=; by hand, export it as the folder holding %s)", field, CredentialsDir, rest)
	}
	return dir + "/" + rest, nil
}
