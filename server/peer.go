package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/identity"
)

// Limits on how long a client's certificate is trusted on one connection.
const (
	// MaxConnectionAge makes long-lived connections handshake again, so
	// that clients present their current certificates to the current CA
	// bundle. gRPC spreads it by ±10% and sends GOAWAY; clients reconnect.
	MaxConnectionAge = time.Hour
	// MaxConnectionAgeGrace is how long requests in flight then get.
	MaxConnectionAgeGrace = DefaultDeadline
	// refusedGrace is how long a connection whose certificate is refused
	// stays open to carry the Unauthenticated answer.
	refusedGrace = 200 * time.Millisecond
)

// expiringCreds are TLS transport credentials whose server connections
// close when the client's certificate chain expires: a timer armed at the
// handshake for the earliest notAfter of the verified chain.
type expiringCreds struct {
	credentials.TransportCredentials
}

var _ credentials.TransportCredentials = expiringCreds{}

func (c expiringCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	ti, ok := info.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 {
		return conn, info, nil
	}
	chain := ti.State.VerifiedChains[0]
	ec := &expiringConn{Conn: conn}
	ec.timer = time.AfterFunc(time.Until(notAfter(chain)), func() { conn.Close() })
	return ec, peerInfo{TLSInfo: ti, conn: ec}, nil
}

func (c expiringCreds) Clone() credentials.TransportCredentials {
	return expiringCreds{c.TransportCredentials.Clone()}
}

// notAfter is when the first certificate of chain expires.
func notAfter(chain []*x509.Certificate) time.Time {
	t := chain[0].NotAfter
	for _, c := range chain[1:] {
		if c.NotAfter.Before(t) {
			t = c.NotAfter
		}
	}
	return t
}

// expiringConn is a server connection with its expiry timer.
type expiringConn struct {
	net.Conn
	timer *time.Timer
	// trustedBy is the last client CA pool the chain verified against.
	trustedBy atomic.Pointer[x509.CertPool]
	// ids are the identities its certificate names, read once: the
	// certificate of a TLS 1.3 connection never changes.
	ids atomic.Pointer[[]identity.ID]
}

func (c *expiringConn) Close() error {
	c.timer.Stop()
	return c.Conn.Close()
}

// closeSoon closes the connection once the answer in hand has left.
func (c *expiringConn) closeSoon() { c.timer.Reset(refusedGrace) }

// peerInfo is the AuthInfo of a connection made with expiringCreds.
type peerInfo struct {
	credentials.TLSInfo
	conn *expiringConn
}

// tlsPeer returns the caller's verified certificate chain and, for
// connections made with expiringCreds, the connection.
func tlsPeer(ctx context.Context) ([]*x509.Certificate, *expiringConn) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, nil
	}
	var state tls.ConnectionState
	var conn *expiringConn
	switch ai := p.AuthInfo.(type) {
	case peerInfo:
		state, conn = ai.State, ai.conn
	case credentials.TLSInfo:
		state = ai.State
	}
	if len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return nil, nil
	}
	return state.VerifiedChains[0], conn
}

// authenticate checks, on every request, that the caller's certificate
// chain is still valid now and still chains to the client CA bundle in
// force (which the TLS configuration may have reloaded since the
// handshake). A refused certificate gets Unauthenticated and its
// connection is closed.
func (s *Server) authenticate(ctx context.Context) error {
	chain, conn := tlsPeer(ctx)
	if chain == nil {
		return nil // no certificate: no identity, which no rule allows
	}
	err := s.checkChain(chain, conn)
	if err != nil && conn != nil {
		conn.closeSoon()
	}
	return err
}

func (s *Server) checkChain(chain []*x509.Certificate, conn *expiringConn) error {
	now := s.opts.Now()
	for _, c := range chain {
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			return errs.New(errs.Unauthenticated, "client certificate chain is not valid now (expired or not yet valid)")
		}
	}
	pool := s.clientCAs()
	if pool == nil || conn != nil && conn.trustedBy.Load() == pool {
		return nil // no TLS, or this connection was checked against this very pool
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return errs.New(errs.Unauthenticated, "client certificate is not trusted by the client CA bundle in force")
	}
	if conn != nil {
		conn.trustedBy.Store(pool)
	}
	return nil // a connection not tracked (an HTTP one) is checked on every request
}

// clientCAs is the client CA pool a handshake would use now; nil without
// TLS. A configuration that picks its settings per handshake (mtls reloads
// its files that way) is asked for its current one.
func (s *Server) clientCAs() *x509.CertPool {
	cfg := s.opts.TLS
	if cfg == nil {
		return nil
	}
	if cfg.GetConfigForClient != nil {
		if cur, err := cfg.GetConfigForClient(&tls.ClientHelloInfo{}); err == nil && cur != nil {
			cfg = cur
		}
	}
	return cfg.ClientCAs
}
