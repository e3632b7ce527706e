package mtls

import (
	"crypto/tls"
	"slices"
	"testing"

	"github.com/sigil-hsm/sigil/internal/identity"
)

// The dev client certificate carries DevClientIdentity as a URI SAN, the
// one identity `serve --dev` allows.
func TestDevClientCertificateHasTheDevIdentity(t *testing.T) {
	p, err := EnsureDevPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(p.ClientCert, p.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	if ids := identity.Strings(identity.Of(pair.Leaf)); !slices.Contains(ids, DevClientIdentity) {
		t.Fatalf("dev client identities %q lack %s", ids, DevClientIdentity)
	}
}
