package server_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server/servertest"
	"github.com/sigil-hsm/sigil/signer/pkcs11"
)

// TestStoreFromBeforeNamespacesIsRoot opens a keyring store written by
// the release before namespaces (testdata/keyring-before-namespaces.db:
// `sigil serve --dev` with legacy-raw, legacy-jwt, the set legacy-issuer
// and legacy-issued in it) and finds it, unchanged, as the root
// namespace: its keys, JWK Sets and documents answer as they did, and new
// namespaces sit beside it.
func TestStoreFromBeforeNamespacesIsRoot(t *testing.T) {
	fixture, err := os.ReadFile(filepath.Join("testdata", "keyring-before-namespaces.db"))
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(t.TempDir(), "keyring.db")
	if err := os.WriteFile(db, fixture, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := pkcs11.Open(context.Background(), "hsm-a", pkcs11.Config(softhsmtest.Token(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	s := servertest.Start(t, &servertest.FaultyBackend{Backend: b}, db)
	ctx := context.Background()
	list, err := s.Keys.ListKeys(ctx, &sigilv1.ListKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range list.GetKeys() {
		ids = append(ids, k.GetId())
		if k.GetNamespace() != "root" {
			t.Errorf("%s is in %q", k.GetId(), k.GetNamespace())
		}
	}
	if strings.Join(ids, " ") != "legacy-issued legacy-jwt legacy-raw sigil.audit" {
		t.Fatalf("keys after the upgrade: %v", ids)
	}
	issued, err := s.Keys.GetKey(ctx, &sigilv1.GetKeyRequest{Id: "legacy-issued"})
	if err != nil || issued.GetKey().GetJwtPolicy().GetJwksSets()[0] != "legacy-issuer" {
		t.Fatalf("legacy-issued: %v %v", issued, err)
	}
	sets, err := sigilv1.NewJWTServiceClient(s.Conn).ListJWKSets(ctx, &sigilv1.ListJWKSetsRequest{})
	if err != nil || len(sets.GetSets()) != 2 || sets.GetSets()[1].GetName() != "legacy-issuer" || sets.GetSets()[1].GetPath() != "/jwks/legacy-issuer.json" {
		t.Fatalf("sets after the upgrade: %v %v", sets, err)
	}
	kid := issued.GetKey().GetGenerations()[0].GetKid()
	resp, err := http.Get(s.PublicURL + "/jwks/legacy-issuer.json")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), kid) {
		t.Errorf("/jwks/legacy-issuer.json after the upgrade: %s", body)
	}
	// The upgraded store takes namespaces beside root.
	nsc := sigilv1.NewNamespaceServiceClient(s.Conn)
	if _, err := nsc.CreateNamespace(ctx, &sigilv1.CreateNamespaceRequest{Namespace: "tenant-a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Keys.CreateKey(in("tenant-a"), &sigilv1.CreateKeyRequest{Id: "legacy-raw", Algorithm: "ES256"}); err != nil {
		t.Fatalf("the same ID in a new namespace: %v", err)
	}
	if again, err := s.Keys.ListKeys(ctx, &sigilv1.ListKeysRequest{}); err != nil || len(again.GetKeys()) != len(ids) {
		t.Errorf("root after a key in tenant-a: %v %v", again, err)
	}
}
