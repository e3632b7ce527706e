package server_test

import (
	"context"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-hsm/sigil/internal/namespace"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server/servertest"
)

const nsPolicy = `
rules:
  - identity: spiffe://example.org/root-admin
    keys: ["*"]
    namespaces: ["*"]
    allow: [keys.admin, keys.read, jwks.admin, ns.admin, ns.read, sign.raw]
  - identity: spiffe://example.org/ops-2
    keys: ["*"]
    namespaces: ["*"]
    allow: [ns.admin, ns.read, approvals.approve]
  - identity: spiffe://example.org/tenant-a/admin
    keys: ["*"]
    namespaces: [tenant-a]
    allow: [keys.admin, keys.read, jwks.admin, sign.raw, sign.jwt, eth.sign_tx, eth.sign_message, eth.sign_typed_data, approvals.approve, ns.read, ns.admin]
  - identity: spiffe://example.org/tenant-b/admin
    keys: ["*"]
    namespaces: [tenant-b]
    allow: [keys.admin, keys.read, jwks.admin, sign.raw, sign.jwt, eth.sign_tx, eth.sign_message, eth.sign_typed_data, approvals.approve, ns.read, ns.admin]
approvals:
  - operation: sign.raw
    keys: ["held-*"]
    namespaces: [tenant-a]
    approvers: [spiffe://example.org/ops-2]
    quorum: 1
`

// nsEnv is a server with two tenants' namespaces, each with an admin.
type nsEnv struct {
	*servertest.MTLS
	root, ops2, a, b *grpc.ClientConn
}

func newNSEnv(t testing.TB) *nsEnv {
	e := &nsEnv{MTLS: servertest.NewMTLS(t, nsPolicy)}
	e.root, e.ops2 = e.Client(t, "spiffe://example.org/root-admin"), e.Client(t, "spiffe://example.org/ops-2")
	e.a, e.b = e.Client(t, "spiffe://example.org/tenant-a/admin"), e.Client(t, "spiffe://example.org/tenant-b/admin")
	for _, ns := range []string{"tenant-a", "tenant-b"} {
		if _, err := sigilv1.NewNamespaceServiceClient(e.root).CreateNamespace(context.Background(), &sigilv1.CreateNamespaceRequest{Namespace: ns, Owner: "team " + ns}); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// in is a context calling in namespace ns.
func in(ns string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), namespace.Header, ns)
}

func mustCreate(t *testing.T, conn *grpc.ClientConn, ns string, reqs ...*sigilv1.CreateKeyRequest) {
	t.Helper()
	for _, r := range reqs {
		if _, err := sigilv1.NewKeyServiceClient(conn).CreateKey(in(ns), r); err != nil {
			t.Fatalf("create %s in %s: %v", r.GetId(), ns, err)
		}
	}
}

