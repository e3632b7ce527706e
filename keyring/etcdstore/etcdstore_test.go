package etcdstore_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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

// Rewrites through etcd share transactions (group commit) and keep the
// store contract: concurrent increments on two clients (replicas) lose
// none; a rewrite whose fn fails or panics fails alone; one whose caller
// gave up is not written and fails with its context's error; one etcd
// refuses (a value past its request limit) fails alone.
func TestGroupCommit(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	open := func() *etcdstore.Store {
		s, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: c.Endpoints, Prefix: "/group/"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	storetest.GroupCommit(t, a)
	var wg sync.WaitGroup
	gone, cancel := context.WithCancel(ctx)
	cancel()
	errsOf := make([]error, 64)
	for i := range errsOf {
		wg.Go(func() {
			s, ctx, name, value := a, ctx, "racing", func(old []byte) []byte {
				n, _ := strconv.Atoi(string(old))
				return []byte(strconv.Itoa(n + 1))
			}
			switch i % 4 {
			case 1:
				s = b
			case 2:
				ctx = gone
			case 3: // beside the others, in their batch
				name, value = "big-"+strconv.Itoa(i), func([]byte) []byte { return make([]byte, 2<<20) }
			}
			errsOf[i] = s.UpdateAnchor(ctx, name, func(old []byte) ([]byte, error) { return value(old), nil })
		})
	}
	wg.Wait()
	for i, err := range errsOf {
		switch i % 4 {
		case 0, 1:
			if err != nil {
				t.Errorf("increment %d: %v", i, err)
			}
		case 2:
			if !errs.Is(err, errs.Canceled) {
				t.Errorf("rewrite %d, its caller gone: %v", i, err)
			}
		case 3:
			if err == nil {
				t.Errorf("rewrite %d of 2 MiB was taken", i)
			}
		}
	}
	if v, err := b.GetAnchor(ctx, "racing"); err != nil || string(v) != "32" {
		t.Fatalf("racing %q, %v: want 32", v, err)
	}
}
