package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/softhsm"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// startUnsigned restarts e's server with checkpoints only at start and
// stop: whatever it records meanwhile is the unsigned tail.
func startUnsigned(t *testing.T, e *framework.Env) {
	t.Helper()
	cfg := filepath.Join(e.Dir, "sigil.yaml")
	b, _ := os.ReadFile(cfg)
	const from, to = "checkpoint: {every: 20, interval: 500ms}", "checkpoint: {every: 100000, interval: 1h}"
	if !bytes.Contains(b, []byte(from)) && !bytes.Contains(b, []byte(to)) {
		t.Fatalf("the framework's configuration no longer reads %q:\n%s", from, b)
	}
	os.WriteFile(cfg, bytes.ReplaceAll(b, []byte(from), []byte(to)), 0o600)
	e.Srv = framework.ServeConfig(t, e.Bin, cfg, softhsm.ConfEnv+"="+e.Conf)
}

// lastLine is the seq of the audit file's last line, and the seq of its
// last checkpoint line with that line's end offset.
func lastLine(t *testing.T, path string) (last, checkpoint uint64, cpEnd int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off := 0
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		off += len(line)
		var e struct {
			Seq       uint64 `json:"seq"`
			Operation string `json:"operation"`
		}
		if json.Unmarshal(line, &e) != nil {
			continue
		}
		last = e.Seq
		if e.Operation == "audit.checkpoint" {
			checkpoint, cpEnd = e.Seq, off
		}
	}
	return last, checkpoint, cpEnd
}

// anchoredHead is the head the store holds, as GetAuditHead answers.
func anchoredHead(t *testing.T, e *framework.Env) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := sigilv1.NewAuditServiceClient(e.Dial(t)).GetAuditHead(ctx, &sigilv1.GetAuditHeadRequest{})
	if err != nil || len(resp.GetCheckpoints()) != 1 {
		t.Fatalf("GetAuditHead: %v %v", resp, err)
	}
	return resp.GetCheckpoints()[0].GetRecordSeq()
}

// signAndAnchor makes n records and waits until the store holds the
// file's last one: what a kill -9 now leaves is all anchored.
func signAndAnchor(t *testing.T, e *framework.Env, n int) uint64 {
	t.Helper()
	conn := e.Dial(t)
	for range n {
		if err := sign(conn); err != nil {
			t.Fatal(err)
		}
	}
	var last uint64
	if !withinE(5*time.Second, func() bool { last, _, _ = lastLine(t, e.Audit); return anchoredHead(t, e) == last }) {
		t.Fatalf("the store's head is not the log's last record %d after 5 s", last)
	}
	return last
}

// The server is killed (SIGKILL) with an unsigned tail: restarted as it
// is, nothing is taken for tampering and the trail verifies. Killed again
// and the tail since the last checkpoint cut from the file: the restart
// records the cut in the chain, counts and logs it, and `sigil audit
// verify` names it both from the files alone and against the live head.
func TestAuditTailCutAfterKill9IsNamed(t *testing.T) {
	framework.RequireTools(t)
	e := framework.NewEnv(t, framework.Build(t))
	e.Start("")
	e.Must("keys", "create", "k", "--alg", "ES256")
	e.Srv.Stop(t)
	startUnsigned(t, e)

	signAndAnchor(t, e, 20)
	e.Srv.Kill()
	startUnsigned(t, e)
	if strings.Contains(e.Srv.Logs.String(), "tampered") {
		t.Fatalf("a plain kill -9 was taken for tampering: %s", e.Srv.Logs.String())
	}
	if out, err := verifyAudit(e); err != nil || !strings.Contains(out, "chain complete and intact") {
		t.Fatalf("audit verify after a plain kill -9: %v\n%s", err, out)
	}

	head := signAndAnchor(t, e, 30)
	e.Srv.Kill()
	_, cp, cpEnd := lastLine(t, e.Audit)
	if head < cp+30 {
		t.Fatalf("the unsigned tail is records %d to %d", cp+1, head)
	}
	if err := os.Truncate(e.Audit, int64(cpEnd)); err != nil { // records cp+1..head erased
		t.Fatal(err)
	}
	startUnsigned(t, e)
	if !strings.Contains(e.Srv.Logs.String(), "audit log tampered with") {
		t.Fatalf("no error log of the cut at start: %s", e.Srv.Logs.String())
	}
	if _, m := get(t, e.Srv.AdminAddr, "/metrics"); !strings.Contains(m, "sigil_audit_tamper_detected_total 1") {
		t.Fatal("sigil_audit_tamper_detected_total does not count the cut")
	}
	cut := fmt.Sprintf("the log ends at record %d", cp)
	anchored := fmt.Sprintf("but the head anchored in the store is record %d", head)
	missing := fmt.Sprintf("records %d to %d are missing", cp+1, head)

	// Offline: the files and the audit key, no server.
	_, pem := get(t, e.Srv.HTTPAddr, "/audit/key")
	keyFile := filepath.Join(e.Dir, "audit.pem")
	os.WriteFile(keyFile, []byte(pem), 0o600)
	files, _ := filepath.Glob(e.Audit + "*")
	out, err := exec.Command(e.Bin, append([]string{"audit", "verify", "--key", keyFile}, files...)...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "the log records tampering: "+cut) || !strings.Contains(string(out), anchored) || !strings.Contains(string(out), missing) {
		t.Fatalf("offline audit verify of a log whose tail was cut: %v\n%s", err, out)
	}
	// Online: against the live anchored head.
	if out, err := verifyAudit(e); err == nil || !strings.Contains(out, cut) || !strings.Contains(out, anchored) || !strings.Contains(out, missing) {
		t.Fatalf("online audit verify of a log whose tail was cut: %v\n%s", err, out)
	}
}