func TestNamespacesCannotReachEachOther(t *testing.T) {
	e := newNSEnv(t)
	mustCreate(t, e.b, "tenant-b", &sigilv1.CreateKeyRequest{Id: "b-raw", Algorithm: "ES256"}, &sigilv1.CreateKeyRequest{Id: "shared-name", Algorithm: "ES256"})
	// The same ID in another namespace is another key: no AlreadyExists
	// tells tenant A that tenant B has one.
	mustCreate(t, e.a, "tenant-a", &sigilv1.CreateKeyRequest{Id: "shared-name", Algorithm: "ES256"})
	keysA := sigilv1.NewKeyServiceClient(e.a)
	got, err := keysA.GetKey(in("tenant-a"), &sigilv1.GetKeyRequest{Id: "shared-name"})
	if err != nil || got.GetKey().GetId() != "shared-name" || got.GetKey().GetNamespace() != "tenant-a" {
		t.Fatalf("A's own key: %v %v", got, err)
	}
	list, err := keysA.ListKeys(in("tenant-a"), &sigilv1.ListKeysRequest{})
	if err != nil || len(list.GetKeys()) != 1 {
		t.Fatalf("A lists %v %v; want only its own key", list, err)
	}
	// In B's namespace, A is refused alike for B's key and for none.
	for _, id := range []string{"b-raw", "no-such-key"} {
		if _, err := keysA.GetKey(in("tenant-b"), &sigilv1.GetKeyRequest{Id: id}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("A reading B's %s: %v", id, err)
		}
		if _, err := sigilv1.NewSigningServiceClient(e.a).Sign(in("tenant-b"), &sigilv1.SignRequest{KeyId: id, Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("A signing with B's %s: %v", id, err)
		}
		if _, err := keysA.RotateKey(in("tenant-b"), &sigilv1.RotateKeyRequest{Id: id}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("A rotating B's %s: %v", id, err)
		}
	}
	if _, err := keysA.ListKeys(in("tenant-b"), &sigilv1.ListKeysRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("A listing B's keys: %v", err)
	}
	// In its own namespace, B's key is as unknown as any.
	_, errB := keysA.GetKey(in("tenant-a"), &sigilv1.GetKeyRequest{Id: "b-raw"})
	_, errNone := keysA.GetKey(in("tenant-a"), &sigilv1.GetKeyRequest{Id: "no-such-key"})
	if status.Code(errB) != codes.NotFound || strings.Contains(errB.Error(), "tenant-a/") || strings.ReplaceAll(status.Convert(errB).Message(), "b-raw", "X") != strings.ReplaceAll(status.Convert(errNone).Message(), "no-such-key", "X") {
		t.Errorf("B's key read from A's namespace: %v; an unknown one: %v", errB, errNone)
	}
	// Another namespace cannot be named inside an ID, in root either.
	for _, ns := range []string{"tenant-a", "root"} {
		if _, err := keysA.GetKey(in(ns), &sigilv1.GetKeyRequest{Id: "tenant-b/b-raw"}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("an ID naming a namespace, called in %s: %v", ns, err)
		}
		if _, err := sigilv1.NewJWTServiceClient(e.root).CreateJWKSet(in(ns), &sigilv1.CreateJWKSetRequest{Name: "x", KeyPatterns: []string{"tenant-b/*"}}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("a set pattern naming a namespace, called in %s: %v", ns, err)
		}
	}
	// A cannot call in root, nor in a namespace that does not exist (and
	// learns nothing of which exist).
	if _, err := keysA.ListKeys(context.Background(), &sigilv1.ListKeysRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("A in root: %v", err)
	}
	if _, err := keysA.ListKeys(in("tenant-zz"), &sigilv1.ListKeysRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("A in a namespace that does not exist: %v", err)
	}
	// Namespaces: A reads its own, not B's.
	nsA := sigilv1.NewNamespaceServiceClient(e.a)
	if _, err := nsA.GetNamespace(context.Background(), &sigilv1.GetNamespaceRequest{Namespace: "tenant-b"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("A reading namespace tenant-b: %v", err)
	}
	nss, err := nsA.ListNamespaces(context.Background(), &sigilv1.ListNamespacesRequest{})
	if err != nil || len(nss.GetNamespaces()) != 1 || nss.GetNamespaces()[0].GetName() != "tenant-a" {
		t.Errorf("A lists namespaces %v %v", nss, err)
	}
	// The timing of a refusal does not tell B's keys from none either:
	// both are refused before any key is looked up. The two are timed in
	// turn, so a busy machine slows both alike.
	var existingDs, unknownDs []time.Duration
	for range 60 {
		for _, id := range []string{"b-raw", "no-such-key"} {
			start := time.Now()
			keysA.GetKey(in("tenant-b"), &sigilv1.GetKeyRequest{Id: id})
			if d := time.Since(start); id == "b-raw" {
				existingDs = append(existingDs, d)
			} else {
				unknownDs = append(unknownDs, d)
			}
		}
	}
	median := func(ds []time.Duration) time.Duration {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2]
	}
	existing, unknown := median(existingDs), median(unknownDs)
	t.Logf("median refusal: B's key %v, an unknown one %v", existing, unknown)
	if d := existing - unknown; d.Abs() > max(2*time.Millisecond, unknown/2) {
		t.Errorf("refusals of B's key and an unknown one differ by %v (medians %v, %v)", d, existing, unknown)
	}
}

func TestNamespacedJWKSetsAndDefaultSets(t *testing.T) {
	e := newNSEnv(t)
	jwtB := sigilv1.NewJWTServiceClient(e.b)
	if _, err := jwtB.CreateJWKSet(in("tenant-b"), &sigilv1.CreateJWKSetRequest{Name: "issuer", KeyPatterns: []string{"b-*"}}); err != nil {
		t.Fatal(err)
	}
	// The same set name in A's namespace is A's own.
	if _, err := sigilv1.NewJWTServiceClient(e.a).CreateJWKSet(in("tenant-a"), &sigilv1.CreateJWKSetRequest{Name: "issuer", KeyPatterns: []string{"a-*"}}); err != nil {
		t.Fatalf("A's set of the same name: %v", err)
	}
	// A cannot publish into B's set, by any path.
	if _, err := sigilv1.NewKeyServiceClient(e.a).CreateKey(in("tenant-b"), &sigilv1.CreateKeyRequest{Id: "b-evil", Algorithm: "ES256", Purpose: "jwt",
		JwtPolicy: &sigilv1.JWTPolicy{JwksSets: []string{"issuer"}}}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("A publishing in B's set: %v", err)
	}
	mustCreate(t, e.b, "tenant-b", &sigilv1.CreateKeyRequest{Id: "b-jwt", Algorithm: "ES256", Purpose: "jwt", JwtPolicy: &sigilv1.JWTPolicy{JwksSets: []string{"issuer"}}},
		&sigilv1.CreateKeyRequest{Id: "b-default", Algorithm: "ES256", Purpose: "jwt"})
	mustCreate(t, e.a, "tenant-a", &sigilv1.CreateKeyRequest{Id: "a-jwt", Algorithm: "ES256", Purpose: "jwt", JwtPolicy: &sigilv1.JWTPolicy{JwksSets: []string{"issuer"}}})
	kid := func(conn *grpc.ClientConn, ns, id string) string {
		k, err := sigilv1.NewKeyServiceClient(conn).GetKey(in(ns), &sigilv1.GetKeyRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		return k.GetKey().GetGenerations()[0].GetKid()
	}
	bIssuer, bDefault, aIssuer := kid(e.b, "tenant-b", "b-jwt"), kid(e.b, "tenant-b", "b-default"), kid(e.a, "tenant-a", "a-jwt")
	fetch := func(path string) string {
		t.Helper()
		var body []byte
		for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			resp, err := http.Get(e.PublicURL + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && (strings.Contains(string(body), `"kid"`) || path == "/.well-known/jwks.json") || time.Now().After(end) {
				break
			}
		}
		return string(body)
	}
	for path, want := range map[string][]string{
		"/jwks/tenant-b/issuer.json":  {bIssuer},
		"/jwks/tenant-b/default.json": {bDefault},
		"/jwks/tenant-a/issuer.json":  {aIssuer},
	} {
		body := fetch(path)
		for _, kid := range []string{bIssuer, bDefault, aIssuer} {
			if strings.Contains(body, kid) != (kid == want[0]) {
				t.Errorf("%s: %s; want only %s", path, body, want[0])
			}
		}
	}
	root := fetch("/.well-known/jwks.json")
	for _, kid := range []string{bIssuer, bDefault, aIssuer} {
		if strings.Contains(root, kid) {
			t.Errorf("root's default set serves a tenant's key: %s", root)
		}
	}
	// A lists its own sets only, and the ListJWKSets answer names them
	// as A does.
	sets, err := sigilv1.NewJWTServiceClient(e.a).ListJWKSets(in("tenant-a"), &sigilv1.ListJWKSetsRequest{})
	if err != nil || len(sets.GetSets()) != 2 || sets.GetSets()[1].GetName() != "issuer" || sets.GetSets()[1].GetKeyIds()[0] != "a-jwt" ||
		sets.GetSets()[1].GetPath() != "/jwks/tenant-a/issuer.json" || sets.GetSets()[1].GetKeyPatterns()[0] != "a-*" {
		t.Fatalf("A's sets: %v %v", sets, err)
	}
	// A set holding a key is not deleted, nor narrowed past it; empty, it
	// is.
	if _, err := jwtB.DeleteJWKSet(in("tenant-b"), &sigilv1.DeleteJWKSetRequest{Name: "issuer"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("deleting a set holding a key: %v", err)
	}
	if _, err := jwtB.UpdateJWKSet(in("tenant-b"), &sigilv1.UpdateJWKSetRequest{Name: "issuer", KeyPatterns: []string{"b-other-*"}}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("narrowing a set past its key: %v", err)
	}
	if _, err := jwtB.UpdateJWKSet(in("tenant-b"), &sigilv1.UpdateJWKSetRequest{Name: "issuer", KeyPatterns: []string{"b-jwt"}}); err != nil {
		t.Errorf("narrowing a set to its key: %v", err)
	}
	if _, err := sigilv1.NewKeyServiceClient(e.b).ScheduleKeyDeletion(in("tenant-b"), &sigilv1.ScheduleKeyDeletionRequest{Id: "b-jwt", Window: durationpb.New(7 * 24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	// A namespace holding keys or sets is not deleted.
	if _, err := sigilv1.NewNamespaceServiceClient(e.root).DeleteNamespace(context.Background(), &sigilv1.DeleteNamespaceRequest{Namespace: "tenant-b"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("deleting a namespace holding keys: %v", err)
	}
}

func TestEmptyNamespaceIsDeleted(t *testing.T) {
	e := newNSEnv(t)
	nsc := sigilv1.NewNamespaceServiceClient(e.root)
	if _, err := nsc.CreateNamespace(context.Background(), &sigilv1.CreateNamespaceRequest{Namespace: "scratch"}); err != nil {
		t.Fatal(err)
	}
	if _, err := nsc.CreateNamespace(context.Background(), &sigilv1.CreateNamespaceRequest{Namespace: "scratch"}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("a second create: %v", err)
	}
	if _, err := nsc.DeleteNamespace(context.Background(), &sigilv1.DeleteNamespaceRequest{Namespace: "scratch"}); err != nil {
		t.Fatal(err)
	}
	if _, err := sigilv1.NewKeyServiceClient(e.root).CreateKey(in("scratch"), &sigilv1.CreateKeyRequest{Id: "k", Algorithm: "ES256"}); status.Code(err) != codes.NotFound {
		t.Errorf("a key in a deleted namespace: %v", err)
	}
	if _, err := nsc.DeleteNamespace(context.Background(), &sigilv1.DeleteNamespaceRequest{Namespace: "root"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("deleting root: %v", err)
	}
	if _, err := nsc.CreateNamespace(context.Background(), &sigilv1.CreateNamespaceRequest{Namespace: "Bad/Name"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a bad name: %v", err)
	}
}

func TestFreezeStopsEverySignatureAndNeedsAQuorumToLift(t *testing.T) {
	e := newNSEnv(t)
	mustCreate(t, e.a, "tenant-a", &sigilv1.CreateKeyRequest{Id: "a-raw", Algorithm: "ES256"}, &sigilv1.CreateKeyRequest{Id: "held-1", Algorithm: "ES256"})
	mustCreate(t, e.b, "tenant-b", &sigilv1.CreateKeyRequest{Id: "b-raw", Algorithm: "ES256"})
	sign := func(conn *grpc.ClientConn, ns, id string) error {
		_, err := sigilv1.NewSigningServiceClient(conn).Sign(in(ns), &sigilv1.SignRequest{KeyId: id, Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}})
		return err
	}
	// A signature held for approval before the freeze.
	heldErr := sign(e.a, "tenant-a", "held-1")
	heldID := approvalIDOf(t, heldErr)
	// One admin pulls the brake.
	if _, err := sigilv1.NewNamespaceServiceClient(e.a).FreezeNamespace(context.Background(), &sigilv1.FreezeNamespaceRequest{Namespace: "tenant-a"}); err != nil {
		t.Fatal(err)
	}
	if err := sign(e.a, "tenant-a", "a-raw"); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "frozen") {
		t.Errorf("signing in a frozen namespace: %v", err)
	}
	if _, err := sigilv1.NewKeyServiceClient(e.a).GetKey(in("tenant-a"), &sigilv1.GetKeyRequest{Id: "a-raw"}); err != nil {
		t.Errorf("reading in a frozen namespace: %v", err)
	}
	if err := sign(e.b, "tenant-b", "b-raw"); err != nil {
		t.Errorf("another namespace stops too: %v", err)
	}
	// The approved request about to run is refused.
	approvals := sigilv1.NewApprovalServiceClient(e.ops2)
	if _, err := approvals.Approve(in("tenant-a"), &sigilv1.ApproveRequest{ApprovalId: heldID, PayloadSha256: payloadOf(t, e.ops2, heldID)}); err != nil {
		t.Fatal(err)
	}
	if _, err := sigilv1.NewApprovalServiceClient(e.a).GetApprovalResult(in("tenant-a"), &sigilv1.GetApprovalResultRequest{ApprovalId: heldID}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "frozen") {
		t.Errorf("an approved signature in a frozen namespace: %v", err)
	}
	// Lifting it is held, whoever asks; the asker cannot approve it.
	_, err := sigilv1.NewNamespaceServiceClient(e.a).UnfreezeNamespace(context.Background(), &sigilv1.UnfreezeNamespaceRequest{Namespace: "tenant-a"})
	unfreezeID := approvalIDOf(t, err)
	if _, err := sigilv1.NewApprovalServiceClient(e.a).Approve(in("tenant-a"), &sigilv1.ApproveRequest{ApprovalId: unfreezeID, PayloadSha256: payloadOf(t, e.a, unfreezeID)}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the requester approving its own unfreeze: %v", err)
	}
	if err := sign(e.a, "tenant-a", "a-raw"); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("signing before the unfreeze is approved: %v", err)
	}
	// Approvals of tenant A's requests are not seen from B's namespace.
	// Approvals of tenant A's requests are not there in B's namespace, nor
	// in root: answered as an ID nobody has, and not approvable.
	unknownID := strings.Repeat("0", 32)
	for _, ns := range []string{"tenant-b", "root"} {
		_, foreign := sigilv1.NewApprovalServiceClient(e.ops2).GetApproval(in(ns), &sigilv1.GetApprovalRequest{ApprovalId: unfreezeID})
		_, unknown := sigilv1.NewApprovalServiceClient(e.ops2).GetApproval(in(ns), &sigilv1.GetApprovalRequest{ApprovalId: unknownID})
		if status.Code(foreign) != codes.NotFound || strings.ReplaceAll(foreign.Error(), unfreezeID, "ID") != strings.ReplaceAll(unknown.Error(), unknownID, "ID") {
			t.Errorf("an approval read from %s: %v; an unknown one: %v", ns, foreign, unknown)
		}
		if _, err := approvals.Approve(in(ns), &sigilv1.ApproveRequest{ApprovalId: unfreezeID, PayloadSha256: payloadOf(t, e.ops2, unfreezeID)}); status.Code(err) != codes.NotFound {
			t.Errorf("an approval approved from %s: %v", ns, err)
		}
	}
	// A freeze pulled again after the unfreeze was asked is not lifted
	// by its approval.
	if _, err := sigilv1.NewNamespaceServiceClient(e.root).FreezeNamespace(context.Background(), &sigilv1.FreezeNamespaceRequest{Namespace: "tenant-a"}); err != nil {
		t.Fatal(err)
	}
	stale, err := approvals.Approve(in("tenant-a"), &sigilv1.ApproveRequest{ApprovalId: unfreezeID, PayloadSha256: payloadOf(t, e.ops2, unfreezeID)})
	if err != nil || stale.GetApproval().GetState() != "failed" || !strings.Contains(stale.GetApproval().GetErrorMessage(), "frozen again") {
		t.Fatalf("approving an unfreeze asked before the latest freeze: %v %v", stale, err)
	}
	if err := sign(e.a, "tenant-a", "a-raw"); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("signing after a stale unfreeze ran: %v", err)
	}
	_, err = sigilv1.NewNamespaceServiceClient(e.a).UnfreezeNamespace(context.Background(), &sigilv1.UnfreezeNamespaceRequest{Namespace: "tenant-a"})
	unfreezeID = approvalIDOf(t, err)
	if _, err := approvals.Approve(in("tenant-a"), &sigilv1.ApproveRequest{ApprovalId: unfreezeID, PayloadSha256: payloadOf(t, e.ops2, unfreezeID)}); err != nil {
		t.Fatalf("a second admin approving the unfreeze: %v", err)
	}
	if err := sign(e.a, "tenant-a", "a-raw"); err != nil {
		t.Errorf("signing after the unfreeze: %v", err)
	}
}

// approvalIDOf is the approval ID a held request's error names.
func approvalIDOf(t *testing.T, err error) string {
	t.Helper()
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("not held: %v", err)
	}
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(interface{ GetMetadata() map[string]string }); ok && info.GetMetadata()["approval_id"] != "" {
			return info.GetMetadata()["approval_id"]
		}
	}
	t.Fatalf("no approval ID in %v", err)
	return ""
}

// payloadOf is the hash an approval of request id names.
func payloadOf(t *testing.T, conn *grpc.ClientConn, id string) string {
	t.Helper()
	got, err := sigilv1.NewApprovalServiceClient(conn).ListApprovals(in("tenant-a"), &sigilv1.ListApprovalsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range got.GetApprovals() {
		if a.GetApprovalId() == id {
			return a.GetPayloadSha256()
		}
	}
	t.Fatalf("approval %s not listed", id)
	return ""
}

// TestEveryMethodAnswersAForeignNameAsAnUnknownOne walks every RPC of
// every Sigil service: called in tenant A's namespace with the name of
// something of tenant B's, it must answer exactly as for a name nothing
// has; called in B's namespace, it must refuse A alike for both.
func TestEveryMethodAnswersAForeignNameAsAnUnknownOne(t *testing.T) {
	e := newNSEnv(t)
	mustCreate(t, e.b, "tenant-b", &sigilv1.CreateKeyRequest{Id: "b-raw", Algorithm: "ES256"},
		&sigilv1.CreateKeyRequest{Id: "b-jwt", Algorithm: "ES256", Purpose: "jwt"},
		&sigilv1.CreateKeyRequest{Id: "b-eth", Algorithm: "ES256K", Purpose: "eth", EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}}})
	if _, err := sigilv1.NewJWTServiceClient(e.b).CreateJWKSet(in("tenant-b"), &sigilv1.CreateJWKSetRequest{Name: "b-set", KeyPatterns: []string{"b-*"}}); err != nil {
		t.Fatal(err)
	}
	foreign := map[string]string{"b-raw": "", "b-jwt": "", "b-eth": "", "b-set": ""}
	walked := 0
	protoregistry.GlobalFiles.RangeFilesByPackage("sigil.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			svc := fd.Services().Get(i)
			for j := 0; j < svc.Methods().Len(); j++ {
				m := svc.Methods().Get(j)
				method := "/" + string(svc.FullName()) + "/" + string(m.Name())
				for name := range foreign {
					answer := func(ns, n string) (codes.Code, string) {
						req := requestNaming(t, m.Input(), n)
						resp := mustNew(t, m.Output())
						err := e.a.Invoke(in(ns), method, req, resp)
						return status.Code(err), strings.ReplaceAll(status.Convert(err).Message(), n, "NAME")
					}
					fc, fm := answer("tenant-a", name)
					uc, um := answer("tenant-a", "zz-"+name)
					if fc != uc || fm != um {
						t.Errorf("%s in A's namespace: B's %s gives %v %q, an unknown name %v %q", method, name, fc, fm, uc, um)
					}
					bc, _ := answer("tenant-b", name)
					if namesSomething(m.Input()) && bc != codes.PermissionDenied {
						t.Errorf("%s in B's namespace, as A, naming %s: %v", method, name, bc)
					}
				}
				walked++
			}
		}
		return true
	})
	if walked < 30 {
		t.Fatalf("walked %d methods", walked)
	}
	t.Logf("walked %d methods", walked)
}

