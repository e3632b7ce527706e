package server

import (
	"context"
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
	log     *audit.Log // nil when the server keeps none
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
	entries, chain, err := audit.Tail(s.log.Path(), n)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "reading the audit log")
	}
	out := &sigilv1.TailAuditResponse{Replica: s.log.Replica(), ChainOk: chain.OK, ChainDetail: chain.Detail}
	if chain.LastCheckpoint != nil {
		out.LastCheckpointSeq = chain.LastCheckpoint.Seq
	}
	for _, e := range entries {
		r := e.Record
		out.Records = append(out.Records, &sigilv1.AuditTailRecord{Seq: e.Seq, Hash: e.Hash, Time: timestamppb.New(r.Time), RequestId: r.RequestID, Identity: r.Identity,
			Operation: r.Operation, KeyId: r.KeyID, Outcome: r.Outcome, Code: r.Code, ApprovalId: r.ApprovalID, Checkpoint: e.Checkpoint != nil})
	}
	return out, nil
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
