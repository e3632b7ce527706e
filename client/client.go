// Package client is the way Go code talks to Sigil: Dial connects over
// mTLS (certificate files, a dev server's data dir, or SIGIL_* variables),
// and the Client hands out what Go's own libraries take: a crypto.Signer
// (for x509, tls, ssh), a go-jose OpaqueSigner, minted JWTs, and Ethereum
// signatures as go-ethereum types. cmd/sigil uses it too.
//
// Calls get a default deadline, and reads and plain signatures are
// retried when the server answers Unavailable (a backend blip); nothing
// that changes state or spends (an Ethereum transaction) is retried.
package client

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/internal/devmode"
	"github.com/sigil-hsm/sigil/internal/mtls"
	"github.com/sigil-hsm/sigil/internal/namespace"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// Options say where Sigil is and which client certificate to present.
type Options struct {
	// Addr is the gRPC address, HOST:PORT.
	Addr string
	// CertFile, KeyFile: the client certificate and key (PEM); CAFile: the
	// CA that signed the server's certificate.
	CertFile, KeyFile, CAFile string
	// DataDir, if set, reads all of the above from a dev server's data
	// dir (`sigil serve --dev --data-dir DIR`).
	DataDir string
	// Timeout is the deadline of a call whose context has none; 30 s if
	// zero.
	Timeout time.Duration
	// Retries is how many times a read or a plain signature is retried
	// after Unavailable; 2 if zero, none if negative.
	Retries int
	// Namespace is the namespace every call is made in: its keys, JWK
	// Sets and approvals are the ones named. Root if empty (or the one a
	// DataDir's client.json names).
	Namespace string
}

// FromEnv returns the Options the SIGIL_ADDR, SIGIL_TLS_CERT,
// SIGIL_TLS_KEY, SIGIL_TLS_CA and SIGIL_NAMESPACE variables give (the
// CLI's too).
func FromEnv() Options {
	return Options{Addr: os.Getenv("SIGIL_ADDR"), CertFile: os.Getenv("SIGIL_TLS_CERT"),
		KeyFile: os.Getenv("SIGIL_TLS_KEY"), CAFile: os.Getenv("SIGIL_TLS_CA"), Namespace: os.Getenv("SIGIL_NAMESPACE")}
}

// Client is a connection to Sigil and its services.
type Client struct {
	conn    *grpc.ClientConn
	Keys    sigilv1.KeyServiceClient
	Signing sigilv1.SigningServiceClient
	JWT     sigilv1.JWTServiceClient
	Eth     sigilv1.EthereumServiceClient
	Audit   sigilv1.AuditServiceClient
	// Namespaces manages namespaces (whatever namespace the client is in).
	Namespaces sigilv1.NamespaceServiceClient
}

// Dial connects to Sigil over mTLS. The connection is made lazily; the
// first call reports a server that cannot be reached.
func Dial(ctx context.Context, o Options) (*Client, error) {
	if o.DataDir != "" {
		dc, err := devmode.ReadClient(o.DataDir)
		if err != nil {
			return nil, err
		}
		o.Addr, o.CertFile, o.KeyFile, o.CAFile = dc.Addr, dc.Cert, dc.Key, dc.CA
		o.Namespace = cmp.Or(o.Namespace, dc.Namespace)
	}
	if o.Namespace != "" {
		if err := namespace.Validate(o.Namespace); err != nil {
			return nil, fmt.Errorf("sigil client: namespace %q: %w", o.Namespace, err)
		}
	}
	switch {
	case o.Addr == "":
		return nil, errors.New("sigil client: no server address (Addr, SIGIL_ADDR or a DataDir)")
	case o.CertFile == "" || o.KeyFile == "" || o.CAFile == "":
		return nil, errors.New("sigil client: the server needs a client certificate (CertFile, KeyFile and CAFile, or a DataDir)")
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Retries == 0 {
		o.Retries = 2
	}
	tlsConfig, err := mtls.ClientConfig(o.CertFile, o.KeyFile, o.CAFile)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(o.Addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: time.Minute, Timeout: 20 * time.Second}),
		grpc.WithChainUnaryInterceptor(explainTLS(o.Addr, tlsConfig), inNamespace(o.Namespace), deadline(o.Timeout), retry(o.Retries)))
	if err != nil {
		return nil, err
	}
	return FromConn(conn), nil
}

// FromConn is a Client over a connection made elsewhere (its own
// credentials, interceptors and namespace metadata).
func FromConn(conn *grpc.ClientConn) *Client {
	return &Client{conn: conn, Keys: sigilv1.NewKeyServiceClient(conn), Signing: sigilv1.NewSigningServiceClient(conn),
		JWT: sigilv1.NewJWTServiceClient(conn), Eth: sigilv1.NewEthereumServiceClient(conn), Audit: sigilv1.NewAuditServiceClient(conn),
		Namespaces: sigilv1.NewNamespaceServiceClient(conn)}
}