// requestNaming is a request of type d with every namespaced field set to
// name, and what the method needs beyond it to get past its checks.
func requestNaming(t *testing.T, d protoreflect.MessageDescriptor, name string) proto.Message {
	m := mustNew(t, d)
	fill(m.ProtoReflect(), name)
	switch r := m.(type) {
	case *sigilv1.SignRequest:
		r.Input = &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}
	case *sigilv1.SignJWTRequest:
		r.ClaimsJson = []byte(`{"sub":"x"}`)
	case *sigilv1.SignMessageRequest:
		r.Message = []byte("m")
	case *sigilv1.CreateKeyRequest:
		r.Algorithm = "ES256"
	}
	return m
}

func fill(m protoreflect.Message, name string) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		f := fields.Get(i)
		switch {
		case namespace.Namespaced(f) && f.IsList():
			m.Mutable(f).List().Append(protoreflect.ValueOfString(name))
		case namespace.Namespaced(f):
			m.Set(f, protoreflect.ValueOfString(name))
		case f.Kind() == protoreflect.MessageKind && !f.IsList() && !f.IsMap() && f.ContainingOneof() == nil && f.Message().FullName().Parent() == "sigil.v1":
			fill(m.Mutable(f).Message(), name)
		}
	}
}

func namesSomething(d protoreflect.MessageDescriptor) bool {
	fields := d.Fields()
	for i := 0; i < fields.Len(); i++ {
		if namespace.Namespaced(fields.Get(i)) {
			return true
		}
	}
	return false
}

func mustNew(t *testing.T, d protoreflect.MessageDescriptor) proto.Message {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(d.FullName())
	if err != nil {
		t.Fatal(err)
	}
	return mt.New().Interface()
}
