package eth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/sigil-hsm/sigil/internal/approval"
	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
)

var (
	_ purpose.Reviewer    = Purpose{}
	_ purpose.Conditioned = Purpose{}
)

// Conditions implements purpose.Conditioned: a transaction can be held on
// its value, its recipient, and whether it replaces one signed before.
func (Purpose) Conditions() map[authz.Op][]string {
	return map[authz.Op][]string{OpSignTx: {authz.CondValueGTE, authz.CondToNotIn, authz.CondReplacement}}
}

// Review implements purpose.Reviewer. A transaction the key's policy
// refuses is not held (it is refused), so approvers never see one that
// could not run.
func (Purpose) Review(ctx context.Context, d purpose.Deps, _ string, req any, tested func(string) bool) (authz.Facts, []approval.Field, error) {
	switch r := req.(type) {
	case *sigilv1.SignTransactionRequest:
		return reviewTx(ctx, d, r, tested(authz.CondReplacement))
	case *sigilv1.SignMessageRequest:
		return authz.Facts{}, []approval.Field{{Name: "message", Value: describeBytes(r.GetMessage())}}, nil
	case *sigilv1.SignTypedDataRequest:
		td, hash, err := hashTypedData(r.GetTypedDataJson())
		if err != nil {
			return authz.Facts{}, nil, err
		}
		chain := "none"
		if td.Domain.ChainId != nil {
			chain = (*big.Int)(td.Domain.ChainId).String()
		}
		msg, _ := json.Marshal(td.Message)
		return authz.Facts{}, []approval.Field{
			{Name: "domain", Value: fmt.Sprintf("%q version %q, chain %s, contract %s", td.Domain.Name, td.Domain.Version, chain, td.Domain.VerifyingContract)},
			{Name: "primary type", Value: td.PrimaryType},
			{Name: "message", Value: string(msg)},
			{Name: "hash", Value: hash.Hex()},
		}, nil
	}
	return authz.Facts{}, nil, nil
}

// reviewTx reads a transaction's facts; whether it replaces one signed
// before (a read of the key's nonce record) only if replacement is asked.
func reviewTx(ctx context.Context, d purpose.Deps, r *sigilv1.SignTransactionRequest, replacement bool) (authz.Facts, []approval.Field, error) {
	u, err := unsignedOf(r)
	if err != nil {
		return authz.Facts{}, nil, err
	}
	k, err := d.Keys.Get(ctx, r.GetKeyId())
	if err != nil {
		return authz.Facts{}, nil, err
	}
	if err := Check(k, u); err != nil {
		return authz.Facts{}, nil, err
	}
	tx := u.Tx
	f := authz.Facts{Value: tx.Value()}
	to := "none (contract creation)"
	if tx.To() != nil {
		f.To, to = strings.ToLower(tx.To().Hex()), tx.To().Hex()
	}
	sum := []approval.Field{
		{Name: "from", Value: Address(k)},
		{Name: "chain", Value: u.ChainID.String()},
		{Name: "nonce", Value: strconv.FormatUint(tx.Nonce(), 10)},
		{Name: "to", Value: to},
		{Name: "value", Value: FormatETH(tx.Value())},
		{Name: "max fee", Value: FormatETH(MaxFee(tx)) + fmt.Sprintf(", gas %d", tx.Gas())},
		{Name: "data", Value: describeBytes(tx.Data())},
	}
	if call := erc20Call(tx); call != "" {
		sum = append(sum, approval.Field{Name: "erc-20", Value: call})
	}
	if r.GetSubmit() {
		sum = append(sum, approval.Field{Name: "on approval", Value: "signed and broadcast to the node (eth_sendTransaction)"})
	}
	if !replacement {
		return f, sum, nil
	}
	replaces, err := replaced(ctx, d, k, u)
	if err != nil {
		return authz.Facts{}, nil, err
	}
	if replaces != "" {
		f.Replacement = true
		sum = append(sum, approval.Field{Name: "replaces", Value: replaces})
	}
	return f, sum, nil
}

