package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server"
	"github.com/sigil-hsm/sigil/server/servertest"
)

// A checkpoint in the tail is named only if the audit key signed it: the
// log's own checkpoints are; one whose signature was replaced (and its
// line and every later one rehashed, so each line's hash and link hold)
// is called forged and named not.
func TestTailAuditNamesOnlySignedCheckpoints(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signed.jsonl")
	e := servertest.NewMTLS(t, `
rules:
  - identity: spiffe://example.org/ops
    keys: ["*"]
    namespaces: ["*"]
    allow: [keys.read, keys.admin]
`, func(o *server.Options) {
		if _, err := o.Keyring.EnsureAuditKey(context.Background()); err != nil {
			t.Fatal(err)
		}
		al, err := audit.Open(context.Background(), audit.Options{Path: path, Signer: keyring.AuditSigner{Keyring: o.Keyring}, Anchors: o.Anchors, CheckpointEvery: 3})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { al.Close() })
		o.Audit = al
	})
	ctx := context.Background()
	ops := e.Client(t, "spiffe://example.org/ops")
	keys := sigilv1.NewKeyServiceClient(ops)
	for range 8 {
		keys.ListKeys(ctx, &sigilv1.ListKeysRequest{})
	}
	tail, err := sigilv1.NewAuditServiceClient(ops).TailAudit(ctx, &sigilv1.TailAuditRequest{})
	if err != nil || tail.GetLastCheckpointSeq() == 0 {
		t.Fatalf("the log's own checkpoints: %v %v", tail, err)
	}

	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	// The last checkpoint: signed off the request path, it comes a few
	// lines after the record that made it due, as the machine allows.
	last := -1
	for i := range lines {
		if strings.Contains(lines[i], `"checkpoint":{`) {
			last = i
		}
	}
	if last < len(lines)-12 {
		t.Fatalf("the last checkpoint is line %d of %d, though every fourth is one (CheckpointEvery 3)", last+1, len(lines))
	}
	forged, prev := -1, ""
	for i := range lines {
		if prev != "" { // relink to the rehashed line before
			j := strings.Index(lines[i], `"prev":"`) + len(`"prev":"`)
			lines[i] = lines[i][:j] + prev + lines[i][j+64:]
		}
		if i == last {
			forged = i
			j := strings.Index(lines[i], `"signature":"`) + len(`"signature":"`)
			k := strings.Index(lines[i][j:], `"`)
			lines[i] = lines[i][:j] + strings.Repeat("A", k) + lines[i][j+k:]
		}
		if forged >= 0 {
			h := strings.LastIndex(lines[i], `,"hash":"`) + len(`,"hash":"`)
			sum := sha256.Sum256([]byte(lines[i][:h]))
			prev = hex.EncodeToString(sum[:])
			lines[i] = lines[i][:h] + prev + `"}`
		}
	}
	os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	tail, err = sigilv1.NewAuditServiceClient(ops).TailAudit(ctx, &sigilv1.TailAuditRequest{})
	if err != nil || tail.GetChainOk() || !strings.Contains(tail.GetChainDetail(), "forged") || tail.GetLastCheckpointSeq() != 0 {
		t.Fatalf("a forged checkpoint: ok %v, %q, names %d (%v)", tail.GetChainOk(), tail.GetChainDetail(), tail.GetLastCheckpointSeq(), err)
	}
}
