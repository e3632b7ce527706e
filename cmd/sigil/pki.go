package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/purpose/pki"
	"github.com/sigil-hsm/sigil/signer"
)

// DefaultConfig is where the package installs the server's configuration.
const DefaultConfig = "/etc/sigil/sigil.yaml"

// pkiFlags are what every pki command takes.
type pkiFlags struct{ config, key string }

func newPKI() *cobra.Command {
	cmd := &cobra.Command{Use: "pki", Short: "Run the mTLS PKI with a CA key in the HSM (on the server's host)",
		Long: `pki runs the certificate authority of Sigil's mTLS: its key is a Sigil
key of purpose pki in the configured backend, never exported. The
commands open the server's configuration, store and backends on its
host, as the server does (with a bbolt store, stop the server first),
and write each use of the CA key to the audit log as local:USER@HOST.`}
	f := &pkiFlags{}
	cmd.PersistentFlags().StringVar(&f.config, "config", DefaultConfig, "the server's configuration file")
	cmd.PersistentFlags().StringVar(&f.key, "key", "sigil-ca", "the CA key's ID")
	cmd.AddCommand(newPKIInit(f), newPKIIssue(f), newPKIRotate(f), newPKIBundle(f))
	return cmd
}

func newPKIInit(f *pkiFlags) *cobra.Command {
	var backend, alg, out string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "init [--backend NAME] [--ttl DUR] [--out FILE]",
		Short: "Create the CA key in the HSM and its self-signed certificate; writes the CA bundle",
		Long: `init creates the CA key (--key, purpose pki) in the backend and
self-signs its certificate, valid for --ttl, then writes the CA bundle
(--out): the file both the server's grpc.tls.client_ca and every client's
--tls-ca name. Run again, it changes nothing and writes the bundle again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withLocal(cmd.Context(), f, func(ctx context.Context, l *local, ca pki.CA) error {
				k, err := l.kr.Get(ctx, f.key)
				if errs.Is(err, errs.NotFound) {
					k, err = l.kr.Create(ctx, keyring.CreateSpec{ID: f.key, Purpose: pki.Name, Algorithm: signer.Algorithm(alg), Backend: backend,
						Description: "the mTLS certificate authority (sigil pki)"})
					if rerr := l.record("keys.create", f.key, 1, err, "pki init"); err == nil {
						err = rerr
					}
				}
				if err != nil {
					return err
				}
				if err := k.CheckPurpose(pki.Name); err != nil {
					return err
				}
				g, _ := k.Active()
				cert, made, err := ca.Certify(ctx, f.key, ttl)
				if made || err != nil {
					if rerr := l.record("pki.certify", f.key, g.Number, err, "the CA certificate of generation "+fmt.Sprint(g.Number)); err == nil {
						err = rerr
					}
				}
				if err != nil {
					return err
				}
				if err := writeBundle(ctx, ca, f.key, out); err != nil {
					return err
				}
				if left := time.Until(cert.NotAfter); left < 90*24*time.Hour {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: the CA certificate expires %s (in %v): sigil pki rotate, then deploy the bundle\n", cert.NotAfter.Format(time.RFC3339), left.Round(time.Hour))
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "CA %q (generation %d, %s, valid until %s) written to %s\n", cert.Subject.CommonName, g.Number, k.Algorithm, cert.NotAfter.Format(time.DateOnly), out)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&backend, "backend", "", "the backend the CA key lives in (the default backend if unset)")
	cmd.Flags().StringVar(&alg, "alg", "ES256", "the CA key's algorithm: ES256, ES384, RS256, PS256 or EdDSA")
	cmd.Flags().DurationVar(&ttl, "ttl", pki.DefaultCATTL, "the CA certificate's lifetime")
	cmd.Flags().StringVar(&out, "out", "ca.crt", "where to write the CA bundle (PEM)")
	return cmd
}

func newPKIIssue(f *pkiFlags) *cobra.Command {
	var servers, clients []string
	var outDir, csrFile string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "issue (--server DNS|IP … | --client IDENTITY …) --out-dir DIR [--ttl DUR] [--csr FILE]",
		Short: "Issue a server or client certificate signed by the CA key",
		Long: `issue certifies a server (its DNS names and IP addresses; default 90
days) or a client (its identities as the policy names them: spiffe://…
URIs or DNS names; default 30 days). The key pair is generated here
(ECDSA P-256, written 0600) unless --csr gives a PKCS#10 request, whose
key is certified and whose subject is ignored. Written to --out-dir:
server.crt and server.key (or client.crt and client.key) and ca.crt,
the CA bundle.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (len(servers) == 0) == (len(clients) == 0) {
				return errors.New("give --server names or --client identities (one kind)")
			}
			leaf, base := pki.Leaf{Usage: pki.Server, Names: servers, TTL: ttl}, "server"
			if len(clients) > 0 {
				leaf, base = pki.Leaf{Usage: pki.Client, Names: clients, TTL: ttl}, "client"
			}
			var keyPEM []byte
			var err error
			if leaf.Public, keyPEM, err = leafKey(csrFile); err != nil {
				return err
			}
			if err := os.MkdirAll(outDir, 0o755); err != nil {
				return err
			}
			return withLocal(cmd.Context(), f, func(ctx context.Context, l *local, ca pki.CA) error {
				cert, parent, err := ca.Issue(ctx, f.key, leaf)
				gen := 0
				if k, kerr := l.kr.Get(ctx, f.key); kerr == nil {
					if g, ok := k.Active(); ok {
						gen = g.Number
					}
				}
				what := fmt.Sprintf("%s certificate for %s", base, strings.Join(leaf.Names, ", "))
				if err == nil {
					what += fmt.Sprintf(", serial %x, until %s", cert.SerialNumber, cert.NotAfter.UTC().Format(time.RFC3339))
				}
				if rerr := l.record("pki.issue", f.key, gen, err, what); err == nil {
					err = rerr
				}
				if err != nil {
					return err
				}
				if err := writeFile(filepath.Join(outDir, base+".crt"), pki.PEM(cert, parent), 0o644); err != nil {
					return err
				}
				if keyPEM != nil {
					if err := writeFile(filepath.Join(outDir, base+".key"), keyPEM, 0o600); err != nil {
						return err
					}
				}
				if err := writeBundle(ctx, ca, f.key, filepath.Join(outDir, "ca.crt")); err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "issued %s in %s\n", what, outDir)
				return err
			})
		},
	}
	cmd.Flags().StringSliceVar(&servers, "server", nil, "the server's DNS names and IP addresses")
	cmd.Flags().StringSliceVar(&clients, "client", nil, "the client's identities: spiffe://… URIs or DNS names")
	cmd.Flags().StringVar(&outDir, "out-dir", "", "where to write the certificate, its key and the CA bundle")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "the certificate's lifetime (default 90 days for a server, 30 for a client; at most 397 days)")
	cmd.Flags().StringVar(&csrFile, "csr", "", "certify the key of this PKCS#10 request (PEM or DER) instead of generating one")
	cmd.MarkFlagRequired("out-dir")
	return cmd
}

