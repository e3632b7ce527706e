package server_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/internal/namespace"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server/servertest"
)

// A backup holds every key's record, ledger and held request: it takes
// store.backup decided on the audit key (keys.admin on every key is not
// enough, nor store.backup on other keys), in the root namespace only.
func TestBackupIsItsOwnOperation(t *testing.T) {
	e := servertest.NewMTLS(t, `
rules:
  - identity: spiffe://example.org/admin
    keys: ["*"]
    allow: [keys.admin, keys.read]
  - identity: spiffe://example.org/scoped
    keys: ["team-*"]
    allow: [store.backup]
  - identity: spiffe://example.org/backup
    keys: ["sigil.audit"]
    allow: [store.backup]
    namespaces: ["*"]
`)
	ctx := context.Background()
	backup := func(identity string, ctx context.Context) error {
		_, err := sigilv1.NewBackupServiceClient(e.Client(t, identity)).Backup(ctx, &sigilv1.BackupRequest{})
		return err
	}
	for _, who := range []string{"spiffe://example.org/admin", "spiffe://example.org/scoped", "spiffe://example.org/nobody"} {
		if err := backup(who, ctx); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: %v", who, err)
		}
	}
	// Allowed, it reaches the store (this test server has no snapshotting
	// store: FailedPrecondition says so), but not from a namespace.
	if err := backup("spiffe://example.org/backup", ctx); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("store.backup on sigil.audit: %v", err)
	}
	nsCtx := metadata.AppendToOutgoingContext(ctx, namespace.Header, "team-a")
	if err := backup("spiffe://example.org/backup", nsCtx); status.Code(err) == codes.OK || status.Code(err) == codes.FailedPrecondition {
		t.Errorf("a backup asked in a namespace: %v", err)
	}
}

// Enrolling for the console is the power to sign in as an identity: it
// takes console.admin on sigil.console (keys.admin on every key is not
// it), in the root namespace, for an identity the policy names itself.
func TestConsoleEnrollmentIsItsOwnOperation(t *testing.T) {
	e := servertest.NewMTLS(t, `
rules:
  - identity: spiffe://example.org/admin
    keys: ["*"]
    allow: [keys.admin, keys.read]
  - identity: spiffe://example.org/enroller
    keys: ["sigil.console"]
    allow: [console.admin]
    namespaces: ["*"]
  - identity: spiffe://example.org/officer
    keys: ["x-*"]
    allow: [keys.read]
`)
	enroll := func(who, id string, ctx context.Context) error {
		_, err := sigilv1.NewConsoleServiceClient(e.Client(t, who)).Enroll(ctx, &sigilv1.EnrollRequest{Identity: id})
		return err
	}
	ctx := context.Background()
	if err := enroll("spiffe://example.org/admin", "spiffe://example.org/officer", ctx); status.Code(err) != codes.PermissionDenied {
		t.Errorf("keys.admin enrolling: %v", err)
	}
	if err := enroll("spiffe://example.org/enroller", "spiffe://example.org/officer", ctx); err != nil {
		t.Errorf("console.admin enrolling a named identity: %v", err)
	}
	if err := enroll("spiffe://example.org/enroller", "spiffe://example.org/invented", ctx); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("enrolling an identity the policy does not name: %v", err)
	}
	nsCtx := metadata.AppendToOutgoingContext(ctx, namespace.Header, "team-a")
	if err := enroll("spiffe://example.org/enroller", "spiffe://example.org/officer", nsCtx); status.Code(err) == codes.OK {
		t.Error("an enrollment made in a namespace")
	}
}
