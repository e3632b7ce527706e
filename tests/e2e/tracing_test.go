package e2e_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/sigil-hsm/sigil/internal/mtls"
	"github.com/sigil-hsm/sigil/internal/testutil/jaegertest"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// A client's trace continues into Sigil and reaches a real collector
// (Jaeger): SignJWT and SignTransaction sent with a W3C traceparent come
// back as spans of that trace, the RPC's span a child of the client's,
// with authorization, the backend call (its session wait an event) and
// the audit append under it; the audit record carries the trace ID; and
// no span attribute or event carries the claims or the transaction.
func TestTracesReachTheCollector(t *testing.T) {
	framework.RequireTools(t)
	jg := jaegertest.Start(t)
	e := framework.NewEnv(t, framework.Build(t))
	e.Extra = "tracing: {enabled: true, sample_ratio: 0}\n" // only the caller's sampled traces: parent-based
	e.Env = []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + jg.OTLP, "OTEL_EXPORTER_OTLP_INSECURE=true", "OTEL_BSP_SCHEDULE_DELAY=100"}
	os.WriteFile(filepath.Join(e.Dir, "policy.yaml"), []byte("rules:\n  - identity: "+mtls.DevClientIdentity+"\n    keys: [\"*\"]\n    allow: [keys.admin, keys.read, sign.jwt, eth.sign_tx]\n"), 0o600)
	e.Start("")
	conn := e.Dial(t)
	ctx := context.Background()
	keys := sigilv1.NewKeyServiceClient(conn)
	if _, err := keys.CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "traced-jwt", Algorithm: "ES256", Purpose: "jwt"}); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.CreateKey(ctx, &sigilv1.CreateKeyRequest{Id: "traced-eth", Algorithm: "ES256K", Purpose: "eth", EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}}}); err != nil {
		t.Fatal(err)
	}
	const marker = "claims-marker-7f3a"
	calls := map[string]func(context.Context) error{
		"/sigil.v1.JWTService/SignJWT": func(ctx context.Context) error {
			_, err := sigilv1.NewJWTServiceClient(conn).SignJWT(ctx, &sigilv1.SignJWTRequest{KeyId: "traced-jwt", ClaimsJson: []byte(`{"sub":"` + marker + `"}`)})
			return err
		},
		"/sigil.v1.EthereumService/SignTransaction": func(ctx context.Context) error {
			tx := `{"to":"0x3535353535353535353535353535353535353535","value":"0x1","nonce":"0x0","gas":"0x5208","maxFeePerGas":"0x3b9aca00","maxPriorityFeePerGas":"0x1","chainId":"0x1","data":"0x` + hex.EncodeToString([]byte(marker)) + `"}`
			_, err := sigilv1.NewEthereumServiceClient(conn).SignTransaction(ctx, &sigilv1.SignTransactionRequest{KeyId: "traced-eth",
				Transaction: &sigilv1.SignTransactionRequest_TransactionJson{TransactionJson: []byte(tx)}})
			return err
		},
	}
	for method, call := range calls {
		traceID, parent := randomHex(16), randomHex(8)
		if err := call(metadata.AppendToOutgoingContext(ctx, "traceparent", fmt.Sprintf("00-%s-%s-01", traceID, parent))); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		spans := jg.Trace(t, traceID, 4)
		byName := map[string]jaegertest.Span{}
		for _, s := range spans {
			byName[s.OperationName] = s
			for _, tag := range s.Tags {
				if v := fmt.Sprint(tag.Value); strings.Contains(v, marker) || strings.Contains(v, hex.EncodeToString([]byte(marker))) {
					t.Errorf("%s: span %s attribute %s carries the request's payload: %s", method, s.OperationName, tag.Key, v)
				}
			}
		}
		rpc, ok := byName[method]
		if !ok || rpc.Parent() != parent {
			t.Fatalf("%s: no span of the RPC under the client's span %s: %+v", method, parent, spans)
		}
		for _, child := range []string{"sigil.authorize", "sigil.backend_sign", "sigil.audit_append"} {
			if s, ok := byName[child]; !ok || s.Parent() != rpc.SpanID {
				t.Errorf("%s: %s is not a child of the RPC's span (%+v)", method, child, s)
			}
		}
		if !hasEvent(byName["sigil.backend_sign"], "pkcs11.session") {
			t.Errorf("%s: the backend call has no pkcs11.session event: %+v", method, byName["sigil.backend_sign"].Logs)
		}
		if rec := auditRecordOfTrace(t, e.Audit, traceID); rec == "" {
			t.Errorf("%s: no audit record carries trace %s", method, traceID)
		}
	}

	// A failed request's log line names its request and trace; every
	// line the server wrote is one JSON object.
	traceID := randomHex(16)
	_, err := sigilv1.NewJWTServiceClient(conn).SignJWT(metadata.AppendToOutgoingContext(ctx, "traceparent", fmt.Sprintf("00-%s-%s-01", traceID, randomHex(8)), "x-request-id", "req-logged-1"),
		&sigilv1.SignJWTRequest{KeyId: "no-such-key", ClaimsJson: []byte(`{}`)})
	if err == nil {
		t.Fatal("a JWT from a key that does not exist")
	}
	// The server's standard error reaches the test through a pipe: the
	// line may come a moment after the answer.
	found := false
	for deadline := time.Now().Add(15 * time.Second); !found && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		for _, line := range strings.Split(strings.TrimSpace(e.Srv.Logs.String()), "\n") {
			var l map[string]any
			if json.Unmarshal([]byte(line), &l) == nil && l["msg"] == "request failed" && l["trace_id"] == traceID && l["request_id"] == "req-logged-1" {
				found = true
			}
		}
	}
	for i, line := range strings.Split(strings.TrimSpace(e.Srv.Logs.String()), "\n") {
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Errorf("server log line %d is not JSON: %q", i+1, line)
		}
	}
	if !found {
		t.Errorf("no log line of the failed request names its trace and request ID:\n%s", e.Srv.Logs.String())
	}
}

func hasEvent(s jaegertest.Span, name string) bool {
	for _, l := range s.Logs {
		for _, f := range l.Fields {
			if f.Key == "event" && f.Value == name {
				return true
			}
		}
	}
	return false
}

// auditRecordOfTrace is the operation of the audit record of trace id.
func auditRecordOfTrace(t *testing.T, path, id string) string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var rec struct {
			Operation string `json:"operation"`
			TraceID   string `json:"trace_id"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.TraceID == id {
			return rec.Operation
		}
	}
	return ""
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
