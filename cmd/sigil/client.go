package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/sigil-hsm/sigil/client"
)

// clientFlags are the connection flags every client command takes.
type clientFlags struct {
	addr, cert, key, ca, dataDir, namespace string
	json                                    bool
}

func addClientFlags(cmd *cobra.Command) *clientFlags {
	c, env := &clientFlags{}, client.FromEnv()
	f := cmd.PersistentFlags()
	f.StringVar(&c.addr, "addr", env.Addr, "server address HOST:PORT (env SIGIL_ADDR)")
	f.StringVar(&c.cert, "tls-cert", env.CertFile, "client certificate (env SIGIL_TLS_CERT)")
	f.StringVar(&c.key, "tls-key", env.KeyFile, "client key (env SIGIL_TLS_KEY)")
	f.StringVar(&c.ca, "tls-ca", env.CAFile, "CA that signed the server certificate (env SIGIL_TLS_CA)")
	f.StringVar(&c.dataDir, "data-dir", "", "read address and credentials from a dev data dir")
	f.StringVarP(&c.namespace, "namespace", "n", env.Namespace, "namespace to call in; root if none (env SIGIL_NAMESPACE; client.json \"namespace\")")
	f.BoolVar(&c.json, "json", false, "print machine-readable JSON")
	return c
}

// dial connects to the server the flags name, over mTLS (package
// client, as any Go program would).
func (c *clientFlags) dial(ctx context.Context) (*client.Client, error) {
	return client.Dial(ctx, client.Options{Addr: c.addr, CertFile: c.cert, KeyFile: c.key, CAFile: c.ca, DataDir: c.dataDir, Namespace: c.namespace})
}

// call dials, runs fn with the connection, and closes it.
func (c *clientFlags) call(ctx context.Context, fn func(context.Context, *grpc.ClientConn) error) error {
	return c.use(ctx, func(cl *client.Client) error { return fn(ctx, cl.Conn()) })
}

// use dials, runs fn with the client, and closes it.
func (c *clientFlags) use(ctx context.Context, fn func(*client.Client) error) error {
	cl, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	return fn(cl)
}

// emit prints v as JSON under --json, else line.
func (c *clientFlags) emit(cmd *cobra.Command, v any, line string) error {
	if c.json {
		return printJSON(cmd.OutOrStdout(), v)
	}
	_, err := fmt.Fprintln(cmd.OutOrStdout(), line)
	return err
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
