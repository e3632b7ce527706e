package etcdstore_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/mtls"
	"github.com/sigil-hsm/sigil/internal/testutil/etcdtest"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
	"github.com/sigil-hsm/sigil/keyring/etcdstore"
	"github.com/sigil-hsm/sigil/keyring/storetest"
)

func TestCompareAndSwap(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s, err := etcdstore.Open(context.Background(), etcdstore.Config{Endpoints: c.Endpoints, Prefix: "/cas/"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.CompareAndSwap(t, s)
	storetest.Anchors(t, s)
	storetest.UpdateAnchor(t, s)
}

// An etcd that requires client certificates: the store connects with the
// client configuration `store.tls` builds, and without a client
// certificate, or with a CA that does not sign etcd's, it is refused at
// start with Unavailable instead of hanging.
func TestClientTLS(t *testing.T) {
	pki, err := mtls.EnsureDevPKI(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	c := etcdtest.StartTLS(t, 1, etcdtest.ClientTLS{Cert: pki.ServerCert, Key: pki.ServerKey, ClientCA: pki.CA})
	good, err := mtls.ClientConfig(pki.ClientCert, pki.ClientKey, pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	s, err := etcdstore.Open(context.Background(), etcdstore.Config{Endpoints: c.Endpoints, Prefix: "/tls/", TLS: good})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.CompareAndSwap(t, s)

	other, err := mtls.EnsureDevPKI(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	noCert := good.Clone()
	noCert.Certificates = nil
	foreignCert, err := mtls.ClientConfig(other.ClientCert, other.ClientKey, pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	untrusted, err := mtls.ClientConfig(pki.ClientCert, pki.ClientKey, other.CA)
	if err != nil {
		t.Fatal(err)
	}
	for _, c2 := range []struct {
		name, cause string
		cfg         *tls.Config
	}{
		{"no client certificate", "certificate required", noCert},
		{"a certificate from another CA", "unknown certificate authority", foreignCert},
		{"a CA that did not sign etcd's", "signed by unknown authority", untrusted},
	} {
		start := time.Now()
		_, err := etcdstore.Open(context.Background(), etcdstore.Config{Endpoints: c.Endpoints, TLS: c2.cfg})
		if !errs.Is(err, errs.Unavailable) || !strings.Contains(fmt.Sprint(err), c2.cause) || time.Since(start) > 10*time.Second {
			t.Errorf("%s: %v after %v, want Unavailable naming %q within the start-up probe", c2.name, err, time.Since(start), c2.cause)
		}
	}
}

func TestUnreachableAtStartNamesTheEndpoints(t *testing.T) {
	_, err := etcdstore.Open(context.Background(), etcdstore.Config{Endpoints: []string{"http://127.0.0.1:1"}})
	if !errs.Is(err, errs.Unavailable) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("%v", err)
	}
}

// A snapshot of one prefix restores under another, and across stores: a
// bbolt backup restores into etcd (the key records are the same JSON).
func TestSnapshots(t *testing.T) {
	c := etcdtest.Start(t, 1)
	open := func(prefix string) *etcdstore.Store {
		s, err := etcdstore.Open(context.Background(), etcdstore.Config{Endpoints: c.Endpoints, Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	storetest.Snapshots(t, open("/from/"), open("/into/"))
	bolt, err := boltstore.Open(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	storetest.Snapshots(t, bolt, open("/frombolt/"))
}
