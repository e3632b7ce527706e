// Package ethrpc_test signs through Sigil's Ethereum JSON-RPC endpoint
// with clients nobody here wrote: go-ethereum's accounts/external (what
// geth --signer uses to talk to clef) and go-ethereum's rpc client
// calling Web3Signer's eth1 methods, over mTLS, against a real server.
package ethrpc_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/accounts/external"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	ethcrypto "github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/rpc"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"

	"github.com/sigil-hsm/sigil/internal/testutil/backendtest"
	"github.com/sigil-hsm/sigil/internal/testutil/crosscheck"
	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server/servertest"
)

func TestMain(m *testing.M) { softhsmtest.Main(m, 24) }

const policy = `
rules:
  - identity: spiffe://example.org/ops
    keys: ["*"]
    allow: [keys.admin, keys.read]
  - identity: spiffe://example.org/treasury
    keys: ["treasury-*"]
    allow: [eth.sign_tx, eth.sign_message, eth.sign_typed_data]
`

type env struct {
	*servertest.MTLS
	url    string
	client *http.Client // the treasury's
	addr   map[string]common.Address
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{MTLS: servertest.NewMTLS(t, policy), addr: map[string]common.Address{}}
	e.url = "https://" + e.EthRPC
	ops := sigilv1.NewKeyServiceClient(e.Client(t, "spiffe://example.org/ops"))
	eth := sigilv1.NewEthereumServiceClient(e.Client(t, "spiffe://example.org/ops"))
	for id, p := range map[string]*sigilv1.EthPolicy{
		"treasury-1": {ChainIds: []uint64{1}, MaxValue: "1000000000000000000"},
		"treasury-2": {ChainIds: []uint64{1}},
		"other-1":    {ChainIds: []uint64{1}},
	} {
		if _, err := ops.CreateKey(context.Background(), &sigilv1.CreateKeyRequest{Id: id, Algorithm: "ES256K", Purpose: "eth", EthPolicy: p}); err != nil {
			t.Fatal(err)
		}
		a, err := eth.GetAddress(context.Background(), &sigilv1.GetAddressRequest{KeyId: id})
		if err != nil {
			t.Fatal(err)
		}
		e.addr[id] = common.HexToAddress(a.GetAddress())
	}
	cert := e.CA.Issue(t, "spiffe://example.org/treasury", false, farFuture())
	e.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.CA.Pool, Certificates: []tls.Certificate{cert}}}}
	return e
}

func recovers(t *testing.T, hash, sig []byte) common.Address {
	t.Helper()
	rs := append([]byte{}, sig...)
	if rs[64] >= 27 {
		rs[64] -= 27
	}
	pub, err := ethcrypto.SigToPub(hash, rs)
	if err != nil {
		t.Fatal(err)
	}
	return ethcrypto.PubkeyToAddress(*pub)
}