// Conn is the underlying connection, for services this package does not
// wrap.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// inNamespace makes every call in namespace ns (none: root).
func inNamespace(ns string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if ns != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, namespace.Header, ns)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// deadline gives a call without one the default timeout.
func deadline(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// retryable are the calls safe to repeat: reads, and signatures that
// change nothing (an Ethereum transaction counts against a limit, and a
// change of state is not repeated blindly).
var retryable = map[string]bool{
	sigilv1.KeyService_GetKey_FullMethodName:             true,
	sigilv1.KeyService_ListKeys_FullMethodName:           true,
	sigilv1.KeyService_GetPublicKey_FullMethodName:       true,
	sigilv1.SigningService_Sign_FullMethodName:           true,
	sigilv1.SigningService_Verify_FullMethodName:         true,
	sigilv1.JWTService_SignJWT_FullMethodName:            true,
	sigilv1.JWTService_ListJWKSets_FullMethodName:        true,
	sigilv1.EthereumService_GetAddress_FullMethodName:    true,
	sigilv1.EthereumService_SignMessage_FullMethodName:   true,
	sigilv1.EthereumService_SignTypedData_FullMethodName: true,
	sigilv1.AuditService_GetAuditHead_FullMethodName:     true,
	// Reading a held request, or its result, runs it at most once
	// whoever asks how often (the server claims it before it runs).
	sigilv1.ApprovalService_ListApprovals_FullMethodName:     true,
	sigilv1.ApprovalService_GetApproval_FullMethodName:       true,
	sigilv1.ApprovalService_GetApprovalResult_FullMethodName: true,
}

// retry repeats a retryable call answered Unavailable, with a short
// backoff, while its context allows.
func retry(n int) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		for attempt := 1; attempt <= n && retryable[method] && status.Code(err) == codes.Unavailable; attempt++ {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			}
			err = invoker(ctx, method, req, reply, cc, opts...)
		}
		return err
	}
}

// tlsExplained are TLS failures as grpc-go words them, and what they mean
// to whoever runs the client: gRPC shows a refused client certificate as a
// connection error ("broken pipe", "server preface").
var tlsExplained = []struct{ says, means string }{
	{"tls: certificate required", "the server refused the client certificate: it is not signed by a CA the server trusts (its grpc.tls.client_ca), or none was given"},
	{"tls: unknown certificate authority", "the server refused the client certificate: unknown authority (not signed by the server's grpc.tls.client_ca)"},
	{"tls: bad certificate", "the server refused the client certificate (not signed by a CA it trusts, or not for client authentication)"},
	{"tls: expired certificate", "the server refused the client certificate: it has expired"},
	{"tls: revoked certificate", "the server refused the client certificate: revoked"},
	{"certificate signed by unknown authority", "the server's certificate is not signed by the CA the client trusts (--tls-ca, SIGIL_TLS_CA)"},
	{"certificate is valid for", "the server's certificate does not name the address dialled"},
	{"certificate has expired or is not yet valid", "the server's certificate has expired or is not yet valid"},
}

// explainTLS makes a TLS failure's error say which side refused what.
// In TLS 1.3 a server refuses a client certificate after the client
// thinks the handshake done, so the client often sees only its next
// write fail ("broken pipe", "connection reset"): then one handshake is
// made aside, and the server's alert read from it.
func explainTLS(addr string, tc *tls.Config) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		st, ok := status.FromError(err)
		// Only the transport's failures: a status the server sent (a
		// backend's own x509 error, say) is the server's to word.
		if !ok || st.Code() != codes.Unavailable || !transportFailure(st.Message()) {
			return err
		}
		msg := st.Message()
		if !strings.Contains(msg, "tls:") && !strings.Contains(msg, "x509:") {
			msg += "; " + probeTLS(ctx, addr, tc)
		}
		for _, e := range tlsExplained {
			if strings.Contains(msg, e.says) {
				return status.Error(codes.Unavailable, e.means+" ("+st.Message()+")")
			}
		}
		return err
	}
}

// transportFailure reports whether an Unavailable message is grpc-go's
// own about the connection, not a status the server sent.
func transportFailure(msg string) bool {
	for _, s := range []string{"connection error", "broken pipe", "connection reset", "server preface", "EOF"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// probeTLS makes one TLS connection to addr and reads what the server
// says after the handshake: its alert, if it refused the client's
// certificate. Bounded by two seconds and by the call's deadline; "" if
// nothing came of it.
func probeTLS(ctx context.Context, addr string, tc *tls.Config) string {
	c := tc.Clone()
	if c.ServerName == "" {
		c.ServerName, _, _ = net.SplitHostPort(addr)
	}
	c.NextProtos = []string{"h2"}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second) // and within the call's own deadline
	defer cancel()
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= 0 {
		return ""
	}
	conn, err := (&tls.Dialer{Config: c}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	if _, err := conn.Read(make([]byte, 1)); err != nil {
		return err.Error()
	}
	return ""
}
