// Package etcdtest runs a real etcd cluster inside the process
// (go.etcd.io/etcd/server/v3/embed) on loopback ports, so the replicated
// keyring is tested and benchmarked against etcd itself, not a mock.
package etcdtest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

// Cluster is a running embedded cluster.
type Cluster struct {
	Members   []*embed.Etcd
	Endpoints []string
	cfgs      []*embed.Config
}

// freePorts finds n distinct free loopback ports. The listeners stay open
// until all n are found, so no port is handed out twice; another process
// may still take one before etcd binds it, which Run retries.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Start runs an n-member cluster, stopped when the test ends.
func Start(tb testing.TB, n int) *Cluster { return start(tb, n, nil) }

// ClientTLS is a server certificate for the client port and the CA whose
// client certificates the cluster accepts (and requires).
type ClientTLS struct {
	Cert, Key, ClientCA string
}

// StartTLS runs an n-member cluster whose clients must speak TLS and
// present a certificate from t.ClientCA; peers talk plain HTTP on loopback.
func StartTLS(tb testing.TB, n int, t ClientTLS) *Cluster { return start(tb, n, &t) }

func start(tb testing.TB, n int, t *ClientTLS) *Cluster {
	tb.Helper()
	c, err := run(tb.TempDir(), n, t)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Stop)
	return c
}

// Run runs an n-member cluster with its data under dir.
func Run(dir string, n int) (*Cluster, error) { return run(dir, n, nil) }

// run starts the cluster; a start that loses a port to another process is
// tried again on new ports.
func run(dir string, n int, t *ClientTLS) (*Cluster, error) {
	for attempt := 0; ; attempt++ {
		c, err := runOnce(fmt.Sprintf("%s/%d", dir, attempt), n, t)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || attempt == 4 {
			return c, err
		}
	}
}

func runOnce(dir string, n int, t *ClientTLS) (*Cluster, error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	cfgs := make([]*embed.Config, n)
	var initial []string
	c := &Cluster{}
	for i := range cfgs {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = fmt.Sprintf("%s/m%d", dir, i)
		cfg.LogLevel = "error"
		peer, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]))
		scheme := "http"
		if t != nil {
			scheme = "https"
			cfg.ClientTLSInfo = transport.TLSInfo{CertFile: t.Cert, KeyFile: t.Key, TrustedCAFile: t.ClientCA, ClientCertAuth: true}
		}
		client, _ := url.Parse(fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[2*i+1]))
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
		cfg.TickMs, cfg.ElectionMs = 50, 500
		initial = append(initial, cfg.Name+"="+peer.String())
		c.Endpoints = append(c.Endpoints, client.String())
		cfgs[i] = cfg
	}
	c.cfgs = cfgs
	for _, cfg := range cfgs {
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "sigil-test"
	}
	started := make(chan *embed.Etcd, n)
	errc := make(chan error, n)
	for _, cfg := range cfgs {
		go func() {
			e, err := embed.StartEtcd(cfg)
			if err != nil {
				errc <- err
				return
			}
			started <- e
		}()
	}
	var startErr error
	for range n {
		select {
		case e := <-started:
			c.Members = append(c.Members, e)
		case err := <-errc:
			startErr = errors.Join(startErr, err)
		}
	}
	if startErr != nil {
		c.Stop()
		return nil, startErr
	}
	// Members[i] is the member of cfgs[i] and Endpoints[i].
	slices.SortFunc(c.Members, func(a, b *embed.Etcd) int { return strings.Compare(a.Config().Name, b.Config().Name) })
	for _, e := range c.Members {
		select {
		case <-e.Server.ReadyNotify():
		case <-time.After(20 * time.Second):
			c.Stop()
			return nil, fmt.Errorf("embedded etcd did not become ready")
		}
	}
	return c, nil
}

// Leader is the index of the member that leads, or -1.
func (c *Cluster) Leader() int {
	for i, e := range c.Members {
		if e != nil && e.Server.Leader() == e.Server.MemberID() {
			return i
		}
	}
	return -1
}

// Kill stops member i.
func (c *Cluster) Kill(i int) {
	if c.Members[i] != nil {
		c.Members[i].Close()
		c.Members[i] = nil
	}
}

// Restart starts member i again, stopped by Kill, on its data and ports.
func (c *Cluster) Restart(i int) error {
	if c.Members[i] != nil {
		return nil
	}
	var err error
	for attempt := 0; attempt < 50; attempt++ { // its ports may linger a moment
		var e *embed.Etcd
		if e, err = embed.StartEtcd(c.cfgs[i]); err == nil {
			c.Members[i] = e
			select {
			case <-e.Server.ReadyNotify():
				return nil
			case <-time.After(20 * time.Second):
				return fmt.Errorf("restarted member %d did not become ready", i)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// Stop stops every member.
func (c *Cluster) Stop() {
	for i := range c.Members {
		c.Kill(i)
	}
}
