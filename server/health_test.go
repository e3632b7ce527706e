package server_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server/servertest"
)

// GetStatus is decided like any read: an identity whose rules do not
// reach sigil.status is refused, and so is one in a namespace, whatever
// its rules there (the states name the installation's backends); a
// refusal is audited like any other.
func TestStatusIsForRootOperatorsOnly(t *testing.T) {
	e := servertest.NewMTLS(t, `
rules:
  - identity: spiffe://example.org/ops
    keys: ["*"]
    namespaces: ["*"]
    allow: [keys.read, ns.admin]
  - identity: spiffe://example.org/auth-server
    keys: ["auth-*"]
    allow: [keys.read]
`)
	ctx := context.Background()
	ops := e.Client(t, "spiffe://example.org/ops")
	st, err := sigilv1.NewStatusServiceClient(ops).GetStatus(ctx, &sigilv1.GetStatusRequest{})
	if err != nil || !st.GetReady() || st.GetVersion() == "" {
		t.Fatalf("ops reading the status: %v %v", st, err)
	}
	kinds := map[string]bool{}
	for _, c := range st.GetComponents() {
		kinds[c.GetKind()] = c.GetUp()
	}
	if !kinds["backend"] || !kinds["audit"] {
		t.Errorf("components: %v", st.GetComponents())
	}
	if _, err := sigilv1.NewStatusServiceClient(e.Client(t, "spiffe://example.org/auth-server")).GetStatus(ctx, &sigilv1.GetStatusRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("an identity whose keys do not reach sigil.status: %v", err)
	}
	if _, err := sigilv1.NewNamespaceServiceClient(ops).CreateNamespace(ctx, &sigilv1.CreateNamespaceRequest{Namespace: "tenant-a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := sigilv1.NewStatusServiceClient(ops).GetStatus(in("tenant-a"), &sigilv1.GetStatusRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the status read in a namespace: %v", err)
	}
}

// While a backend is down, GetStatus names it, says why, and the server
// not ready; it comes back with the backend.
func TestStatusFollowsBackendHealth(t *testing.T) {
	h := newHarness(t)
	c := sigilv1.NewStatusServiceClient(h.Conn)
	wait := func(ready bool, want string) {
		t.Helper()
		var last *sigilv1.GetStatusResponse
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			st, err := c.GetStatus(context.Background(), &sigilv1.GetStatusRequest{})
			if err != nil {
				t.Fatal(err)
			}
			last = st
			for _, comp := range st.GetComponents() {
				if comp.GetKind() == "backend" && comp.GetName() == "hsm-a" && comp.GetUp() == ready && strings.Contains(comp.GetDetail(), want) && st.GetReady() == ready {
					return
				}
			}
		}
		t.Fatalf("want hsm-a up=%v with %q: %v", ready, want, last)
	}
	wait(true, "")
	h.HSM.Down.Store(true)
	wait(false, "injected: token unreachable")
	h.HSM.Down.Store(false)
	wait(true, "")
}

