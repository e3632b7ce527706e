package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sigil-hsm/sigil/internal/devmode"
)

// clientFlags are the connection flags every client command takes.
type clientFlags struct {
	addr, cert, key, ca, dataDir string
	json                         bool
}

func addClientFlags(cmd *cobra.Command) *clientFlags {
	c := &clientFlags{}
	f := cmd.PersistentFlags()
	f.StringVar(&c.addr, "addr", os.Getenv("SIGIL_ADDR"), "server address HOST:PORT (env SIGIL_ADDR)")
	f.StringVar(&c.cert, "tls-cert", os.Getenv("SIGIL_TLS_CERT"), "client certificate (env SIGIL_TLS_CERT)")
	f.StringVar(&c.key, "tls-key", os.Getenv("SIGIL_TLS_KEY"), "client key (env SIGIL_TLS_KEY)")
	f.StringVar(&c.ca, "tls-ca", os.Getenv("SIGIL_TLS_CA"), "CA that signed the server certificate (env SIGIL_TLS_CA)")
	f.StringVar(&c.dataDir, "data-dir", "", "read address and credentials from a dev data dir")
	f.BoolVar(&c.json, "json", false, "print machine-readable JSON")
	return c
}

// dial connects to the server the flags name.
func (c *clientFlags) dial() (*grpc.ClientConn, error) {
	addr := c.addr
	if c.dataDir != "" {
		dc, err := devmode.ReadClient(c.dataDir)
		if err != nil {
			return nil, err
		}
		addr = dc.Addr
	}
	if addr == "" {
		return nil, errors.New("no server: give --addr (or SIGIL_ADDR) or --data-dir")
	}
	creds, err := c.credentials(addr)
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
}

// credentials are mTLS when certificates are given; plaintext only to a
// loopback address (a dev server).
func (c *clientFlags) credentials(addr string) (credentials.TransportCredentials, error) {
	if c.cert == "" && c.key == "" && c.ca == "" {
		host, _, err := net.SplitHostPort(addr)
		if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			return nil, fmt.Errorf("%s is not loopback: give --tls-cert, --tls-key and --tls-ca", addr)
		}
		return insecure.NewCredentials(), nil
	}
	cert, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	caPEM, err := os.ReadFile(c.ca)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("--tls-ca: no PEM certificates in %s", c.ca)
	}
	return credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool}), nil
}

// call dials, runs fn with the connection, and closes it.
func (c *clientFlags) call(ctx context.Context, fn func(context.Context, *grpc.ClientConn) error) error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	return fn(ctx, conn)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
