package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
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