// replaced names the transaction first signed for u's nonce when u is a
// different one (a replacement), "" otherwise.
func replaced(ctx context.Context, d purpose.Deps, k *keyring.Key, u Unsigned) (string, error) {
	if d.Ledger == nil {
		return "", nil
	}
	rec, err := d.Ledger.ReadLedger(ctx, k.ID)
	if err != nil {
		return "", err
	}
	t, err := readNonces(rec)
	if err != nil {
		return "", err
	}
	e := t.chain(u.ChainID).Nonces[strconv.FormatUint(u.Tx.Nonce(), 10)]
	if e == nil || len(e.Signed) == 0 {
		return "", nil
	}
	hash := types.LatestSignerForChainID(u.ChainID).Hash(u.Tx).Hex()
	for _, s := range e.Signed {
		if s.Hash == hash {
			return "", nil // the identical transaction, signed again
		}
	}
	return "transaction " + e.Signed[0].Hash + " (same nonce)", nil
}

// oneETH is 10^18 wei.
var oneETH = new(big.Int).Exp(big.NewInt(10), big.NewInt(18), nil)

// FormatETH writes an amount of wei as ETH and wei: "1.5 ETH (1500000000000000000 wei)".
func FormatETH(wei *big.Int) string {
	q, r := new(big.Int).QuoRem(wei, oneETH, new(big.Int))
	frac := strings.TrimRight(fmt.Sprintf("%018s", r.String()), "0")
	eth := q.String()
	if frac != "" {
		eth += "." + frac
	}
	return fmt.Sprintf("%s ETH (%s wei)", eth, wei)
}

// The ERC-20 calls a summary decodes: transfer(address,uint256) and
// approve(address,uint256).
var (
	selTransfer = []byte{0xa9, 0x05, 0x9c, 0xbb}
	selApprove  = []byte{0x09, 0x5e, 0xa7, 0xb3}
)

// erc20Call decodes a transfer or approve call to the token contract the
// transaction is sent to; "" for anything else.
func erc20Call(tx *types.Transaction) string {
	data := tx.Data()
	if tx.To() == nil || len(data) != 4+64 || !bytes.Equal(data[4:16], make([]byte, 12)) {
		return ""
	}
	who, amount := common.BytesToAddress(data[16:36]), new(big.Int).SetBytes(data[36:68])
	switch {
	case bytes.Equal(data[:4], selTransfer):
		return fmt.Sprintf("transfer %s token units of %s to %s", amount, tx.To().Hex(), who.Hex())
	case bytes.Equal(data[:4], selApprove):
		return fmt.Sprintf("approve %s to spend %s token units of %s", who.Hex(), amount, tx.To().Hex())
	}
	return ""
}

// describeBytes summarises call data or a message: its length, and the
// text if it is short printable UTF-8, else its first bytes in hex.
func describeBytes(b []byte) string {
	const show = 64
	switch {
	case len(b) == 0:
		return "none"
	case len(b) <= show && utf8.Valid(b) && !bytes.ContainsFunc(b, func(r rune) bool { return r < 0x20 && r != '\n' }):
		return fmt.Sprintf("%d bytes: %q", len(b), b)
	case len(b) > show:
		return fmt.Sprintf("%d bytes: %s…", len(b), hexutil.Encode(b[:show]))
	}
	return fmt.Sprintf("%d bytes: %s", len(b), hexutil.Encode(b))
}

var _ purpose.Loosener = Purpose{}

// Loosens implements purpose.Loosener: the updated policy allows a chain,
// a recipient or a selector the old did not, raises a limit, or drops
// one (a rule removed).
func (Purpose) Loosens(old, updated any) bool {
	o, ok1 := old.(*Policy)
	n, ok2 := updated.(*Policy)
	if !ok1 || !ok2 || o == nil || n == nil {
		return true
	}
	return !subset(n.ChainIDs, o.ChainIDs) ||
		raised(o.MaxValue, n.MaxValue) || raised(o.MaxFee, n.MaxFee) || raised(o.DailyLimit, n.DailyLimit) ||
		widened(o.AllowTo, n.AllowTo) || widened(o.AllowSelectors, n.AllowSelectors) ||
		o.MaxNonceGap != nil && (n.MaxNonceGap == nil || *n.MaxNonceGap > *o.MaxNonceGap)
}

// raised: a limit set before is gone or higher.
func raised(old, updated *Wei) bool {
	return old != nil && (updated == nil || updated.Cmp(&old.Int) > 0)
}

// widened: a list that restricted (non-empty) no longer does, or admits
// something new.
func widened[T comparable](old, updated []T) bool {
	return len(old) > 0 && (len(updated) == 0 || !subset(updated, old))
}

func subset[T comparable](a, b []T) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
