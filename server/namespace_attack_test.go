package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/internal/namespace"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose/jwt"
	"github.com/sigil-hsm/sigil/server/servertest"
)

// The namespace attack suite: tenant A's admin, bound to tenant-a,
// against tenant B's namespace, one row per attack.
func TestNamespaceAttackSuite(t *testing.T) {
	e := newNSEnv(t)
	mustCreate(t, e.b, "tenant-b", &sigilv1.CreateKeyRequest{Id: "b-eth", Algorithm: "ES256K", Purpose: "eth", EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}}})
	if _, err := sigilv1.NewJWTServiceClient(e.b).CreateJWKSet(in("tenant-b"), &sigilv1.CreateJWKSetRequest{Name: "issuer", KeyPatterns: []string{"b-*"}}); err != nil {
		t.Fatal(err)
	}
	jwtA, keysA := sigilv1.NewJWTServiceClient(e.a), sigilv1.NewKeyServiceClient(e.a)
	for _, row := range []struct {
		name string
		call func(ctx context.Context) error
		want codes.Code
	}{
		{"create a set in B's namespace", func(ctx context.Context) error {
			_, err := jwtA.CreateJWKSet(in("tenant-b"), &sigilv1.CreateJWKSetRequest{Name: "evil"})
			return err
		}, codes.PermissionDenied},
		{"publish a key in B's set, calling in B", func(ctx context.Context) error {
			_, err := keysA.CreateKey(in("tenant-b"), &sigilv1.CreateKeyRequest{Id: "b-evil", Algorithm: "ES256", Purpose: "jwt", JwtPolicy: &sigilv1.JWTPolicy{JwksSets: []string{"issuer"}}})
			return err
		}, codes.PermissionDenied},
		{"publish a key in B's set by a qualified name", func(ctx context.Context) error {
			_, err := keysA.CreateKey(in("tenant-a"), &sigilv1.CreateKeyRequest{Id: "a-evil", Algorithm: "ES256", Purpose: "jwt", JwtPolicy: &sigilv1.JWTPolicy{JwksSets: []string{"tenant-b/issuer"}}})
			return err
		}, codes.InvalidArgument},
		{"a set admitting B's keys by a climbing pattern", func(ctx context.Context) error {
			_, err := jwtA.CreateJWKSet(in("tenant-a"), &sigilv1.CreateJWKSetRequest{Name: "climb", KeyPatterns: []string{"../tenant-b/*"}})
			return err
		}, codes.InvalidArgument},
		{"update B's set", func(ctx context.Context) error {
			_, err := jwtA.UpdateJWKSet(in("tenant-b"), &sigilv1.UpdateJWKSetRequest{Name: "issuer", KeyPatterns: []string{"*"}})
			return err
		}, codes.PermissionDenied},
		{"delete B's set", func(ctx context.Context) error {
			_, err := jwtA.DeleteJWKSet(in("tenant-b"), &sigilv1.DeleteJWKSetRequest{Name: "issuer"})
			return err
		}, codes.PermissionDenied},
		{"freeze B", func(ctx context.Context) error {
			_, err := sigilv1.NewNamespaceServiceClient(e.a).FreezeNamespace(ctx, &sigilv1.FreezeNamespaceRequest{Namespace: "tenant-b"})
			return err
		}, codes.PermissionDenied},
		{"delete B", func(ctx context.Context) error {
			_, err := sigilv1.NewNamespaceServiceClient(e.a).DeleteNamespace(ctx, &sigilv1.DeleteNamespaceRequest{Namespace: "tenant-b"})
			return err
		}, codes.PermissionDenied},
		{"create a namespace outside its binding", func(ctx context.Context) error {
			_, err := sigilv1.NewNamespaceServiceClient(e.a).CreateNamespace(ctx, &sigilv1.CreateNamespaceRequest{Namespace: "tenant-c"})
			return err
		}, codes.PermissionDenied},
		{"two namespaces in one call", func(ctx context.Context) error {
			_, err := keysA.ListKeys(metadataPairs(namespace.Header, "tenant-a", namespace.Header, "tenant-b"), &sigilv1.ListKeysRequest{})
			return err
		}, codes.InvalidArgument},
		{"a namespace name that is none", func(ctx context.Context) error {
			_, err := keysA.ListKeys(in("../tenant-b"), &sigilv1.ListKeysRequest{})
			return err
		}, codes.InvalidArgument},
		{"sign with B's eth key", func(ctx context.Context) error {
			_, err := sigilv1.NewEthereumServiceClient(e.a).SignMessage(in("tenant-b"), &sigilv1.SignMessageRequest{KeyId: "b-eth", Message: []byte("m")})
			return err
		}, codes.PermissionDenied},
	} {
		t.Run(row.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if got := status.Code(row.call(ctx)); got != row.want {
				t.Errorf("got %v, want %v", got, row.want)
			}
		})
	}
}

