package server_test

import (
	"context"
	"crypto/sha256"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server/servertest"
)

// A client's valid x-request-id is the request's ID: answered back and
// in its audit record, so a trace joins the record. One that is not a
// plain token of 8 to 64 characters is replaced by Sigil's own.
func TestClientRequestID(t *testing.T) {
	e := servertest.NewMTLS(t, `
rules:
  - identity: spiffe://example.org/a
    keys: ["*"]
    allow: [keys.admin, sign.raw]
`)
	conn := e.Client(t, "spiffe://example.org/a")
	if _, err := sigilv1.NewKeyServiceClient(conn).CreateKey(context.Background(), &sigilv1.CreateKeyRequest{Id: "rid", Algorithm: "ES256"}); err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("x"))
	sign := func(id string) string {
		var hdr metadata.MD
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-request-id", id)
		if _, err := sigilv1.NewSigningServiceClient(conn).Sign(ctx, &sigilv1.SignRequest{KeyId: "rid", Input: &sigilv1.SignRequest_Digest{Digest: digest[:]}}, grpc.Header(&hdr)); err != nil {
			t.Fatal(err)
		}
		return strings.Join(hdr.Get("x-request-id"), ",")
	}
	if got := sign("trace-0123456789abcdef"); got != "trace-0123456789abcdef" {
		t.Errorf("a valid client request ID came back as %q", got)
	}
	for _, bad := range []string{"short", "has space in it", "forged;x=1{}", strings.Repeat("x", 65)} {
		if got := sign(bad); got == bad || len(got) != 16 {
			t.Errorf("client request ID %q came back as %q", bad, got)
		}
	}
	log, _ := os.ReadFile(e.AuditLog)
	if !strings.Contains(string(log), `"request_id":"trace-0123456789abcdef"`) || strings.Contains(string(log), "forged") {
		t.Error("the audit log does not hold the client's request ID, or holds a refused one")
	}
}