// geth's external signer (clef's API): the accounts the identity may use,
// an EIP-1559 transaction and a text, signed and recovered.
func TestGethExternalSigner(t *testing.T) {
	e := newEnv(t)
	// accounts/external dials with http.DefaultTransport: give it the
	// treasury's certificate for this test.
	dt := http.DefaultTransport.(*http.Transport)
	old := dt.TLSClientConfig
	dt.TLSClientConfig = e.client.Transport.(*http.Transport).TLSClientConfig
	t.Cleanup(func() { dt.TLSClientConfig = old; dt.CloseIdleConnections() })

	signer, err := external.NewExternalSigner(e.url)
	if err != nil {
		t.Fatal(err)
	}
	var got []common.Address
	for _, a := range signer.Accounts() {
		got = append(got, a.Address)
	}
	if len(got) != 2 || !contains(got, e.addr["treasury-1"]) || !contains(got, e.addr["treasury-2"]) || contains(got, e.addr["other-1"]) {
		t.Fatalf("accounts %v", got)
	}
	acct := accounts.Account{Address: e.addr["treasury-1"]}
	to := common.HexToAddress("0x3535353535353535353535353535353535353535")
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), Nonce: 3, GasTipCap: big.NewInt(1e9), GasFeeCap: big.NewInt(2e9), Gas: 21000, To: &to, Value: big.NewInt(1e15)})
	signed, err := signer.SignTx(acct, tx, big.NewInt(1))
	if err != nil {
		t.Fatal(err)
	}
	if from, err := types.Sender(types.LatestSignerForChainID(big.NewInt(1)), signed); err != nil || from != acct.Address || signed.Nonce() != 3 {
		t.Fatalf("sender %s (%v)", from, err)
	}
	sig, err := signer.SignText(acct, []byte("hello"))
	if err != nil || recovers(t, accounts.TextHash([]byte("hello")), sig) != acct.Address {
		t.Fatalf("text: %v", err)
	}
	// The spending policy applies: over the max value, and another's key.
	tooBig := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), Nonce: 4, GasTipCap: big.NewInt(1), GasFeeCap: big.NewInt(2), Gas: 21000, To: &to, Value: new(big.Int).Mul(big.NewInt(2), big.NewInt(1e18))})
	if _, err := signer.SignTx(acct, tooBig, tooBig.ChainId()); err == nil || !strings.Contains(err.Error(), "max-value") {
		t.Errorf("a transaction over the max value: %v", err)
	}
	if _, err := signer.SignTx(accounts.Account{Address: e.addr["other-1"]}, tx, big.NewInt(1)); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("another identity's account: %v", err)
	}
}

func contains(list []common.Address, a common.Address) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

