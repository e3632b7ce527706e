// Package gethtest runs a real Ethereum execution client for tests and
// the benchmark driver: go-ethereum's geth in --dev mode (bin/geth, built
// from the go-ethereum module by make eth-deps), on a free loopback port,
// mining a block as soon as a transaction arrives. Without the binary a
// test skips, except under CI=true, where it fails.
package gethtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
)

// Node is a running geth --dev.
type Node struct {
	URL string // its HTTP JSON-RPC endpoint
	// Dev is the node's prefunded, unlocked developer account.
	Dev string
}

func binary() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "bin", "geth")
}

// Available reports why geth cannot run, or nil.
func Available() error {
	_, err := os.Stat(binary())
	return err
}

var endpoint = regexp.MustCompile(`HTTP server started\s+endpoint=(\S+)`)

// Start runs geth --dev for a test, killed when it ends.
func Start(tb testing.TB) *Node {
	tb.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("geth is required under CI=true (make eth-deps): %v", err)
		}
		tb.Skipf("geth missing (make eth-deps): %v", err)
	}
	n, stop, err := Run(tb.TempDir(), 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(stop)
	return n
}

// Run runs geth --dev with its data in dir, for the benchmark driver;
// stop kills it. It makes a block every blockEvery (whole seconds), or
// with 0, one for each transaction as it comes (what tests waiting for
// receipts want).
func Run(dir string, blockEvery time.Duration) (*Node, func(), error) {
	cmd := exec.Command(binary(), "--dev", "--dev.period", strconv.Itoa(int(blockEvery/time.Second)), "--datadir", dir, "--ipcdisable", "--nodiscover", "--maxpeers", "0",
		"--http", "--http.addr", "127.0.0.1", "--http.port", "0", "--http.api", "eth,net,web3", "--authrpc.port", "0",
		"--port", "0", "--verbosity", "3")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() { cmd.Process.Kill(); <-exited }
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := endpoint.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	var addr string
	select {
	case addr = <-found:
	case <-exited:
		return nil, nil, fmt.Errorf("geth exited while starting")
	case <-time.After(60 * time.Second):
		stop()
		return nil, nil, fmt.Errorf("geth did not start in 60 s")
	}
	n := &Node{URL: "http://" + strings.TrimPrefix(addr, "http://")}
	var accounts []string
	for end := time.Now().Add(30 * time.Second); len(accounts) == 0 && time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		n.call(&accounts, "eth_accounts")
	}
	if len(accounts) == 0 {
		stop()
		return nil, nil, fmt.Errorf("geth --dev has no developer account")
	}
	n.Dev = accounts[0]
	return n, stop, nil
}

// Call runs method on the node and decodes its result into out.
func (n *Node) Call(tb testing.TB, out any, method string, params ...any) error {
	tb.Helper()
	return n.call(out, method, params...)
}

func (n *Node) call(out any, method string, params ...any) error {
	if params == nil {
		params = []any{}
	}
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, n.URL, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var r struct {
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("%s: %s", method, raw)
	}
	if r.Error != nil {
		return fmt.Errorf("%s: %s", method, r.Error.Message)
	}
	if out != nil {
		return json.Unmarshal(r.Result, out)
	}
	return nil
}

// Fund sends wei from the developer account to addr and waits until it
// is mined.
func (n *Node) Fund(tb testing.TB, addr string, wei *big.Int) {
	tb.Helper()
	if err := n.FundErr(addr, wei); err != nil {
		tb.Fatal(err)
	}
}

// FundErr is Fund for the benchmark driver.
func (n *Node) FundErr(addr string, wei *big.Int) error {
	var hash string
	if err := n.call(&hash, "eth_sendTransaction", map[string]any{"from": n.Dev, "to": addr, "value": hexutil.EncodeBig(wei)}); err != nil {
		return fmt.Errorf("funding %s: %v", addr, err)
	}
	// Mined, and the balance there to see: a busy node answered a
	// receipt before the state a send is checked against had the value.
	var receipt map[string]any
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if receipt == nil {
			if err := n.call(&receipt, "eth_getTransactionReceipt", hash); err != nil || receipt == nil {
				continue
			}
			if receipt["status"] != "0x1" {
				return fmt.Errorf("funding %s: the transaction failed: %v", addr, receipt)
			}
		}
		var balance hexutil.Big
		if err := n.call(&balance, "eth_getBalance", addr, "pending"); err == nil && balance.ToInt().Cmp(wei) >= 0 {
			return nil
		}
	}
	return fmt.Errorf("funding %s: not mined, or the balance not seen, in 30 s (receipt %v)", addr, receipt)
}

// Receipt waits for transaction hash to be mined and returns its receipt.
func (n *Node) Receipt(tb testing.TB, hash string) map[string]any {
	tb.Helper()
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		var r map[string]any
		if err := n.Call(tb, &r, "eth_getTransactionReceipt", hash); err == nil && r != nil {
			return r
		}
	}
	tb.Fatalf("transaction %s not mined in 30 s", hash)
	return nil
}