// One tenant taking every JWK Set slot of its namespace leaves the
// others theirs.
func TestSetSlotsAreEachNamespacesOwn(t *testing.T) {
	e := newNSEnv(t)
	jwtA := sigilv1.NewJWTServiceClient(e.a)
	var err error
	made := 0
	for ; made <= jwt.MaxSets; made++ {
		if _, err = jwtA.CreateJWKSet(in("tenant-a"), &sigilv1.CreateJWKSetRequest{Name: fmt.Sprintf("s%d", made)}); err != nil {
			break
		}
	}
	if status.Code(err) != codes.ResourceExhausted || made != jwt.MaxSets {
		t.Fatalf("tenant A made %d sets, then %v", made, err)
	}
	if _, err := sigilv1.NewJWTServiceClient(e.b).CreateJWKSet(in("tenant-b"), &sigilv1.CreateJWKSetRequest{Name: "issuer"}); err != nil {
		t.Errorf("tenant B after A took its slots: %v", err)
	}
	if _, err := sigilv1.NewJWTServiceClient(e.root).CreateJWKSet(context.Background(), &sigilv1.CreateJWKSetRequest{Name: "main"}); err != nil {
		t.Errorf("root after A took its slots: %v", err)
	}
}

// The Ethereum JSON-RPC endpoint serves an identity in the namespace its
// rules bind it to: tenant A's wallet sees A's accounts, never B's.
func TestJSONRPCIsBoundToTheIdentitysNamespace(t *testing.T) {
	e := newNSEnv(t)
	mustCreate(t, e.a, "tenant-a", &sigilv1.CreateKeyRequest{Id: "a-eth", Algorithm: "ES256K", Purpose: "eth", EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}}})
	mustCreate(t, e.b, "tenant-b", &sigilv1.CreateKeyRequest{Id: "b-eth", Algorithm: "ES256K", Purpose: "eth", EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}}})
	addr := func(conn *grpc.ClientConn, ns, id string) string {
		resp, err := sigilv1.NewEthereumServiceClient(conn).GetAddress(in(ns), &sigilv1.GetAddressRequest{KeyId: id})
		if err != nil {
			t.Fatal(err)
		}
		return strings.ToLower(resp.GetAddress())
	}
	aAddr, bAddr := addr(e.a, "tenant-a", "a-eth"), addr(e.b, "tenant-b", "b-eth")
	cert := e.CA.Issue(t, "spiffe://example.org/tenant-a/admin", false, time.Now().Add(time.Hour))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.CA.Pool, Certificates: []tls.Certificate{cert}}}}
	rpc := func(header, method string, params ...any) (json.RawMessage, string) {
		body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
		req, _ := http.NewRequest("POST", "https://"+e.EthRPC, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if header != "" {
			req.Header.Set(namespace.Header, header)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&out)
		if out.Error != nil {
			return nil, out.Error.Message
		}
		return out.Result, ""
	}
	accounts, msg := rpc("", "eth_accounts")
	if got := strings.ToLower(string(accounts)); !strings.Contains(got, aAddr[2:]) || strings.Contains(got, bAddr[2:]) {
		t.Errorf("eth_accounts of tenant A's wallet: %s %s (A %s, B %s)", accounts, msg, aAddr, bAddr)
	}
	if _, msg := rpc("", "eth_sign", bAddr, "0x6d"); !strings.Contains(msg, "permission denied") {
		t.Errorf("A signing with B's address: %q", msg)
	}
	if _, msg := rpc("tenant-b", "eth_accounts"); !strings.Contains(msg, "permission denied") {
		t.Errorf("A's wallet naming tenant-b: %q", msg)
	}
	if sig, msg := rpc("", "eth_sign", aAddr, "0x6d"); msg != "" || len(sig) < 10 {
		t.Errorf("A signing with its own address: %s %q", sig, msg)
	}
	// A freeze reaches the JSON-RPC endpoint too.
	if _, err := sigilv1.NewNamespaceServiceClient(e.a).FreezeNamespace(context.Background(), &sigilv1.FreezeNamespaceRequest{Namespace: "tenant-a"}); err != nil {
		t.Fatal(err)
	}
	if _, msg := rpc("", "eth_sign", aAddr, "0x6d"); !strings.Contains(msg, "frozen") {
		t.Errorf("eth_sign in a frozen namespace: %q", msg)
	}
}

