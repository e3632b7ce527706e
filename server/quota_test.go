package server_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server/servertest"
)

const quotaPolicy = `
rules:
  - identity: spiffe://example.org/ops
    keys: ["*"]
    allow: [keys.admin, keys.read]
  - identity: spiffe://example.org/signers/*
    keys: ["raw-*"]
    allow: [sign.raw]
    rate: 5/s
    burst: 5
`

// A burst beyond an identity's quota is answered ResourceExhausted with
// when to retry, audited and counted, while another identity under the
// same rule signs on.
func TestQuotaPerIdentity(t *testing.T) {
	e := servertest.NewMTLS(t, quotaPolicy)
	ctx := context.Background()
	if _, err := sigilv1.NewKeyServiceClient(e.Client(t, "spiffe://example.org/ops")).CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "raw-1", Algorithm: "ES256"}); err != nil {
		t.Fatal(err)
	}
	greedy := sigilv1.NewSigningServiceClient(e.Client(t, "spiffe://example.org/signers/greedy"))
	modest := sigilv1.NewSigningServiceClient(e.Client(t, "spiffe://example.org/signers/modest"))
	sign := func(c sigilv1.SigningServiceClient) error {
		_, err := c.Sign(ctx, &sigilv1.SignRequest{KeyId: "raw-1", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}})
		return err
	}
	ok, throttled := 0, 0
	var last error
	for range 20 {
		switch err := sign(greedy); status.Code(err) {
		case codes.OK:
			ok++
		case codes.ResourceExhausted:
			throttled, last = throttled+1, err
		default:
			t.Fatal(err)
		}
	}
	if ok < 5 || ok > 7 || throttled < 13 {
		t.Fatalf("a burst of 20 at 5/s: %d signed, %d throttled", ok, throttled)
	}
	var info *errdetails.RetryInfo
	for _, d := range status.Convert(last).Details() {
		if ri, is := d.(*errdetails.RetryInfo); is {
			info = ri
		}
	}
	if info == nil || info.GetRetryDelay().AsDuration() <= 0 {
		t.Errorf("no retry delay in %v", status.Convert(last).Details())
	}
	if err := sign(modest); err != nil {
		t.Fatalf("another identity under the same rule: %v", err)
	}
	resp, err := http.Get(e.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `sigil_quota_throttled_total{operation="sign.raw",rule="spiffe://example.org/signers/*"} `+strconv.Itoa(throttled)) {
		t.Errorf("/metrics lacks the throttling count")
	}
	log, _ := os.ReadFile(e.AuditLog)
	if !strings.Contains(string(log), `"identity":"spiffe://example.org/signers/greedy","operation":"sign.raw","method":"/sigil.v1.SigningService/Sign","key_id":"raw-1","outcome":"throttled","code":"ResourceExhausted"`) {
		t.Errorf("the throttling is not audited")
	}
}