// Web3Signer's eth1 methods through go-ethereum's rpc client, batches,
// and what the endpoint refuses.
func TestWeb3SignerMethods(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c, err := rpc.DialOptions(ctx, e.url, rpc.WithHTTPClient(e.client))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addr := e.addr["treasury-1"]
	var accts []common.Address
	if err := c.Call(&accts, "eth_accounts"); err != nil || len(accts) != 2 {
		t.Fatalf("eth_accounts: %v %v", accts, err)
	}
	var raw hexutil.Bytes
	txObj := map[string]any{"from": addr.Hex(), "to": "0x3535353535353535353535353535353535353535", "value": "0x1", "gas": "0x5208",
		"maxFeePerGas": "0x2", "maxPriorityFeePerGas": "0x1", "nonce": "0x0", "chainId": "0x1"}
	if err := c.Call(&raw, "eth_signTransaction", txObj); err != nil {
		t.Fatal(err)
	}
	tx := new(types.Transaction)
	if err := tx.UnmarshalBinary(raw); err != nil {
		t.Fatal(err)
	}
	if from, err := types.Sender(types.LatestSignerForChainID(big.NewInt(1)), tx); err != nil || from != addr {
		t.Fatalf("eth_signTransaction: sender %s (%v)", from, err)
	}
	var sig hexutil.Bytes
	if err := c.Call(&sig, "eth_sign", addr, hexutil.Encode([]byte("hi"))); err != nil || recovers(t, accounts.TextHash([]byte("hi")), sig) != addr {
		t.Fatalf("eth_sign: %v", err)
	}
	var td apitypes.TypedData
	json.Unmarshal([]byte(backendtest.MailTypedData), &td)
	hash, _, _ := apitypes.TypedDataAndHash(td)
	if err := c.Call(&sig, "eth_signTypedData", addr, json.RawMessage(backendtest.MailTypedData)); err != nil || recovers(t, hash, sig) != addr {
		t.Fatalf("eth_signTypedData: %v", err)
	}
	if err := c.Call(&sig, "account_signTypedData", addr, json.RawMessage(backendtest.MailTypedData)); err != nil || recovers(t, hash, sig) != addr {
		t.Fatalf("account_signTypedData: %v", err)
	}
	// Refusals, each naming its rule.
	wrongChain := map[string]any{"from": addr.Hex(), "to": "0x3535353535353535353535353535353535353535", "value": "0x1", "gas": "0x5208",
		"maxFeePerGas": "0x2", "maxPriorityFeePerGas": "0x1", "nonce": "0x0", "chainId": "0x5"}
	if err := c.Call(&raw, "eth_signTransaction", wrongChain); err == nil || !strings.Contains(err.Error(), "chain-ids") {
		t.Errorf("wrong chain: %v", err)
	}
	if err := c.Call(&sig, "eth_sign", e.addr["other-1"], "0x01"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("an account of another identity: %v", err)
	}
	if err := c.Call(&sig, "eth_sign", "0x0000000000000000000000000000000000000001", "0x01"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("an address no key has: %v", err)
	}
	if err := c.Call(&sig, "account_signData", "application/x-clique-header", addr, "0x01"); err == nil {
		t.Error("a clique header was signed")
	}
	if err := c.Call(&sig, "eth_sendTransaction", txObj); err == nil || !strings.Contains(err.Error(), "ethrpc.upstream") {
		t.Errorf("eth_sendTransaction with no node behind the endpoint: %v", err)
	}
	if err := c.Call(&sig, "admin_peers"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("a method the endpoint lacks: %v", err)
	}

	post := func(body string) (int, string) {
		resp, err := e.client.Post(e.url, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post(`[{"jsonrpc":"2.0","id":1,"method":"account_version"},{"jsonrpc":"2.0","id":2,"method":"eth_accounts"}]`); code != 200 ||
		!strings.Contains(body, `"id":1,"result":"6.1.0"`) || !strings.Contains(body, `"id":2,"result":["0x`) {
		t.Errorf("batch: %d %s", code, body)
	}
	if _, body := post(`{"jsonrpc":"2.0","id":1,"method":"eth_accounts","method":"eth_sign"}`); !strings.Contains(body, "-32700") {
		t.Errorf("a duplicate member: %s", body)
	}
	if _, body := post(`[` + strings.Repeat(`{"jsonrpc":"2.0","id":1,"method":"account_version"},`, 40) + `{"jsonrpc":"2.0","id":1,"method":"account_version"}]`); !strings.Contains(body, "-32600") {
		t.Errorf("a batch of 41: %s", body)
	}
	if code, _ := post(`{"jsonrpc":"2.0","id":1,"method":"eth_sign","params":["` + strings.Repeat("a", 300<<10) + `"]}`); code != http.StatusRequestEntityTooLarge {
		t.Errorf("a body over the limit: %d", code)
	}
	// Without a client certificate there is no handshake.
	bare := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.CA.Pool}}}
	if _, err := bare.Post(e.url, "application/json", bytes.NewReader([]byte(`{}`))); err == nil {
		t.Error("a client without a certificate was served")
	}
	// An address no key has is answered exactly as another's account is.
	_, unknown := post(`{"jsonrpc":"2.0","id":1,"method":"eth_sign","params":["0x0000000000000000000000000000000000000001","0x01"]}`)
	_, foreign := post(`{"jsonrpc":"2.0","id":1,"method":"eth_sign","params":["` + e.addr["other-1"].Hex() + `","0x01"]}`)
	if unknown != foreign || !strings.Contains(unknown, "4100") {
		t.Errorf("an unknown address %s, another's %s", unknown, foreign)
	}
	// Not JSON: refused before it is read (a browser's cross-site form).
	if resp, err := e.client.Post(e.url, "text/plain", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"eth_accounts"}`)); err != nil || resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain: %v %v", resp, err)
	}
	// Every call is in the audit log, under its gRPC method.
	log, _ := os.ReadFile(e.AuditLog)
	if !strings.Contains(string(log), `"method":"/sigil.v1.EthereumService/SignTransaction"`) || !strings.Contains(string(log), `"code":"FailedPrecondition"`) ||
		!strings.Contains(string(log), `"operation":"eth.accounts"`) || !strings.Contains(string(log), `"operation":"eth.rpc.eth_sign","outcome":"denied"`) {
		t.Errorf("audit log:\n%s", log)
	}
}

func farFuture() time.Time { return time.Now().Add(time.Hour) }

// ethers v6's JsonRpcSigner (Node, with the treasury's certificate) signs
// a transaction and a message through the endpoint; ethers recovers both.
func TestEthersJsonRpcSigner(t *testing.T) {
	crosscheck.Require(t)
	e := newEnv(t)
	cert, key, ca := e.CA.WriteClient(t, t.TempDir(), "spiffe://example.org/treasury")
	if out := crosscheck.Run(t, "ethers-rpc.mjs", e.url, e.addr["treasury-1"].Hex(), cert, key, ca); strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("ethers: %s", out)
	}
}

// Dropping a CA from the client CA bundle cuts off its clients' open
// keep-alive connections too, on their next call.
func TestCAReloadReachesOpenConnections(t *testing.T) {
	e := newEnv(t)
	c, err := rpc.DialOptions(context.Background(), e.url, rpc.WithHTTPClient(e.client))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var sig hexutil.Bytes
	if err := c.Call(&sig, "eth_sign", e.addr["treasury-1"], "0x01"); err != nil {
		t.Fatal(err)
	}
	other := servertest.NewCA(t)
	os.WriteFile(e.Files.ClientCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Cert.Raw}), 0o644)
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := c.Call(&sig, "eth_sign", e.addr["treasury-1"], "0x01")
		if err != nil && strings.Contains(err.Error(), "Unauthenticated") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the connection still signs 5 s after its CA was dropped: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A JSON-RPC call past its identity's quota is refused with the delay to
// wait in the error's data, as gRPC's RetryInfo.
func TestQuotaOverJSONRPC(t *testing.T) {
	e := servertest.NewMTLS(t, `