// metadataPairs is a context sending the metadata kv.
func metadataPairs(kv ...string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), kv...)
}

// A JSON-RPC caller's namespace header that names no namespace is never
// recorded nor decided on: no certificate can poison the audit log (an
// oversized line failing a whole batch) with it.
func TestJSONRPCNamespaceHeaderIsChecked(t *testing.T) {
	e := newNSEnv(t)
	mustCreate(t, e.root, "root", &sigilv1.CreateKeyRequest{Id: "r1", Algorithm: "ES256"})
	cert := e.CA.Issue(t, "spiffe://example.org/nobody", false, time.Now().Add(time.Hour))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.CA.Pool, Certificates: []tls.Certificate{cert}}}}
	call := func(header string) {
		req, _ := http.NewRequest("POST", "https://"+e.EthRPC, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"eth_accounts","params":[]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(namespace.Header, header)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	call("../tenant-b")
	stop := make(chan struct{})
	withheld := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				withheld <- n
				return
			default:
			}
			_, err := sigilv1.NewSigningServiceClient(e.root).Sign(context.Background(), &sigilv1.SignRequest{KeyId: "r1", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}})
			if status.Code(err) == codes.Unavailable {
				n++
			}
		}
	}()
	big := strings.Repeat("a", 20000)
	for range 50 {
		call(big)
	}
	close(stop)
	if n := <-withheld; n > 0 {
		t.Errorf("%d of root's signatures withheld while a caller sent oversized namespace headers", n)
	}
	log, _ := os.ReadFile(e.AuditLog)
	if strings.Contains(string(log), "../tenant-b") || strings.Contains(string(log), big[:100]) {
		t.Error("the audit log records a namespace header that names no namespace")
	}
}

// Approvers bound to the namespace alone may approve a held request
// that names no key there (lifting a freeze).
func TestNamespaceApproversApproveItsUnfreeze(t *testing.T) {
	e := servertest.NewMTLS(t, `
rules:
  - identity: spiffe://example.org/root-admin
    keys: ["*"]
    namespaces: ["*"]
    allow: [ns.admin, ns.read]
  - identity: spiffe://example.org/tenant-a/*
    keys: ["*"]
    namespaces: [tenant-a]
    allow: [keys.admin, keys.read, sign.raw, approvals.approve, ns.read, ns.admin]
`)
	root, alice, bob := e.Client(t, "spiffe://example.org/root-admin"), e.Client(t, "spiffe://example.org/tenant-a/alice"), e.Client(t, "spiffe://example.org/tenant-a/bob")
	if _, err := sigilv1.NewNamespaceServiceClient(root).CreateNamespace(context.Background(), &sigilv1.CreateNamespaceRequest{Namespace: "tenant-a"}); err != nil {
		t.Fatal(err)
	}
	nsA := sigilv1.NewNamespaceServiceClient(alice)
	if _, err := nsA.FreezeNamespace(context.Background(), &sigilv1.FreezeNamespaceRequest{Namespace: "tenant-a"}); err != nil {
		t.Fatal(err)
	}
	_, err := nsA.UnfreezeNamespace(context.Background(), &sigilv1.UnfreezeNamespaceRequest{Namespace: "tenant-a"})
	id := approvalIDOf(t, err)
	got, err := sigilv1.NewApprovalServiceClient(bob).GetApproval(in("tenant-a"), &sigilv1.GetApprovalRequest{ApprovalId: id})
	if err != nil {
		t.Fatal(err)
	}
	ran, err := sigilv1.NewApprovalServiceClient(bob).Approve(in("tenant-a"), &sigilv1.ApproveRequest{ApprovalId: id, PayloadSha256: got.GetApproval().GetPayloadSha256()})
	if err != nil || ran.GetApproval().GetState() != "done" {
		t.Fatalf("bob approving alice's unfreeze: %v %v", ran, err)
	}
	if ns, err := nsA.GetNamespace(context.Background(), &sigilv1.GetNamespaceRequest{Namespace: "tenant-a"}); err != nil || ns.GetNamespace().GetFrozen() {
		t.Errorf("after the approved unfreeze: %v %v", ns, err)
	}
}

