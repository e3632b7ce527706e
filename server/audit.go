package server

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/signer"
)

// auditService implements sigil.v1.AuditService.
type auditService struct {
	sigilv1.UnimplementedAuditServiceServer
	keys    *keyring.Keyring
	anchors keyring.Anchors
	log     *audit.Log                                // nil when the server keeps none
	visible func(ctx context.Context, id string) bool // the caller may read key id
}

// maxTail bounds TailAudit's records.
const maxTail = 500

func (s *auditService) TailAudit(ctx context.Context, req *sigilv1.TailAuditRequest) (*sigilv1.TailAuditResponse, error) {
	if namespace.FromContext(ctx) != namespace.Root {
		return nil, errs.New(errs.PermissionDenied, "the audit log is read in the root namespace")
	}
	n := int(req.GetLimit())
	switch {
	case n == 0:
		n = 50
	case n < 0 || n > maxTail:
		return nil, errs.New(errs.InvalidArgument, "limit: 1 to %d", maxTail)
	}
	if s.log == nil {
		return nil, errs.New(errs.FailedPrecondition, "this server keeps no audit log")
	}
	headSeq, headHash := s.log.Head() // before the file: the file reaches at least this far
	entries, chain, err := audit.Tail(s.log.Path(), n)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "reading the audit log")
	}
	out := &sigilv1.TailAuditResponse{Replica: s.log.Replica(), ChainOk: chain.OK, ChainDetail: chain.Detail}
	if chain.OK {
		out.ChainOk, out.ChainDetail = reachesHead(entries, headSeq, headHash)
	}
	if cp := chain.LastCheckpoint; cp != nil {
		if err := s.checkCheckpoint(ctx, cp, entries); err != nil {
			out.ChainOk, out.ChainDetail = false, err.Error()
		} else {
			out.LastCheckpointSeq = cp.Seq
		}
	}
	for _, e := range entries {
		r := e.Record
		tr := &sigilv1.AuditTailRecord{Seq: e.Seq, Hash: e.Hash, Time: timestamppb.New(r.Time), RequestId: r.RequestID, Identity: r.Identity,
			Operation: r.Operation, KeyId: r.KeyID, Outcome: r.Outcome, Code: r.Code, ApprovalId: r.ApprovalID, Checkpoint: e.Checkpoint != nil}
		if r.Namespace != "" && !s.visible(ctx, r.KeyID) { // another namespace's activity: not the caller's to read
			tr.Identity, tr.Operation, tr.KeyId, tr.RequestId, tr.ApprovalId = "", "(a namespace you may not read)", "", "", ""
		}
		out.Records = append(out.Records, tr)
	}
	return out, nil
}

// reachesHead says whether the tail's linked lines end in the head the
// running log holds in memory (read before the file): lines rewritten
// and rehashed, or cut from the end, do not.
func reachesHead(entries []audit.TailEntry, seq uint64, hash string) (bool, string) {
	first, last := entries[0].Seq, entries[len(entries)-1].Seq
	switch {
	case seq > last:
		return false, fmt.Sprintf("the file ends at record %d, but the log has written record %d: records were cut from its end", last, seq)
	case seq < first:
		return false, fmt.Sprintf("records %d to %d link, but more were written while they were read than are shown: not checked against the log's head", first, last)
	}
	if entries[seq-first].Hash != hash {
		return false, fmt.Sprintf("record %d in the file is not the one the log wrote: the file was rewritten", seq)
	}
	return true, fmt.Sprintf("records %d to %d: each line's own hash holds, each links to the one before, and they reach the head the log holds (record %d)", first, last, seq)
}

// checkCheckpoint verifies a checkpoint line of the tail: signed with a
// generation of the audit key, over the hash of the record it names
// when that record is shown.
func (s *auditService) checkCheckpoint(ctx context.Context, cp *audit.Checkpoint, entries []audit.TailEntry) error {
	k, err := s.keys.Get(ctx, keyring.AuditKeyID)
	if err != nil {
		return errs.New(errs.FailedPrecondition, "the checkpoint of record %d cannot be checked: no audit key", cp.Seq)
	}
	verified := false
	for _, g := range k.Generations {
		if pub, ok := g.Public().(*ecdsa.PublicKey); ok && cp.Verify(pub) == nil {
			verified = true
		}
	}
	if !verified {
		return errs.New(errs.FailedPrecondition, "the checkpoint of record %d does not verify with the audit key: it was forged", cp.Seq)
	}
	for _, e := range entries {
		if e.Seq == cp.Seq && e.Hash != cp.Hash {
			return errs.New(errs.FailedPrecondition, "the checkpoint of record %d signs another hash than the record's: the record was rewritten", cp.Seq)
		}
	}
	return nil
}

var _ sigilv1.AuditServiceServer = (*auditService)(nil)

func (s *auditService) GetAuditHead(ctx context.Context, _ *sigilv1.GetAuditHeadRequest) (*sigilv1.GetAuditHeadResponse, error) {
	if s.anchors == nil {
		return nil, errs.New(errs.FailedPrecondition, "this server keeps no audit checkpoints")
	}
	pem, err := auditKeyPEM(ctx, s.keys)
	if err != nil {
		return nil, err
	}
	all, err := s.anchors.ListAnchors(ctx, audit.AnchorName(""))
	if err != nil {
		return nil, err
	}
	resp := &sigilv1.GetAuditHeadResponse{PublicKeyPem: pem}
	for _, b := range all {
		a, err := audit.ParseAnchor(b)
		if err != nil {
			return nil, errs.Wrap(errs.Internal, err, "anchored checkpoint")
		}
		resp.Checkpoints = append(resp.Checkpoints, &sigilv1.AuditCheckpoint{Replica: a.Replica, Seq: a.Seq, Hash: a.Hash,
			Time: timestamppb.New(a.Time), Signature: a.Signature, RecordSeq: a.RecordSeq, RecordHash: a.RecordHash, Every: uint32(a.Every)})
	}
	sort.Slice(resp.Checkpoints, func(i, j int) bool { return resp.Checkpoints[i].GetReplica() < resp.Checkpoints[j].GetReplica() })
	return resp, nil
}

// auditKeyPEM is the public key audit checkpoints verify with.
func auditKeyPEM(ctx context.Context, kr *keyring.Keyring) (string, error) {
	k, err := kr.Get(ctx, keyring.AuditKeyID)
	if err != nil {
		return "", err
	}
	g, ok := k.Active()
	if !ok {
		return "", errs.New(errs.FailedPrecondition, "the audit key has no active generation")
	}
	return signer.PublicKeyPEM(g.Public())
}

// serveAuditKey answers GET /audit/key with the audit public key (PEM):
// what anyone holding audit files needs to check their checkpoints.
func (s *Server) serveAuditKey(w http.ResponseWriter, r *http.Request) {
	pem, err := auditKeyPEM(r.Context(), s.opts.Keyring)
	if err != nil {
		http.Error(w, "no audit key", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Write([]byte(pem))
}

// auditState is the audit log's health as /readyz reports it.
func (s *Server) auditState() (bool, string) {
	if s.opts.Audit == nil {
		return true, ""
	}
	up, detail := s.opts.Audit.Health()
	return up, strings.TrimSpace(detail)
}
