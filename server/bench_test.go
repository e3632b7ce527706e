package server_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server/servertest"
)

// BenchmarkSignES256 is Sign through gRPC on loopback; compare it with
// signer/pkcs11's BenchmarkSignES256 (the same call without Sigil).
func BenchmarkSignES256(b *testing.B) {
	h := newHarness(b)
	if _, err := h.Keys.CreateKey(context.Background(), &sigilv1.CreateKeyRequest{Id: "bench", Algorithm: "ES256"}); err != nil {
		b.Fatal(err)
	}
	d := make([]byte, 32)
	rand.Read(d)
	req := &sigilv1.SignRequest{KeyId: "bench", Input: &sigilv1.SignRequest_Digest{Digest: d}}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.Sign.Sign(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSignTransactionUnderApprovalRules is SignTransaction over mTLS
// with the policy and audit log, as the treasury client, on a key no
// approval rule covers ("uncovered", the baseline) and on one a rule
// covers whose condition does not hold ("reviewed": the transaction is
// parsed and the nonce ledger read a second time, to decide it runs).
func BenchmarkSignTransactionUnderApprovalRules(b *testing.B) {
	e := servertest.NewMTLS(b, strings.Replace(approvalPolicy, `keys: ["treasury-*"]
    when: {value_gte: "1000000000000000000"}`, `keys: ["treasury-reviewed"]
    when: {value_gte: "1000000000000000000"}`, 1))
	ops := sigilv1.NewKeyServiceClient(e.Client(b, opsID))
	ec := sigilv1.NewEthereumServiceClient(e.Client(b, "treasury.internal"))
	for _, id := range []string{"treasury-uncovered", "treasury-reviewed"} {
		if _, err := ops.CreateKey(context.Background(), &sigilv1.CreateKeyRequest{Id: id, Algorithm: "ES256K", Purpose: "eth",
			EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}}}); err != nil {
			b.Fatal(err)
		}
		nonce := 0 // each run of the sub-benchmark goes on from the last one's nonces
		b.Run(strings.TrimPrefix(id, "treasury-"), func(b *testing.B) {
			for range b.N {
				nonce++
				tx := fmt.Sprintf(`{"chainId":"0x1","nonce":"0x%x","to":"0x3535353535353535353535353535353535353535","value":"0x1","gas":"0x5208","maxFeePerGas":"0x10","maxPriorityFeePerGas":"0x1"}`, nonce)
				if _, err := ec.SignTransaction(context.Background(), &sigilv1.SignTransactionRequest{KeyId: id,
					Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: []byte(tx)}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