// A namespace holding a request awaiting approval is not deleted, and a
// request approved after its namespace went does not run there (nor in
// one made later under the same name).
func TestHeldRequestsDoNotOutliveTheirNamespace(t *testing.T) {
	e := &nsEnv{MTLS: servertest.NewMTLS(t, nsPolicy+`
  - operation: keys.admin
    actions: [create]
    namespaces: [tenant-a]
    approvers: [spiffe://example.org/ops-2]
    quorum: 1
`)}
	e.root, e.ops2, e.a = e.Client(t, "spiffe://example.org/root-admin"), e.Client(t, "spiffe://example.org/ops-2"), e.Client(t, "spiffe://example.org/tenant-a/admin")
	nsc := sigilv1.NewNamespaceServiceClient(e.root)
	if _, err := nsc.CreateNamespace(context.Background(), &sigilv1.CreateNamespaceRequest{Namespace: "tenant-a"}); err != nil {
		t.Fatal(err)
	}
	_, err := sigilv1.NewKeyServiceClient(e.a).CreateKey(in("tenant-a"), &sigilv1.CreateKeyRequest{Id: "planted", Algorithm: "ES256"})
	id := approvalIDOf(t, err)
	if _, err := nsc.DeleteNamespace(context.Background(), &sigilv1.DeleteNamespaceRequest{Namespace: "tenant-a"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("deleting a namespace holding request %s: %v", id, err)
	}
	// Denied, it no longer holds the namespace.
	if _, err := sigilv1.NewApprovalServiceClient(e.ops2).Deny(in("tenant-a"), &sigilv1.DenyRequest{ApprovalId: id, Reason: "no"}); err != nil {
		t.Fatal(err)
	}
	if _, err := nsc.DeleteNamespace(context.Background(), &sigilv1.DeleteNamespaceRequest{Namespace: "tenant-a"}); err != nil {
		t.Fatalf("deleting it once the request was denied: %v", err)
	}
}

// Set names starting "sigil." are refused, and a set admits keys of its
// own namespace only, whatever glob its patterns use.
func TestSetsStayInTheirNamespace(t *testing.T) {
	e := newNSEnv(t)
	if _, err := sigilv1.NewJWTServiceClient(e.root).CreateJWKSet(context.Background(), &sigilv1.CreateJWKSetRequest{Name: "sigil.x"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a set named sigil.x: %v", err)
	}
	_, e1 := sigilv1.NewKeyServiceClient(e.a).CreateKey(in("tenant-a"), &sigilv1.CreateKeyRequest{Id: "k1", Algorithm: "ES256", Purpose: "jwt", JwtPolicy: &sigilv1.JWTPolicy{JwksSets: []string{"sigil.x"}}})
	if status.Code(e1) != codes.InvalidArgument {
		t.Errorf("a tenant key naming a set sigil.x: %v", e1)
	}
	if _, err := sigilv1.NewJWTServiceClient(e.root).CreateJWKSet(context.Background(), &sigilv1.CreateJWKSetRequest{Name: "wide", KeyPatterns: []string{"tenant-a[^x]*"}}); err != nil {
		t.Fatal(err)
	}
	if (jwt.Set{Name: "wide", KeyPatterns: []string{"tenant-a[^x]*"}}).Admits("tenant-a/k") {
		t.Error("a root set's character class admits a tenant's key")
	}
	resp, err := http.Get(e.PublicURL + "/jwks/tenant-a/wide.json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("root's set served under tenant-a's path: %d", resp.StatusCode)
	}
}