rules:
  - identity: spiffe://example.org/ops
    keys: ["*"]
    allow: [keys.admin, keys.read]
  - identity: spiffe://example.org/treasury
    keys: ["treasury-*"]
    allow: [eth.sign_message]
    rate: 2/s
`)
	addr, client := treasuryKey(t, e, "treasury-q")
	body := `{"jsonrpc":"2.0","id":1,"method":"eth_sign","params":["` + addr + `","0x01"]}`
	var last string
	for range 6 {
		resp, err := client.Post("https://"+e.EthRPC, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = string(b)
	}
	if !strings.Contains(last, `"code":-32005`) || !strings.Contains(last, `"retry_after_ms":`) {
		t.Fatalf("the sixth call in a row at 2/s: %s", last)
	}
	// Listing accounts scans the keyring: it spends the same quota, that
	// of the rule letting the caller sign.
	time.Sleep(1500 * time.Millisecond)
	answers := ""
	for range 6 {
		resp, err := client.Post("https://"+e.EthRPC, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"eth_accounts","params":[]}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answers += string(b)
	}
	if !strings.Contains(answers, strings.ToLower(addr[2:])) && !strings.Contains(answers, addr) || !strings.Contains(answers, `"code":-32005`) {
		t.Fatalf("six account listings in a row at 2/s: %s", answers)
	}
}

// A JSON-RPC call an approval rule holds is refused with the approval ID
// in the error's data, and runs through the same dual control as gRPC:
// once approved, its result is the signature the call asked for.
func TestHeldOverJSONRPC(t *testing.T) {
	e := servertest.NewMTLS(t, policy+`
  - identity: spiffe://example.org/officer/*
    keys: ["treasury-*"]
    allow: [approvals.approve]
