package eth_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/sigil-hsm/sigil/internal/testutil/backendtest"
	"github.com/sigil-hsm/sigil/internal/testutil/crosscheck"
	"github.com/sigil-hsm/sigil/purpose/eth"
)

// ethers (npm, v6) parses every signed transaction and recovers every
// message and typed-data signature to the key's address.
func TestEthersAgrees(t *testing.T) {
	crosscheck.Require(t)
	e := newEnv(t)
	sg := e.key(t, "ethers", mainnet)
	ctx := context.Background()
	type typed struct {
		Document  json.RawMessage `json:"document"`
		Signature string          `json:"signature"`
	}
	var in struct {
		Txs      []string            `json:"txs"`
		Messages []map[string]string `json:"messages"`
		Typed    []typed             `json:"typed"`
	}
	var hashes []string
	for _, js := range txJSON {
		u, err := eth.ParseJSON([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		out, err := e.svc.SignTx(ctx, sg, u)
		if err != nil {
			t.Fatal(err)
		}
		in.Txs, hashes = append(in.Txs, hexutil.Encode(out.Raw)), append(hashes, out.Hash.Hex())
	}
	for _, m := range []string{"hello", "Sigil signs, ethers checks", ""} {
		sig, err := e.svc.SignMessage(ctx, sg, []byte(m))
		if err != nil {
			t.Fatal(err)
		}
		in.Messages = append(in.Messages, map[string]string{"message": m, "signature": hexutil.Encode(sig)})
	}
	sig, _, err := e.svc.SignTypedData(ctx, sg, []byte(backendtest.MailTypedData))
	if err != nil {
		t.Fatal(err)
	}
	in.Typed = append(in.Typed, typed{json.RawMessage(backendtest.MailTypedData), hexutil.Encode(sig)})

	file := filepath.Join(t.TempDir(), "in.json")
	b, _ := json.Marshal(in)
	os.WriteFile(file, b, 0o600)
	var got struct {
		Txs []struct {
			From, Hash string
			Type       int
		} `json:"txs"`
		Messages []string `json:"messages"`
		Typed    []string `json:"typed"`
	}
	if err := json.Unmarshal(crosscheck.Run(t, "verify-eth.mjs", file), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Txs) != len(txJSON) || len(got.Messages) != 3 || len(got.Typed) != 1 {
		t.Fatalf("ethers answered %+v", got)
	}
	for i, tx := range got.Txs {
		if tx.From != eth.Address(sg.Key) || tx.Hash != hashes[i] {
			t.Errorf("tx %d (type %d): ethers says from %s hash %s; Sigil says %s %s", i, tx.Type, tx.From, tx.Hash, eth.Address(sg.Key), hashes[i])
		}
	}
	for _, a := range append(got.Messages, got.Typed...) {
		if a != eth.Address(sg.Key) {
			t.Errorf("ethers recovers %s, Sigil's address is %s", a, eth.Address(sg.Key))
		}
	}
}
