// Package etcdtest runs a real etcd cluster inside a test process
// (go.etcd.io/etcd/server/v3/embed) on loopback ports, so the replicated
// keyring is tested against etcd itself, not a mock.
package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Cluster is a running embedded cluster.
type Cluster struct {
	Members   []*embed.Etcd
	Endpoints []string
}

func freePort(tb testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start runs an n-member cluster, stopped when the test ends.
func Start(tb testing.TB, n int) *Cluster {
	tb.Helper()
	cfgs := make([]*embed.Config, n)
	var initial []string
	c := &Cluster{}
	for i := range cfgs {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = tb.TempDir()
		cfg.LogLevel = "error"
		peer, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", freePort(tb)))
		client, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", freePort(tb)))
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
		cfg.TickMs, cfg.ElectionMs = 50, 500
		initial = append(initial, cfg.Name+"="+peer.String())
		c.Endpoints = append(c.Endpoints, client.String())
		cfgs[i] = cfg
	}
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
	for range n {
		select {
		case e := <-started:
			c.Members = append(c.Members, e)
		case err := <-errc:
			tb.Fatal(err)
		}
	}
	tb.Cleanup(c.Stop)
	for _, e := range c.Members {
		select {
		case <-e.Server.ReadyNotify():
		case <-time.After(20 * time.Second):
			tb.Fatal("embedded etcd did not become ready")
		}
	}
	return c
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

// Stop stops every member.
func (c *Cluster) Stop() {
	for i := range c.Members {
		c.Kill(i)
	}
}
