package eth_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	ethcrypto "github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/rlp"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/testutil/backendtest"
	"github.com/sigil-hsm/sigil/internal/testutil/keyringtest"
	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
	"github.com/sigil-hsm/sigil/purpose/eth"
	"github.com/sigil-hsm/sigil/signer"
	"github.com/sigil-hsm/sigil/signer/pkcs11"
)

func TestMain(m *testing.M) { softhsmtest.Main(m, 14) }

type env struct {
	kr    *keyring.Keyring
	store *boltstore.Store
	svc   *eth.Signer
	hsm   *pkcs11.Backend
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	k := keyringtest.HSM(tb, keyringtest.Options{})
	return &env{kr: k.Keyring, store: k.Store, hsm: k.HSM, svc: &eth.Signer{Ledger: k.Store, Now: time.Now, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
}

func (e *env) key(tb testing.TB, id string, p *eth.Policy) keyring.Signing {
	tb.Helper()
	ctx := context.Background()
	if _, err := e.kr.Create(ctx, keyring.CreateSpec{ID: id, Purpose: eth.Name, Algorithm: signer.ES256K, Policy: p}); err != nil {
		tb.Fatal(err)
	}
	sg, err := e.kr.ForSigning(ctx, id, eth.Name)
	if err != nil {
		tb.Fatal(err)
	}
	return sg
}

func wantKind(t *testing.T, err error, k errs.Kind) {
	t.Helper()
	if !errs.Is(err, k) {
		t.Fatalf("got %v (kind %v), want kind %v", err, errs.KindOf(err), k)
	}
}

const dest = "0x3535353535353535353535353535353535353535"

// txJSON is an eth_signTransaction object of each type; that each one
// signs and recovers on every backend is the conformance suite's
// (internal/testutil/backendtest) Ethereum test.
var txJSON = backendtest.TransactionJSON

var mainnet = &eth.Policy{ChainIDs: []uint64{1}}

// SoftHSM's ECDSA gives high-S about half the time; Ethereum needs low-S.
func TestHighSSignaturesAreNormalised(t *testing.T) {
	e := newEnv(t)
	sg := e.key(t, "norm", mainnet)
	half := new(big.Int).Rsh(ethcrypto.S256().Params().N, 1)
	high := 0
	for i := range 64 {
		msg := []byte(fmt.Sprint("message ", i))
		raw, err := sg.Backend.Sign(context.Background(), sg.Generation.Ref, signer.ES256K, accounts.TextHash(msg))
		if err != nil {
			t.Fatal(err)
		}
		if new(big.Int).SetBytes(raw[32:]).Cmp(half) > 0 {
			high++
		}
		sig, err := e.svc.SignMessage(context.Background(), sg, msg)
		if err != nil {
			t.Fatal(err)
		}
		if new(big.Int).SetBytes(sig[32:64]).Cmp(half) > 0 || (sig[64] != 27 && sig[64] != 28) {
			t.Fatalf("signature %x is not low-S with v 27/28", sig)
		}
		sig[64] -= 27
		pub, err := ethcrypto.SigToPub(accounts.TextHash(msg), sig)
		if err != nil || ethcrypto.PubkeyToAddress(*pub).Hex() != eth.Address(sg.Key) {
			t.Fatalf("message signature recovers to another address: %v", err)
		}
	}
	t.Logf("%d of 64 raw SoftHSM signatures were high-S", high)
	if high == 0 {
		t.Fatal("no high-S signature in 64: the normalisation was not exercised")
	}
}

func TestTypedDataMailExample(t *testing.T) {
	e := newEnv(t)
	sg := e.key(t, "typed", mainnet)
	sig, hash, err := e.svc.SignTypedData(context.Background(), sg, []byte(backendtest.MailTypedData))
	if err != nil {
		t.Fatal(err)
	}
	if hash.Hex() != backendtest.MailDigest {
		t.Fatalf("digest %s, EIP-712 publishes %s", hash.Hex(), backendtest.MailDigest)
	}
	sig[64] -= 27
	pub, err := ethcrypto.SigToPub(hash[:], sig)
	if err != nil || ethcrypto.PubkeyToAddress(*pub).Hex() != eth.Address(sg.Key) {
		t.Fatalf("typed-data signature recovers to another address: %v", err)
	}
	other := e.key(t, "typed-l2", &eth.Policy{ChainIDs: []uint64{10}})
	_, _, err = e.svc.SignTypedData(context.Background(), other, []byte(backendtest.MailTypedData))
	wantKind(t, err, errs.FailedPrecondition) // its domain names chain 1
	for _, bad := range []string{`{}`, `[1]`, strings.Replace(backendtest.MailTypedData, `{"name":"wallet","type":"address"}`, `{"name":"wallet","type":"adress"}`, 1),
		strings.Replace(backendtest.MailTypedData, `"primaryType":"Mail"`, `"primaryType":"Letter"`, 1),
		strings.Replace(backendtest.MailTypedData, `"contents":"Hello, Bob!"`, `"contents":7`, 1)} {
		_, _, err := e.svc.SignTypedData(context.Background(), sg, []byte(bad))
		if !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("typed data %.60s…: %v", bad, err)
		}
	}
}

func TestPolicyTable(t *testing.T) {
	e := newEnv(t)
	wei := func(s string) *eth.Wei { w, _ := eth.ParseWei("x", s); return w }
	sel, _ := eth.ParseSelector("0xa9059cbb")
	strict := &eth.Policy{ChainIDs: []uint64{1, 10}, MaxValue: wei("1000"), MaxFee: wei("21000000000000"),
		AllowTo: []common.Address{common.HexToAddress(dest)}, AllowSelectors: [][4]byte{sel}}
	sg := e.key(t, "strict", strict)
	none := e.key(t, "no-chains", nil)
	tx := func(fields string) string {
		return `{"chainId":"0x1","nonce":"0x0","gas":"0x5208","maxFeePerGas":"0x3b9aca00","maxPriorityFeePerGas":"0x1"` + fields + `}`
	}
	cases := []struct {
		name string
		sg   keyring.Signing
		tx   string
		want errs.Kind // Internal means "allowed"
	}{
		{"allowed", sg, tx(`,"to":"` + dest + `","value":"0x3e8","data":"0xa9059cbb00"`), errs.Internal},
		{"no chain allowed yet", none, tx(`,"to":"` + dest + `"`), errs.FailedPrecondition},
		{"chain not allowed", sg, strings.Replace(tx(`,"to":"`+dest+`"`), `"chainId":"0x1"`, `"chainId":"0x89"`, 1), errs.FailedPrecondition},
		{"destination not allowed", sg, tx(`,"to":"0x0000000000000000000000000000000000000001"`), errs.PermissionDenied},
		{"contract creation", sg, tx(``), errs.PermissionDenied},
		{"value over max", sg, tx(`,"to":"` + dest + `","value":"0x3e9"`), errs.PermissionDenied},
		{"fee over max", sg, strings.Replace(tx(`,"to":"`+dest+`"`), `"gas":"0x5208"`, `"gas":"0x5209"`, 1), errs.PermissionDenied},
		{"selector not allowed", sg, tx(`,"to":"` + dest + `","data":"0x095ea7b3"`), errs.PermissionDenied},
		{"call data too short for a selector", sg, tx(`,"to":"` + dest + `","data":"0xa9"`), errs.PermissionDenied},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u, err := eth.ParseJSON([]byte(c.tx))
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.svc.SignTx(context.Background(), c.sg, u)
			if c.want == errs.Internal {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantKind(t, err, c.want)
			if !strings.Contains(err.Error(), "policy ") {
				t.Errorf("denial does not name its rule: %v", err)
			}
		})
	}
}

