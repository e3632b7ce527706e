package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sigil-hsm/sigil/internal/devmode"
	"github.com/sigil-hsm/sigil/internal/mtls"
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

// dial connects to the server the flags name, over mTLS.
func (c *clientFlags) dial() (*grpc.ClientConn, error) {
	addr, cert, key, ca := c.addr, c.cert, c.key, c.ca
	if c.dataDir != "" {
		dc, err := devmode.ReadClient(c.dataDir)
		if err != nil {
			return nil, err
		}
		addr, cert, key, ca = dc.Addr, dc.Cert, dc.Key, dc.CA
	}
	if addr == "" {
		return nil, errors.New("no server: give --addr (or SIGIL_ADDR) or --data-dir")
	}
	if cert == "" || key == "" || ca == "" {
		return nil, errors.New("the server needs a client certificate: give --tls-cert, --tls-key and --tls-ca (or --data-dir)")
	}
	tlsConfig, err := mtls.ClientConfig(cert, key, ca)
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)))
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
