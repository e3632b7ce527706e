package eth

import (
	"crypto"
	"crypto/ecdsa"
	"encoding/json"

	"github.com/ethereum/go-ethereum/common/hexutil"
	ethcrypto "github.com/ethereum/go-ethereum/crypto"
	"google.golang.org/grpc"

	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
	"github.com/sigil-hsm/sigil/signer"
)

// Name is the purpose's name.
const Name = "eth"

// The operations; GetAddress needs keys.read.
const (
	OpSignTx        authz.Op = "eth.sign_tx"
	OpSignMessage   authz.Op = "eth.sign_message"
	OpSignTypedData authz.Op = "eth.sign_typed_data"
)

// Purpose is the Ethereum purpose.
type Purpose struct{}

var _ purpose.Purpose = Purpose{}

func init() { purpose.Register(Purpose{}) }

// Name implements keyring.Purpose.
func (Purpose) Name() string { return Name }

// CheckAlgorithm: Ethereum keys are secp256k1.
func (Purpose) CheckAlgorithm(alg signer.Algorithm) error {
	if alg != signer.ES256K {
		return errs.New(errs.InvalidArgument, "purpose eth needs algorithm ES256K, not %s", alg)
	}
	return nil
}

// Rotation: never; the address is the key's identity.
func (Purpose) Rotation() keyring.Rotation { return keyring.RotateNever }

// DecodePolicy reads a stored spending policy.
func (Purpose) DecodePolicy(raw json.RawMessage) (any, error) {
	p := &Policy{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, p); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// NewPolicy takes the requested policy as it is; without one the key
// signs for no chain.
func (p Purpose) NewPolicy(requested any) (any, error) { return p.UpdatePolicy(nil, requested) }

// UpdatePolicy replaces the policy whole.
func (Purpose) UpdatePolicy(_, requested any) (any, error) {
	if requested == nil {
		return &Policy{}, nil
	}
	r, ok := requested.(*Policy)
	switch {
	case !ok:
		return nil, errs.New(errs.InvalidArgument, "an eth key's policy is a spending policy, not %T", requested)
	case r == nil:
		return &Policy{}, nil
	}
	return r, nil
}

// Attributes is the key's EIP-55 address.
func (Purpose) Attributes(pub crypto.PublicKey) (map[string]string, error) {
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, errs.New(errs.Internal, "eth key without a secp256k1 public key")
	}
	return map[string]string{"address": ethcrypto.PubkeyToAddress(*ec).Hex()}, nil
}

// Address returns eth key k's EIP-55 address.
func Address(k *keyring.Key) string { return k.Attributes["address"] }

// PolicyOf returns eth key k's spending policy (an empty one, which
// signs for no chain, if it has none).
func PolicyOf(k *keyring.Key) *Policy {
	if p, ok := k.Policy().(*Policy); ok {
		return p
	}
	return &Policy{}
}

// Operations implements purpose.Purpose.
func (Purpose) Operations() map[string]authz.Op {
	return map[string]authz.Op{
		sigilv1.EthereumService_GetAddress_FullMethodName:      authz.KeysRead,
		sigilv1.EthereumService_SignTransaction_FullMethodName: OpSignTx,
		sigilv1.EthereumService_SignMessage_FullMethodName:     OpSignMessage,
		sigilv1.EthereumService_SignTypedData_FullMethodName:   OpSignTypedData,
	}
}

// Payload is the transaction, message or typed data to sign.
func (Purpose) Payload(req any) []byte {
	switch r := req.(type) {
	case *sigilv1.SignTransactionRequest:
		if r.GetUnsignedRlp() != nil {
			return r.GetUnsignedRlp()
		}
		return r.GetTransactionJson()
	case *sigilv1.SignMessageRequest:
		return r.GetMessage()
	case *sigilv1.SignTypedDataRequest:
		return r.GetTypedDataJson()
	}
	return nil
}

// RequestedPolicy parses eth_policy; errors name the field.
func (Purpose) RequestedPolicy(req purpose.PolicyRequest) (any, error) {
	p := req.GetEthPolicy()
	if p == nil {
		return nil, nil
	}
	out := &Policy{ChainIDs: p.GetChainIds(), MaxNonceGap: p.MaxNonceGap}
	for _, id := range out.ChainIDs {
		if id == 0 {
			return nil, errs.New(errs.InvalidArgument, "chain-ids: 0 is not a chain ID")
		}
	}
	for _, w := range []struct {
		field, value string
		dst          **Wei
	}{{"max-value", p.GetMaxValue(), &out.MaxValue}, {"max-fee", p.GetMaxFee(), &out.MaxFee}, {"daily-limit", p.GetDailyLimit(), &out.DailyLimit}} {
		if w.value == "" {
			continue
		}
		v, err := ParseWei(w.field, w.value)
		if err != nil {
			return nil, err
		}
		*w.dst = v
	}
	for _, a := range p.GetAllowTo() {
		addr, err := ParseAddress("allow-to", a)
		if err != nil {
			return nil, err
		}
		out.AllowTo = append(out.AllowTo, addr)
	}
	for _, sel := range p.GetAllowSelectors() {
		b, err := ParseSelector(sel)
		if err != nil {
			return nil, err
		}
		out.AllowSelectors = append(out.AllowSelectors, b)
	}
	return out, nil
}

// Describe sets eth_policy and address.
func (Purpose) Describe(k *keyring.Key, out *sigilv1.Key) {
	p := PolicyOf(k)
	pp := &sigilv1.EthPolicy{ChainIds: p.ChainIDs, MaxNonceGap: p.MaxNonceGap}
	for _, w := range []struct {
		v   *Wei
		dst *string
	}{{p.MaxValue, &pp.MaxValue}, {p.MaxFee, &pp.MaxFee}, {p.DailyLimit, &pp.DailyLimit}} {
		if w.v != nil {
			*w.dst = w.v.String()
		}
	}
	for _, a := range p.AllowTo {
		pp.AllowTo = append(pp.AllowTo, a.Hex())
	}
	for _, sel := range p.AllowSelectors {
		pp.AllowSelectors = append(pp.AllowSelectors, hexutil.Encode(sel[:]))
	}
	out.EthPolicy, out.Address = pp, Address(k)
}

// Service implements purpose.Purpose.
func (Purpose) Service(d purpose.Deps) (*grpc.ServiceDesc, any) {
	return &sigilv1.EthereumService_ServiceDesc, &service{d: d, eth: &Signer{Ledger: d.Ledger, Now: d.Clock, Log: d.Log}}
}
