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
