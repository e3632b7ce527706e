package server_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/server"
	"github.com/sigil-hsm/sigil/server/servertest"
)

const rawSigner = "spiffe://example.org/raw-signer"

// withRawKey creates raw-1 through the ops identity.
func (e *mtlsEnv) withRawKey(t testing.TB) {
	t.Helper()
	if _, err := sigilv1.NewKeyServiceClient(e.Client(t, "spiffe://example.org/ops")).CreateKey(context.Background(),
		&sigilv1.CreateKeyRequest{Id: "raw-1", Algorithm: "ES256", Purpose: "raw"}); err != nil {
		t.Fatal(err)
	}
}

// rawSignerCert is a certificate for the raw signer valid until notAfter.
func (e *mtlsEnv) rawSignerConn(t testing.TB, notAfter time.Time) *grpc.ClientConn {
	u, _ := url.Parse(rawSigner)
	cert := e.CA.Mint(t, &x509.Certificate{Subject: pkix.Name{CommonName: "raw"}, URIs: []*url.URL{u}, NotAfter: notAfter})
	return e.DialAs(t, e.CA, &cert)
}

// waitClosedByServer waits, without making any call, until conn is no
// longer READY: the server closed it.
func waitClosedByServer(t *testing.T, conn *grpc.ClientConn, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for conn.GetState() == connectivity.Ready {
		if !conn.WaitForStateChange(ctx, connectivity.Ready) {
			t.Fatalf("the server kept the connection open (state %v)", conn.GetState())
		}
	}
}

func TestExpiredCertificateOnALiveConnection(t *testing.T) {
	e := newMTLSEnv(t)
	e.withRawKey(t)
	notAfter := time.Now().Add(3 * time.Second).Truncate(time.Second) // certificates count whole seconds
	conn := e.rawSignerConn(t, notAfter)
	if err := call(conn, raw.OpSign, "raw-1"); err != nil {
		t.Fatalf("before notAfter: %v", err)
	}
	if conn.GetState() != connectivity.Ready {
		t.Fatalf("state %v after a call", conn.GetState())
	}
	waitClosedByServer(t, conn, time.Until(notAfter)+3*time.Second)
	if time.Now().Before(notAfter) {
		t.Fatal("the connection closed before the certificate expired")
	}
	if c := status.Code(call(conn, raw.OpSign, "raw-1")); c != codes.Unavailable && c != codes.Unauthenticated {
		t.Fatalf("the same client after notAfter: %v", c)
	}
	if c := status.Code(call(e.rawSignerConn(t, notAfter), raw.OpSign, "raw-1")); c != codes.Unavailable {
		t.Fatalf("a new connection with the expired certificate: %v", c)
	}
}

// The per-request check, seen through a server clock that has passed the
// certificate's notAfter while the connection's timer (real time) has not.
func TestExpiryIsCheckedOnEveryRequest(t *testing.T) {
	var skew atomic.Int64
	e := newMTLSEnv(t, func(o *server.Options) {
		o.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	e.withRawKey(t)
	conn := e.rawSignerConn(t, time.Now().Add(time.Hour))
	if err := call(conn, raw.OpSign, "raw-1"); err != nil {
		t.Fatal(err)
	}
	skew.Store(int64(2 * time.Hour))
	if err := call(conn, raw.OpSign, "raw-1"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("an expired certificate on a live connection: %v", err)
	}
	waitClosedByServer(t, conn, 3*time.Second)
	log, _ := os.ReadFile(e.AuditLog)
	if !strings.Contains(string(log), `"outcome":"denied","code":"Unauthenticated"`) {
		t.Error("the refusal is not audited")
	}
}

// A client CA removed from the bundle stops vouching for live connections.
func TestRemovedClientCAStopsLiveConnections(t *testing.T) {
	e := newMTLSEnv(t)
	e.withRawKey(t)
	conn := e.rawSignerConn(t, time.Now().Add(time.Hour))
	if err := call(conn, raw.OpSign, "raw-1"); err != nil {
		t.Fatal(err)
	}
	other := servertest.NewCA(t)
	caFile := filepath.Join(filepath.Dir(e.AuditLog), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := call(conn, raw.OpSign, "raw-1")
		if status.Code(err) == codes.Unauthenticated {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("after the CA left the bundle: %v", err)
		}
		time.Sleep(200 * time.Millisecond) // the bundle is re-read at most once a second
	}
	waitClosedByServer(t, conn, 3*time.Second)
}