// TailAudit: the answering replica's latest records with the chain
// checked over them, read like the audit head (keys.read on sigil.audit)
// and only in the root namespace (the records name every namespace's
// keys); a limit past 500 is refused.
func TestTailAuditIsForRootAuditReaders(t *testing.T) {
	e := servertest.NewMTLS(t, `
rules:
  - identity: spiffe://example.org/ops
    keys: ["*"]
    namespaces: ["*"]
    allow: [keys.read, keys.admin, ns.admin]
  - identity: spiffe://example.org/auth-server
    keys: ["auth-*"]
    allow: [keys.read]
`)
	ctx := context.Background()
	ops := e.Client(t, "spiffe://example.org/ops")
	if _, err := sigilv1.NewKeyServiceClient(ops).CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "tail-1", Algorithm: "ES256"}); err != nil {
		t.Fatal(err)
	}
	audits := sigilv1.NewAuditServiceClient(ops)
	tail, err := audits.TailAudit(ctx, &sigilv1.TailAuditRequest{Limit: 5})
	if err != nil || !tail.GetChainOk() || len(tail.GetRecords()) == 0 || len(tail.GetRecords()) > 5 {
		t.Fatalf("the tail: %v %v", tail, err)
	}
	found := false
	for _, r := range tail.GetRecords() {
		found = found || r.GetKeyId() == "tail-1" && r.GetOperation() == "keys.admin"
	}
	if !found {
		t.Errorf("the key's creation is not among the latest records: %v", tail.GetRecords())
	}
	if _, err := sigilv1.NewAuditServiceClient(e.Client(t, "spiffe://example.org/auth-server")).TailAudit(ctx, &sigilv1.TailAuditRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("an identity whose keys do not reach sigil.audit: %v", err)
	}
	if _, err := audits.TailAudit(ctx, &sigilv1.TailAuditRequest{Limit: 501}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a limit of 501: %v", err)
	}
	if _, err := sigilv1.NewNamespaceServiceClient(ops).CreateNamespace(ctx, &sigilv1.CreateNamespaceRequest{Namespace: "tenant-a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := audits.TailAudit(in("tenant-a"), &sigilv1.TailAuditRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the tail read in a namespace: %v", err)
	}
}

// The tail is checked against the log the server holds: records cut
// from the file's end show as cut; and a reader whose rules reach no
// namespace sees another namespace's records without their identity,
// operation or key.
func TestTailAuditChecksTheHeadAndHidesOtherNamespaces(t *testing.T) {
	e := servertest.NewMTLS(t, `
rules:
  - identity: spiffe://example.org/ops
    keys: ["*"]
    namespaces: ["*"]
    allow: [keys.read, keys.admin, ns.admin]
  - identity: spiffe://example.org/root-reader
    keys: ["*"]
    allow: [keys.read]
`)
	ctx := context.Background()
	ops := e.Client(t, "spiffe://example.org/ops")
	if _, err := sigilv1.NewNamespaceServiceClient(ops).CreateNamespace(ctx, &sigilv1.CreateNamespaceRequest{Namespace: "tenant-a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := sigilv1.NewKeyServiceClient(ops).CreateKey(in("tenant-a"), &sigilv1.CreateKeyRequest{Id: "payroll", Algorithm: "ES256"}); err != nil {
		t.Fatal(err)
	}
	sees := func(who string) (bool, *sigilv1.TailAuditResponse) {
		tail, err := sigilv1.NewAuditServiceClient(e.Client(t, who)).TailAudit(ctx, &sigilv1.TailAuditRequest{})
		if err != nil {
			t.Fatalf("%s: %v", who, err)
		}
		for _, r := range tail.GetRecords() {
			if strings.Contains(r.GetKeyId(), "payroll") {
				return true, tail
			}
		}
		return false, tail
	}
	if ok, tail := sees("spiffe://example.org/ops"); !ok || !tail.GetChainOk() || !strings.Contains(tail.GetChainDetail(), "reach the head") {
		t.Errorf("ops, whose rules reach every namespace: %v", tail)
	}
	if ok, tail := sees("spiffe://example.org/root-reader"); ok || !strings.Contains(fmt.Sprint(tail.GetRecords()), "a namespace you may not read") {
		t.Errorf("a root-only reader saw tenant-a's key: %v", tail.GetRecords())
	}
	b, err := os.ReadFile(e.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	os.WriteFile(e.AuditLog, []byte(strings.Join(lines[:len(lines)-3], "")), 0o600) // the last two records cut
	if _, tail := sees("spiffe://example.org/ops"); tail.GetChainOk() || !strings.Contains(tail.GetChainDetail(), "cut from its end") {
		t.Errorf("records cut from the end: %v %s", tail.GetChainOk(), tail.GetChainDetail())
	}
}