func newPKIRotate(f *pkiFlags) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "rotate [--out FILE]",
		Short: "Start a new CA generation; the bundle holds old and new until the old is revoked",
		Long: `rotate makes a new generation of the CA key, which issues from now on,
and self-signs its certificate. The bundle written (--out) holds every
trusted generation's certificate: deploy it everywhere (server client_ca,
clients' --tls-ca) before re-issuing, then revoke the old generation
(sigil keys revoke) once no certificate it issued is in use.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withLocal(cmd.Context(), f, func(ctx context.Context, l *local, ca pki.CA) error {
				k, err := l.kr.Rotate(ctx, f.key, true)
				gen := 0
				if err == nil {
					g, _ := k.Active()
					gen = g.Number
				}
				if rerr := l.record("keys.rotate", f.key, gen, err, "pki rotate"); err == nil {
					err = rerr
				}
				if err != nil {
					return err
				}
				cert, _, err := ca.Certify(ctx, f.key, 0)
				if rerr := l.record("pki.certify", f.key, gen, err, fmt.Sprintf("the CA certificate of generation %d", gen)); err == nil {
					err = rerr
				}
				if err != nil {
					return err
				}
				if err := writeBundle(ctx, ca, f.key, out); err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "CA %q is generation %d now; bundle written to %s\n", cert.Subject.CommonName, gen, out)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&out, "out", "ca.crt", "where to write the CA bundle (PEM)")
	return cmd
}

func newPKIBundle(f *pkiFlags) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "bundle [--out FILE]",
		Short: "Write the CA bundle: the certificates of every trusted CA generation",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withLocal(cmd.Context(), f, func(ctx context.Context, _ *local, ca pki.CA) error {
				return writeBundle(ctx, ca, f.key, out)
			})
		},
	}
	cmd.Flags().StringVar(&out, "out", "ca.crt", "where to write the CA bundle (PEM)")
	return cmd
}

// withLocal runs fn over the server's keyring opened on its host.
func withLocal(ctx context.Context, f *pkiFlags, fn func(context.Context, *local, pki.CA) error) error {
	l, err := openLocal(ctx, f.config)
	if err != nil {
		return err
	}
	defer l.close()
	return fn(ctx, l, pki.CA{Keys: l.kr, Anchors: l.store})
}

// writeBundle writes the CA bundle of key id to path.
func writeBundle(ctx context.Context, ca pki.CA, id, path string) error {
	certs, err := ca.Bundle(ctx, id)
	if err != nil {
		return err
	}
	return writeFile(path, pki.PEM(certs...), 0o644)
}

// writeFile writes b to path with mode, replacing it whole and durably
// (a reader, the server reloading its TLS files, never sees half of it;
// a crash leaves the old file or the new). A file replaced keeps its
// owner: root renewing the service's server.key leaves it the service's.
func writeFile(path string, b []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".sigil-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(mode)
	if st, serr := os.Stat(path); err == nil && serr == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
			err = tmp.Chown(int(sys.Uid), int(sys.Gid))
		}
	}
	if err == nil {
		_, err = tmp.Write(b)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// leafKey is the key to certify: a CSR's (checked signature), or a new
// ECDSA P-256 key, returned with its PKCS#8 PEM.
func leafKey(csrFile string) (crypto.PublicKey, []byte, error) {
	if csrFile == "" {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, nil, err
		}
		return k.Public(), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	}
	b, err := os.ReadFile(csrFile)
	if err != nil {
		return nil, nil, err
	}
	if block, _ := pem.Decode(b); block != nil {
		if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
			return nil, nil, fmt.Errorf("--csr: a PEM %q block, not a CERTIFICATE REQUEST", block.Type)
		}
		b = block.Bytes
	}
	csr, err := x509.ParseCertificateRequest(b)
	if err != nil {
		return nil, nil, fmt.Errorf("--csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, fmt.Errorf("--csr: its signature does not verify (the requester does not hold the key): %w", err)
	}
	return csr.PublicKey, nil, nil
}