approvals:
  - operation: eth.sign_message
    keys: ["treasury-*"]
    approvers: [spiffe://example.org/officer/*]
    quorum: 1
`)
	ctx := context.Background()
	addr, client := treasuryKey(t, e, "treasury-h")
	resp, err := client.Post("https://"+e.EthRPC, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"eth_sign","params":["`+addr+`","0x68656c6c6f"]}`))
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Error struct {
			Code int
			Data struct {
				ApprovalID string `json:"approval_id"`
			}
		}
	}
	err = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if err != nil || out.Error.Code != -32002 || len(out.Error.Data.ApprovalID) != 32 {
		t.Fatalf("a held eth_sign: %+v %v", out, err)
	}
	officer := sigilv1.NewApprovalServiceClient(e.Client(t, "spiffe://example.org/officer/a"))
	got, err := officer.GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: out.Error.Data.ApprovalID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := officer.Approve(ctx, &sigilv1.ApproveRequest{ApprovalId: out.Error.Data.ApprovalID, PayloadSha256: got.GetApproval().GetPayloadSha256()}); err != nil {
		t.Fatal(err)
	}
	res, err := sigilv1.NewApprovalServiceClient(e.Client(t, "spiffe://example.org/treasury")).GetApprovalResult(ctx, &sigilv1.GetApprovalResultRequest{ApprovalId: out.Error.Data.ApprovalID})
	signed := &sigilv1.SignMessageResponse{}
	if err != nil || res.GetResult().UnmarshalTo(signed) != nil {
		t.Fatalf("result: %v %v", res, err)
	}
	if got := recovers(t, accounts.TextHash([]byte("hello")), signed.GetSignature()); got != common.HexToAddress(addr) {
		t.Fatalf("the approved signature recovers to %s", got)
	}
}

// treasuryKey makes eth key id (as ops) and returns its address and an
// HTTP client with the treasury's certificate.
func treasuryKey(t *testing.T, e *servertest.MTLS, id string) (string, *http.Client) {
	t.Helper()
	ctx := context.Background()
	if _, err := sigilv1.NewKeyServiceClient(e.Client(t, "spiffe://example.org/ops")).CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: id, Algorithm: "ES256K", Purpose: "eth"}); err != nil {
		t.Fatal(err)
	}
	a, err := sigilv1.NewEthereumServiceClient(e.Client(t, "spiffe://example.org/ops")).GetAddress(ctx, &sigilv1.GetAddressRequest{KeyId: id})
	if err != nil {
		t.Fatal(err)
	}
	cert := e.CA.Issue(t, "spiffe://example.org/treasury", false, farFuture())
	return a.GetAddress(), &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.CA.Pool, Certificates: []tls.Certificate{cert}}}}
}

// Without a node behind it, the endpoint answers eth_chainId and
// net_version itself from the one chain the caller's keys allow, so
// libraries that ask first (viem, ethers) work; eth_signTypedData_v3 is
// the v4 method under the name MetaMask's callers use.
func TestChainIDWithoutANode(t *testing.T) {
	e := newEnv(t)
	c, err := rpc.DialOptions(context.Background(), e.url, rpc.WithHTTPClient(e.client))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var id hexutil.Uint64
	if err := c.Call(&id, "eth_chainId"); err != nil || id != 1 {
		t.Fatalf("eth_chainId: %v %v", id, err)
	}
	var version string
	if err := c.Call(&version, "net_version"); err != nil || version != "1" {
		t.Fatalf("net_version: %q %v", version, err)
	}
	var sig hexutil.Bytes
	doc := json.RawMessage(backendtest.MailTypedData)
	if err := c.Call(&sig, "eth_signTypedData_v3", e.addr["treasury-1"], doc); err != nil || len(sig) != 65 {
		t.Fatalf("eth_signTypedData_v3: %x %v", sig, err)
	}
	// eth_sendTransaction is a method this endpoint does not offer
	// without a node (EIP-1193 4200), not a refusal (4100).
	var hash string
	err = c.Call(&hash, "eth_sendTransaction", map[string]string{"from": e.addr["treasury-1"].Hex(), "to": "0x3535353535353535353535353535353535353535", "value": "0x1"})
	var re rpc.Error
	if !errors.As(err, &re) || re.ErrorCode() != 4200 || !strings.Contains(err.Error(), "ethrpc.upstream") {
		t.Fatalf("eth_sendTransaction without a node: %v", err)
	}
}
