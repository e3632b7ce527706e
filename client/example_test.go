package client_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log"
	"math/big"
	"time"

	"github.com/sigil-hsm/sigil/client"
)

// Connect with the certificate files a deployment gives its service
// (or client.FromEnv(), or Options{DataDir: ".sigil-dev"} for a dev
// server).
func ExampleDial() {
	c, err := client.Dial(context.Background(), client.Options{
		Addr: "sigil.internal:7443", CertFile: "client.crt", KeyFile: "client.key", CAFile: "ca.crt",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}

// A raw key signs an X.509 certificate through Go's own x509 package.
func ExampleClient_Signer() {
	ctx := context.Background()
	c, err := client.Dial(ctx, client.FromEnv())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	s, err := c.Signer(ctx, "ca-key")
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "example"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.Public(), s)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(der) > 0)
}

// An auth server mints a JWT with a jwt key; Sigil sets alg, kid, iat and exp.
func ExampleClient_MintJWT() {
	ctx := context.Background()
	c, err := client.Dial(ctx, client.FromEnv())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	token, err := c.MintJWT(ctx, "auth-jwt", map[string]any{"sub": "alice", "aud": "api"}, 15*time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(token)
}
