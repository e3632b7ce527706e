package e2e_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/tests/framework"
)

func sign(conn *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := sigilv1.NewSigningServiceClient(conn).Sign(ctx, &sigilv1.SignRequest{KeyId: "k", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}})
	return err
}

// verifyAudit runs `sigil audit verify` on the server's audit files with
// the server's client flags (the live anchored head and the audit key).
func verifyAudit(e *framework.Env) (string, error) {
	files, _ := filepath.Glob(e.Audit + "*")
	return e.Sigil(append([]string{"audit", "verify"}, files...)...)
}

// One request with a 262,000-character key ID of '<' from an identity
// with no right to the operation: it is denied and recorded bounded, the
// server starts again, and the trail verifies complete. Then the log is
// cut: the next start records the tampering, counts it in metrics, and
// verify names it.
func TestAuditTrailSurvivesHostileInputAndProvesTruncation(t *testing.T) {
	framework.RequireTools(t)
	e := framework.NewEnv(t, framework.Build(t))
	e.Start("")
	e.Must("keys", "create", "k", "--alg", "ES256")
	conn := e.Dial(t)
	for range 30 {
		if err := sign(conn); err != nil {
			t.Fatal(err)
		}
	}
	hostile := strings.Repeat("<", 262000)
	_, err := sigilv1.NewEthereumServiceClient(conn).SignMessage(context.Background(), &sigilv1.SignMessageRequest{KeyId: hostile, Message: []byte("m")})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a hostile key ID from an identity without the right: %v", err)
	}
	// A request that is not valid protobuf is audited and InvalidArgument.
	var resp sigilv1.SignResponse
	err = conn.Invoke(context.Background(), sigilv1.SigningService_Sign_FullMethodName, rawBytes{0x0a, 0xff, 0xff}, &resp, grpc.ForceCodecV2(rawClientCodec{}))
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("malformed protobuf: %v, want InvalidArgument", err)
	}
	e.Srv.Stop(t)
	b, _ := os.ReadFile(e.Audit)
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(line) > 16<<10 {
			t.Fatalf("an audit line of %d bytes", len(line))
		}
	}
	for _, want := range []string{`"invalid_key_id":{"length":262000`, `"outcome":"failed","code":"InvalidArgument","reason":"malformed request","latency_ms"`, `"request_bytes":3`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Fatalf("the audit log lacks %s", want)
		}
	}
	e.Start("") // must start
	if out, err := verifyAudit(e); err != nil || !strings.Contains(out, "chain complete and intact") {
		t.Fatalf("audit verify after the hostile request: %v\n%s", err, out)
	}
	e.Srv.Stop(t)

	// Cut the last 5 lines: the next start notices, and keeps running.
	b, _ = os.ReadFile(e.Audit)
	lines := bytes.SplitAfter(b, []byte("\n"))
	os.WriteFile(e.Audit, bytes.Join(lines[:len(lines)-6], nil), 0o600)
	e.Start("")
	if !strings.Contains(e.Srv.Logs.String(), "audit log tampered with") {
		t.Fatal("no error log of the tampering at start")
	}
	_, metrics := get(t, e.Srv.AdminAddr, "/metrics")
	if !strings.Contains(metrics, "sigil_audit_tamper_detected_total 1") || !strings.Contains(metrics, "sigil_audit_up 1") {
		t.Fatal("metrics do not show the tampering, or the log is down")
	}
	if err := sign(e.Dial(t)); err != nil {
		t.Fatalf("signing after the tamper record: %v", err)
	}
	out, err := verifyAudit(e)
	if err == nil || !strings.Contains(out, "the log records tampering") || !regexp.MustCompile(`records \d+ to \d+ are missing`).MatchString(out) {
		t.Fatalf("audit verify of a cut log: %v\n%s", err, out)
	}
}

// The audit log's filesystem fills up under a running server: requests
// are refused Unavailable (their responses withheld), readiness and
// metrics say so; once space is freed the server answers again without a
// restart, and the trail verifies.
func TestAuditDiskFullHealsWithoutRestart(t *testing.T) {
	framework.RequireTools(t)
	e := framework.NewEnv(t, framework.Build(t))
	dir := filepath.Join(e.Dir, "audit")
	os.MkdirAll(dir, 0o700)
	if err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", dir).Run(); err != nil {
		if os.Getenv("CI") == "true" && os.Geteuid() == 0 {
			t.Fatalf("mounting a tmpfs as root under CI=true: %v", err)
		}
		t.Skipf("cannot mount a tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	e.Audit = filepath.Join(dir, "audit.jsonl")
	e.Start("")
	e.Must("keys", "create", "k", "--alg", "ES256")
	conn := e.Dial(t)
	filler := filepath.Join(dir, "filler")
	fi, _ := os.Stat(e.Audit)
	os.WriteFile(filler, make([]byte, 256<<10-fi.Size()-8<<10), 0o600)
	refused := false
	for i := 0; i < 2000 && !refused; i++ {
		switch err := sign(conn); status.Code(err) {
		case codes.OK:
		case codes.Unavailable:
			refused = true
		default:
			t.Fatalf("with the audit disk full: %v", err)
		}
	}
	if !refused {
		t.Fatal("the audit disk filled up but requests were still answered")
	}
	if code, body := get(t, e.Srv.AdminAddr, "/readyz"); code != 503 || !strings.Contains(body, `"audit":{"up":false`) {
		t.Fatalf("/readyz with the audit disk full: %d %s", code, body)
	}
	if _, m := get(t, e.Srv.AdminAddr, "/metrics"); !strings.Contains(m, "sigil_audit_up 0") || strings.Contains(m, "sigil_audit_write_errors_total 0") {
		t.Fatal("metrics do not show the audit log down")
	}
	os.Remove(filler)
	if !withinE(10*time.Second, func() bool { return sign(conn) == nil }) {
		t.Fatal("not signing 10 s after space was freed")
	}
	if code, _ := get(t, e.Srv.AdminAddr, "/readyz"); code != 200 {
		t.Fatalf("/readyz after the audit log healed: %d", code)
	}
	if out, err := verifyAudit(e); err != nil {
		t.Fatalf("audit verify after the disk-full episode: %v\n%s", err, out)
	}
}

// rawBytes is a request body sent as it is, to play a client that sends
// bytes that are not the method's message.
type rawBytes []byte

type rawClientCodec struct{}

func (rawClientCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.(rawBytes))}, nil
}
func (rawClientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}
func (rawClientCodec) Name() string { return "proto" }