// failingBackend fails every Sign: the HSM is down after the policy passed.
type failingBackend struct{ *pkcs11.Backend }

func (failingBackend) Sign(context.Context, string, signer.Algorithm, []byte) ([]byte, error) {
	return nil, errs.New(errs.Unavailable, "injected: HSM down")
}

func TestDailyLimitUnderConcurrency(t *testing.T) {
	e := newEnv(t)
	const n = 7
	limit, _ := eth.ParseWei("limit", fmt.Sprint(n*1000))
	sg := e.key(t, "daily", &eth.Policy{ChainIDs: []uint64{1}, DailyLimit: limit})
	pay := `{"chainId":"0x1","nonce":"0x0","to":"` + dest + `","value":"0x3e8","gas":"0x5208","maxFeePerGas":"0x1","maxPriorityFeePerGas":"0x1"}`
	u, _ := eth.ParseJSON([]byte(pay))

	// A failure after the reservation releases it.
	down := sg
	down.Backend = failingBackend{e.hsm}
	_, err := e.svc.SignTx(context.Background(), down, u)
	wantKind(t, err, errs.Unavailable)

	var ok, denied atomic.Int32
	var wg sync.WaitGroup
	for i := range 50 { // 50 different transactions (nonces)
		wg.Go(func() {
			ui, _ := eth.ParseJSON([]byte(strings.Replace(pay, `"nonce":"0x0"`, fmt.Sprintf(`"nonce":"0x%x"`, i+1), 1)))
			_, err := e.svc.SignTx(context.Background(), sg, ui)
			switch {
			case err == nil:
				ok.Add(1)
			case errs.Is(err, errs.PermissionDenied) && strings.Contains(err.Error(), "daily limit"):
				denied.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != n || denied.Load() != 50-n {
		t.Fatalf("%d signed, %d denied; want exactly %d signed", ok.Load(), denied.Load(), n)
	}
	// The count survives a restart of the store.
	path := e.store.Path()
	e.store.Close()
	s2, err := boltstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	rec, err := s2.ReadLedger(context.Background(), "daily")
	if err != nil || keyring.Spent(rec.Spends, time.Now(), eth.DailyWindow).Cmp(&limit.Int) != 0 {
		t.Fatalf("after reopening the store the limit is not spent: %v", err)
	}
	// A day later the window has moved on.
	if keyring.Spent(rec.Spends, time.Now().Add(eth.DailyWindow+time.Second), eth.DailyWindow).Sign() != 0 {
		t.Fatal("a day later the spends still count")
	}
}

// The nonce guard: one nonce, one transaction. A different transaction
// for a signed nonce is refused, a speed-up and a cancel are not, an
// identical retry gets identical bytes, a failure frees the nonce, and of
// 50 concurrent different transactions with one nonce exactly one is
// signed.
func TestNonceGuard(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	gap := uint64(10)
	sg := e.key(t, "guarded", &eth.Policy{ChainIDs: []uint64{1, 10}, MaxNonceGap: &gap})
	tx := func(nonce int, to, value, fee string) eth.Unsigned {
		u, err := eth.ParseJSON([]byte(fmt.Sprintf(`{"chainId":"0x1","nonce":"0x%x","to":"%s","value":"%s","gas":"0x5208","maxFeePerGas":"%s","maxPriorityFeePerGas":"0x1"}`, nonce, to, value, fee)))
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	first, err := e.svc.SignTx(ctx, sg, tx(0, dest, "0x10", "0x2"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.svc.SignTx(ctx, sg, tx(0, dest, "0x10", "0x2"))
	if err != nil || !bytes.Equal(again.Raw, first.Raw) {
		t.Fatalf("an identical retry: %v, same bytes %v", err, bytes.Equal(again.Raw, first.Raw))
	}
	other := "0x4545454545454545454545454545454545454545"
	_, err = e.svc.SignTx(ctx, sg, tx(0, other, "0x10", "0x2"))
	if wantKind(t, err, errs.FailedPrecondition); !strings.Contains(err.Error(), first.Hash.Hex()) && !strings.Contains(err.Error(), "was signed for") {
		t.Errorf("the refusal does not name the earlier transaction: %v", err)
	}
	_, err = e.svc.SignTx(ctx, sg, tx(0, dest, "0x11", "0x2")) // another value
	wantKind(t, err, errs.FailedPrecondition)
	if _, err := e.svc.SignTx(ctx, sg, tx(0, dest, "0x10", "0x3")); err != nil {
		t.Fatalf("a speed-up: %v", err)
	}
	if _, err := e.svc.SignTx(ctx, sg, tx(0, eth.Address(sg.Key), "0x0", "0x4")); err != nil {
		t.Fatalf("a cancel: %v", err)
	}
	// The same nonce on another chain is another nonce.
	u10, _ := eth.ParseJSON([]byte(`{"chainId":"0xa","nonce":"0x0","to":"` + other + `","value":"0x1","gas":"0x5208","maxFeePerGas":"0x2","maxPriorityFeePerGas":"0x1"}`))
	if _, err := e.svc.SignTx(ctx, sg, u10); err != nil {
		t.Fatalf("nonce 0 on chain 10: %v", err)
	}
	// max-nonce-gap.
	_, err = e.svc.SignTx(ctx, sg, tx(12, dest, "0x1", "0x2"))
	wantKind(t, err, errs.FailedPrecondition)
	// A failed signature frees its nonce for another transaction.
	down := sg
	down.Backend = failingBackend{e.hsm}
	_, err = e.svc.SignTx(ctx, down, tx(1, dest, "0x1", "0x2"))
	wantKind(t, err, errs.Unavailable)
	if _, err := e.svc.SignTx(ctx, sg, tx(1, other, "0x1", "0x2")); err != nil {
		t.Fatalf("after a failed signature the nonce is still taken: %v", err)
	}
	// 50 different transactions for one nonce, at once.
	var signed atomic.Int32
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			_, err := e.svc.SignTx(ctx, sg, tx(2, dest, fmt.Sprintf("0x%x", 100+i), "0x2"))
			switch {
			case err == nil:
				signed.Add(1)
			case !errs.Is(err, errs.FailedPrecondition) && !errs.Is(err, errs.Aborted): // taken, or in progress
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if signed.Load() != 1 {
		t.Fatalf("%d transactions signed for one nonce", signed.Load())
	}
}

// What the review of the nonce guard broke, each once: a failed
// replacement or a failed far nonce must not forget what was signed, nor
// give back its spend; the gap holds from the first transaction; a
// "cancel" is a plain transfer.
func TestNonceGuardRemembersThroughFailures(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	limit, _ := eth.ParseWei("limit", "1000")
	gap := uint64(10)
	sg := e.key(t, "remember", &eth.Policy{ChainIDs: []uint64{1}, DailyLimit: limit, MaxNonceGap: &gap})
	down := sg
	down.Backend = failingBackend{e.hsm}
	tx := func(nonce int, to, value, fee, extra string) eth.Unsigned {
		u, err := eth.ParseJSON([]byte(fmt.Sprintf(`{"chainId":"0x1","nonce":"0x%x","to":"%s","value":"%s","gas":"0x7530","maxFeePerGas":"%s","maxPriorityFeePerGas":"0x1"%s}`, nonce, to, value, fee, extra)))
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	other := "0x4545454545454545454545454545454545454545"
	_, err := e.svc.SignTx(ctx, sg, tx(11, dest, "0x1", "0x2", ""))
	wantKind(t, err, errs.FailedPrecondition)                                         // past the gap from nonce 0, with no history yet
	if _, err := e.svc.SignTx(ctx, sg, tx(0, dest, "0x3e8", "0x2", "")); err != nil { // the whole daily limit
		t.Fatal(err)
	}
	// A cancel and a speed-up that fail to sign: nonce 0 stays signed,
	// its spend stays counted.
	_, err = e.svc.SignTx(ctx, down, tx(0, eth.Address(sg.Key), "0x0", "0x3", ""))
	wantKind(t, err, errs.Unavailable)
	_, err = e.svc.SignTx(ctx, down, tx(0, dest, "0x3e8", "0x4", ""))
	wantKind(t, err, errs.Unavailable)
	_, err = e.svc.SignTx(ctx, sg, tx(0, other, "0x3e8", "0x2", ""))
	wantKind(t, err, errs.FailedPrecondition)
	_, err = e.svc.SignTx(ctx, sg, tx(1, other, "0x1", "0x2", ""))
	if !errs.Is(err, errs.PermissionDenied) || !strings.Contains(err.Error(), "daily limit") {
		t.Fatalf("after failed replacements the spend was given back: %v", err)
	}
	// A far nonce that fails does not move the window.
	_, err = e.svc.SignTx(ctx, down, tx(9, dest, "0x0", "0x2", ""))
	wantKind(t, err, errs.Unavailable)
	_, err = e.svc.SignTx(ctx, sg, tx(0, other, "0x0", "0x2", ""))
	wantKind(t, err, errs.FailedPrecondition)
	// A "cancel" with an access list is no cancel.
	_, err = e.svc.SignTx(ctx, sg, tx(0, eth.Address(sg.Key), "0x0", "0x5", `,"accessList":[{"address":"`+other+`","storageKeys":[]}]`))
	wantKind(t, err, errs.FailedPrecondition)
}

func TestBadTransactions(t *testing.T) {
	base := txJSON["1559"]
	jsonCases := map[string]string{
		"malformed":         `{"chainId":`,
		"not an object":     `["0x1"]`,
		"unknown field":     strings.Replace(base, `"nonce"`, `"nonse"`, 1),
		"signed":            strings.Replace(base, `{`, `{"r":"0x1","s":"0x1","v":"0x1",`, 1),
		"missing chain ID":  strings.Replace(base, `"chainId":"0x1",`, ``, 1),
		"zero chain ID":     strings.Replace(base, `"chainId":"0x1"`, `"chainId":"0x0"`, 1),
		"unknown type":      strings.Replace(base, `{`, `{"type":"0x7",`, 1),
		"type and fields":   strings.Replace(base, `{`, `{"type":"0x0",`, 1),
		"negative value":    strings.Replace(base, `"value":"0x2"`, `"value":"-0x2"`, 1),
		"overflowing value": strings.Replace(base, `"value":"0x2"`, `"value":"0x1`+strings.Repeat("0", 64)+`"`, 1),
		"missing gas":       strings.Replace(base, `"gas":"0x5208",`, ``, 1),
		"data and input":    strings.Replace(base, `"data":"0xa9059cbb"`, `"data":"0x01","input":"0x02"`, 1),
		"oversize data":     strings.Replace(base, `"data":"0xa9059cbb"`, `"data":"0x`+strings.Repeat("ab", eth.MaxDataBytes+1)+`"`, 1),
		"duplicate field":   strings.Replace(base, `{`, `{"nonce":"0x5",`, 1),
		"bad address":       strings.Replace(base, dest, "0x1234", 1),
		"blob without to":   strings.Replace(txJSON["4844"], `"to":"`+dest+`",`, ``, 1),
		"sidecar":           strings.Replace(txJSON["4844"], `{`, `{"blobs":["0x00"],`, 1),
		"quantity not hex":  strings.Replace(base, `"nonce":"0x2"`, `"nonce":2`, 1),
	}
	for name, js := range jsonCases {
		if _, err := eth.ParseJSON([]byte(js)); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("%s: got %v, want InvalidArgument", name, err)
		}
	}
	u, _ := eth.ParseJSON([]byte(base))
	signed := u.Tx
	k, _ := ethcrypto.GenerateKey()
	signed, _ = types.SignTx(signed, types.LatestSignerForChainID(big.NewInt(1)), k)
	raw, _ := signed.MarshalBinary()
	for name, b := range map[string][]byte{"empty": nil, "garbage": {0xde, 0xad}, "unknown type": {0x07, 0xc0}, "signed": raw, "truncated": raw[:len(raw)/2]} {
		if _, err := eth.ParseRLP(b); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("RLP %s: got %v, want InvalidArgument", name, err)
		}
	}
	legacy, _ := eth.ParseJSON([]byte(txJSON["legacy"]))
	signedLegacy, _ := types.SignTx(legacy.Tx, types.NewEIP155Signer(big.NewInt(1)), k)
	raw, _ = signedLegacy.MarshalBinary()
	if _, err := eth.ParseRLP(raw); !errs.Is(err, errs.InvalidArgument) || !strings.Contains(err.Error(), "signed") {
		t.Errorf("signed legacy RLP: %v", err)
	}
}

func TestFromMustBeTheKeysAddress(t *testing.T) {
	e := newEnv(t)
	sg := e.key(t, "from", mainnet)
	u, err := eth.ParseJSON([]byte(strings.Replace(txJSON["1559"], `{`, `{"from":"0x0000000000000000000000000000000000000001",`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.SignTx(context.Background(), sg, u)
	wantKind(t, err, errs.InvalidArgument)
	u, _ = eth.ParseJSON([]byte(strings.Replace(txJSON["1559"], `{`, `{"from":"`+eth.Address(sg.Key)+`",`, 1)))
	if _, err := e.svc.SignTx(context.Background(), sg, u); err != nil {
		t.Fatal(err)
	}
}

// Fuzz targets: whatever a client sends, parsing gives a transaction or
// InvalidArgument, never a panic; and what parses, re-encodes and parses
// again to the same signing hash.
func FuzzParseJSON(f *testing.F) {
	for _, js := range txJSON {
		f.Add([]byte(js))
	}
	f.Add([]byte(`{"chainId":"0x1","nonce":"0x0","gas":"0x0","authorizationList":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := eth.ParseJSON(b)
		if err != nil {
			if !errs.Is(err, errs.InvalidArgument) {
				t.Fatalf("kind %v: %v", errs.KindOf(err), err)
			}
			return
		}
		types.LatestSignerForChainID(u.ChainID).Hash(u.Tx)
	})
}

func FuzzParseRLP(f *testing.F) {
	for _, js := range txJSON {
		u, _ := eth.ParseJSON([]byte(js))
		f.Add(backendtest.UnsignedRLP(u))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := eth.ParseRLP(b)
		if err != nil {
			if !errs.Is(err, errs.InvalidArgument) {
				t.Fatalf("kind %v: %v", errs.KindOf(err), err)
			}
			return
		}
		types.LatestSignerForChainID(u.ChainID).Hash(u.Tx)
	})
}

func FuzzTypedData(f *testing.F) {
	f.Add([]byte(backendtest.MailTypedData))
	f.Add([]byte(`{"types":{"EIP712Domain":[]},"primaryType":"EIP712Domain","domain":{},"message":{}}`))
	e := newEnv(f)
	sg := e.key(f, "fuzz", mainnet)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, err := e.svc.SignTypedData(context.Background(), sg, b)
		if err != nil && !errs.Is(err, errs.InvalidArgument) && !errs.Is(err, errs.FailedPrecondition) {
			t.Fatalf("kind %v: %v", errs.KindOf(err), err)
		}
	})
}

// Quantities over 256 bits are refused however the transaction comes:
// go-ethereum's RLP decoding of legacy and access-list transactions takes
// any size, its JSON decoding does not.
func TestQuantitiesOver256BitsRefusedOnEveryPath(t *testing.T) {
	to := common.HexToAddress(dest)
	big256, big312 := new(big.Int).Lsh(big.NewInt(1), 256), new(big.Int).Lsh(big.NewInt(1), 312)
	one, chain := big.NewInt(1), big.NewInt(1)
	legacy := func(gasPrice, value *big.Int) []byte {
		b, _ := rlp.EncodeToBytes([]any{uint64(0), gasPrice, uint64(21000), to, value, []byte{}, chain, uint(0), uint(0)})
		return b
	}
	accessList := func(gasPrice, value *big.Int) []byte {
		b, _ := rlp.EncodeToBytes([]any{chain, uint64(0), gasPrice, uint64(21000), to, value, []byte{}, []any{}})
		return append([]byte{types.AccessListTxType}, b...)
	}
	if _, err := eth.ParseRLP(legacy(one, one)); err != nil {
		t.Fatalf("a sound legacy transaction: %v", err)
	}
	if _, err := eth.ParseRLP(accessList(one, one)); err != nil {
		t.Fatalf("a sound access-list transaction: %v", err)
	}
	for name, b := range map[string][]byte{
		"legacy value 2^256":         legacy(one, big256),
		"legacy gasPrice 2^312":      legacy(big312, one),
		"access-list value 2^256":    accessList(one, big256),
		"access-list gasPrice 2^312": accessList(big312, one),
	} {
		if _, err := eth.ParseRLP(b); !errs.Is(err, errs.InvalidArgument) || !strings.Contains(err.Error(), "256 bits") {
			t.Errorf("RLP %s: %v", name, err)
		}
	}
	for name, js := range map[string]string{
		"value 2^256":    `{"chainId":"0x1","nonce":"0x0","to":"` + dest + `","gas":"0x5208","gasPrice":"0x1","value":"0x1` + strings.Repeat("0", 64) + `"}`,
		"gasPrice 2^312": `{"chainId":"0x1","nonce":"0x0","to":"` + dest + `","gas":"0x5208","gasPrice":"0x1` + strings.Repeat("0", 78) + `","value":"0x1"}`,
	} {
		if _, err := eth.ParseJSON([]byte(js)); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("JSON %s: %v", name, err)
		}
	}
}

func TestRLPBombsAreRefused(t *testing.T) {
	nested := rlp.RawValue{0xc0}
	for range 5000 {
		nested, _ = rlp.EncodeToBytes([]rlp.RawValue{nested})
	}
	longList := bytes.Repeat([]byte{0x80}, eth.MaxTxBytes-8)
	huge, _ := rlp.EncodeToBytes([]rlp.RawValue{longList})
	for name, b := range map[string][]byte{
		"nested lists":          nested,
		"typed nested lists":    append([]byte{types.DynamicFeeTxType}, nested...),
		"a list of empty items": huge,
		"a length past the end": {0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"over the size limit":   make([]byte, eth.MaxTxBytes+1),
	} {
		if _, err := eth.ParseRLP(b); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// settleFails fails every UpdateLedger after the first n: the claim is
// written, the settle after the signature is not.
type settleFails struct {
	keyring.Ledger
	n     int
	calls atomic.Int32
}

func (l *settleFails) UpdateLedger(ctx context.Context, id string, fn func(*keyring.LedgerRecord) error) error {
	if int(l.calls.Add(1)) > l.n {
		return errs.New(errs.Unavailable, "injected: store went away")
	}
	return l.Ledger.UpdateLedger(ctx, id, fn)
}

// A signature whose settle could not be recorded is withheld: were it
// handed out, the lapsed claim would let another transaction take its
// nonce. The claim holds until its lease ends, then the nonce is free.
func TestNonceGuardWithholdsUnrecordedSignature(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sg := e.key(t, "unrecorded", mainnet)
	now := time.Now()
	failing := &settleFails{Ledger: e.store, n: 1}
	svc := &eth.Signer{Ledger: failing, Now: func() time.Time { return now }, Log: e.svc.Log}
	tx := func(to string) eth.Unsigned {
		u, err := eth.ParseJSON([]byte(`{"chainId":"0x1","nonce":"0x0","to":"` + to + `","value":"0x1","gas":"0x5208","maxFeePerGas":"0x2","maxPriorityFeePerGas":"0x1"}`))
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	out, err := svc.SignTx(ctx, sg, tx(dest))
	wantKind(t, err, errs.Unavailable)
	if out.Raw != nil {
		t.Fatal("an unrecorded signature was handed out")
	}
	other := "0x4545454545454545454545454545454545454545"
	healthy := &eth.Signer{Ledger: e.store, Now: func() time.Time { return now }, Log: e.svc.Log}
	_, err = healthy.SignTx(ctx, sg, tx(other))
	wantKind(t, err, errs.Aborted) // the claim still holds
	now = now.Add(3 * time.Minute)
	if _, err := healthy.SignTx(ctx, sg, tx(other)); err != nil {
		t.Fatalf("after the lease the nonce is still held: %v", err)
	}
}
