package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sigil-hsm/sigil/console"
	"github.com/sigil-hsm/sigil/internal/approval"
	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/failpoint"
	"github.com/sigil-hsm/sigil/internal/identity"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/internal/tracing"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// approvalService implements sigil.v1.ApprovalService. Its methods name
// approval IDs, not keys, so the access checks admit to them any caller
// a rule names (spending that rule's quota; see Server.decide) and each
// method authorizes against the request it reads: approvers (named by
// the holding rule, and allowed approvals.approve on the key by the
// access rules in force) may see, approve and deny; the requester may
// see its own and fetch the result.
type approvalService struct {
	sigilv1.UnimplementedApprovalServiceServer
	s *Server
}

var _ sigilv1.ApprovalServiceServer = (*approvalService)(nil)

// selfAuthorized are the methods that authorize in their handler.
var selfAuthorized = map[string]bool{
	sigilv1.NamespaceService_ListNamespaces_FullMethodName:   true,
	sigilv1.ApprovalService_ListApprovals_FullMethodName:     true,
	sigilv1.ApprovalService_GetApproval_FullMethodName:       true,
	sigilv1.ApprovalService_Approve_FullMethodName:           true,
	sigilv1.ApprovalService_Deny_FullMethodName:              true,
	sigilv1.ApprovalService_GetApprovalResult_FullMethodName: true,
}

// maxReason bounds a denial's reason.
const maxReason = 512

func (a *approvalService) store() (*approval.Store, error) {
	if a.s.approvals == nil {
		return nil, errs.New(errs.FailedPrecondition, "this keyring store keeps no approvals")
	}
	return a.s.approvals, nil
}

// get returns the request with id, and names it in the call's audit
// record.
func (a *approvalService) get(ctx context.Context, id string) (*approval.Request, error) {
	st, err := a.store()
	if err != nil {
		return nil, err
	}
	r, err := st.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if r.InNamespace() != namespace.FromContext(ctx) {
		// Asked in another namespace: as if there were no such request.
		return nil, errs.New(errs.NotFound, "approval %s: no such request", id)
	}
	noteApproval(ctx, r)
	return r, nil
}

// read returns the request with id if the caller may see it.
func (a *approvalService) read(ctx context.Context, id string, requesterOnly bool) (*approval.Request, error) {
	r, err := a.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !a.s.mayRead(ctx, r, requesterOnly) {
		return nil, errDenied
	}
	return r, nil
}

// mayRead reports whether the caller made r, or (unless requesterOnly)
// may decide it.
func (s *Server) mayRead(ctx context.Context, r *approval.Request, requesterOnly bool) bool {
	if r.InNamespace() != namespace.FromContext(ctx) {
		return false // listed in another namespace (get refuses such a request outright)
	}
	ids := identities(ctx)
	if r.MadeBy(ids) {
		return true
	}
	return !requesterOnly && s.mayDecide(ids, r)
}

// mayDecide reports whether ids are an approver of r that the access
// rules in force allow approvals.approve on r's key.
func (s *Server) mayDecide(ids []identity.ID, r *approval.Request) bool {
	_, named := r.Approver(ids)
	_, allowed := s.authorize(ids, authz.ApprovalsApprove, r.Target())
	return named && allowed
}

func (a *approvalService) ListApprovals(ctx context.Context, req *sigilv1.ListApprovalsRequest) (*sigilv1.ListApprovalsResponse, error) {
	if err := approval.CheckState(req.GetState()); err != nil {
		return nil, err
	}
	st, err := a.store()
	if err != nil {
		return nil, err
	}
	all, err := st.List(ctx)
	if err != nil {
		return nil, err
	}
	now, out := a.s.opts.Now(), &sigilv1.ListApprovalsResponse{}
	for _, r := range all {
		if (req.GetState() == "" || string(r.StateAt(now)) == req.GetState()) && a.s.mayRead(ctx, r, false) {
			out.Approvals = append(out.Approvals, approvalProto(r, now))
		}
	}
	return out, nil
}

// GetApproval returns a request and, while they are kept, its bytes: an
// approver can read the request itself and check its hash.
func (a *approvalService) GetApproval(ctx context.Context, req *sigilv1.GetApprovalRequest) (*sigilv1.GetApprovalResponse, error) {
	r, err := a.read(ctx, req.GetApprovalId(), false)
	if err != nil {
		return nil, err
	}
	payload, err := a.s.approvals.Payload(ctx, r.ID)
	if err != nil && !errs.Is(err, errs.FailedPrecondition) {
		return nil, err
	}
	out := &sigilv1.GetApprovalResponse{Approval: approvalProto(r, a.s.opts.Now()), Request: payload, ConsoleRpId: a.s.opts.ConsoleRPID}
	a.s.passkeysOf(ctx, out.GetApproval().GetApprovals())
	return out, nil
}

// passkeysOf fills in the public key each vote's passkey is enrolled
// with, where the store has it: a client checks the assertion itself.
func (s *Server) passkeysOf(ctx context.Context, votes []*sigilv1.ApprovalVote) {
	for _, v := range votes {
		var a console.Assertion
		if len(v.GetPasskeyAssertion()) == 0 || s.opts.Anchors == nil || json.Unmarshal(v.GetPasskeyAssertion(), &a) != nil {
			continue
		}
		if p, err := (console.Store{A: s.opts.Anchors}).Passkey(ctx, a.CredentialID); err == nil {
			v.PasskeyPublicKey = p.Credential.PublicKey
		}
	}
}

// Approve counts the caller's approval; the one completing the quorum
// runs the request before answering.
func (a *approvalService) Approve(ctx context.Context, req *sigilv1.ApproveRequest) (*sigilv1.ApproveResponse, error) {
	r, err := a.decide(ctx, req.GetApprovalId(), func(r *approval.Request, ids []identity.ID, now time.Time) error {
		if err := a.s.checkPasskey(ctx, req.GetPasskey(), ids, r, "approve"); err != nil {
			return err
		}
		_, err := r.Approve(ids, req.GetPayloadSha256(), now)
		if err == nil && len(req.GetPasskey()) > 0 {
			v := &r.Approvals[len(r.Approvals)-1]
			v.Passkey, v.Origin = string(req.GetPasskey()), a.s.opts.ConsoleOrigin
		}
		a.s.notePasskey(ctx, req.GetPasskey(), "approve", r.PayloadSHA256, err)
		return err
	})
	if err != nil {
		return nil, err
	}
	if r.State == approval.Approved {
		failpoint.Hit("approval.after-quorum")
		if ran, err := a.s.run(ctx, r.ID); err == nil {
			r = ran
		} else {
			a.s.log.Warn("running an approved request failed; it is retried", "approval_id", r.ID, "err", err)
		}
	}
	return &sigilv1.ApproveResponse{Approval: approvalProto(r, a.s.opts.Now())}, nil
}

// Deny refuses the request for good.
func (a *approvalService) Deny(ctx context.Context, req *sigilv1.DenyRequest) (*sigilv1.DenyResponse, error) {
	if len(req.GetReason()) > maxReason || strings.ContainsFunc(req.GetReason(), func(c rune) bool { return c < 0x20 }) {
		return nil, errs.New(errs.InvalidArgument, "reason: at most %d bytes, one line", maxReason)
	}
	r, err := a.decide(ctx, req.GetApprovalId(), func(r *approval.Request, ids []identity.ID, now time.Time) error {
		if err := a.s.checkPasskey(ctx, req.GetPasskey(), ids, r, "deny"); err != nil {
			return err
		}
		err := r.Deny(ids, req.GetReason(), now)
		a.s.notePasskey(ctx, req.GetPasskey(), "deny", r.PayloadSHA256, err)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &sigilv1.DenyResponse{Approval: approvalProto(r, a.s.opts.Now())}, nil
}

// decide applies an approver's decision to the request with id in one
// atomic update, after checking the access rules let the caller decide
// on its key; the audit record names the identity that decided.
func (a *approvalService) decide(ctx context.Context, id string, fn func(*approval.Request, []identity.ID, time.Time) error) (*approval.Request, error) {
	r, err := a.get(ctx, id)
	if err != nil {
		return nil, err
	}
	ids := identities(ctx)
	if _, ok := a.s.authorize(ids, authz.ApprovalsApprove, r.Target()); !ok && !r.MadeBy(ids) {
		return nil, errDenied
	}
	if r, err = a.s.approvals.Update(ctx, id, func(r *approval.Request) error { return fn(r, ids, a.s.opts.Now()) }); err != nil {
		return nil, err
	}
	step := "approved"
	if r.State == approval.Denied {
		step = "denied"
	}
	a.s.metrics.approvals.WithLabelValues(r.Operation, step).Inc()
	if rec, ok := ctx.Value(recordKey{}).(*audit.Record); ok {
		rec.Identity = r.DeniedBy
		if n := len(r.Approvals); r.State != approval.Denied && n > 0 {
			rec.Identity = r.Approvals[n-1].Identity
		}
	}
	return r, nil
}

// GetApprovalResult answers what became of a request: its response, the
// error it ended with, or what it waits for. An approved request no
// replica has run (the one that completed its quorum died) runs now.
func (a *approvalService) GetApprovalResult(ctx context.Context, req *sigilv1.GetApprovalResultRequest) (*sigilv1.GetApprovalResultResponse, error) {
	r, err := a.read(ctx, req.GetApprovalId(), true)
	if err != nil {
		return nil, err
	}
	now := a.s.opts.Now()
	if runnable(r, now) {
		if ran, err := a.s.run(ctx, r.ID); err == nil {
			r = ran
		} else if !errs.Is(err, errs.FailedPrecondition) { // another replica claimed it: report its state
			return nil, err
		}
	}
	switch st := r.StateAt(now); st {
	case approval.Done:
		res := &anypb.Any{}
		if err := proto.Unmarshal(r.Result, res); err != nil {
			return nil, errs.New(errs.Internal, "approval %s: its stored result: %w", r.ID, err)
		}
		return &sigilv1.GetApprovalResultResponse{Approval: approvalProto(r, now), Result: res}, nil
	case approval.Failed:
		return nil, status.Errorf(codeNamed(r.ErrorCode), "approval %s ran and failed: %s", r.ID, r.ErrorMessage)
	case approval.Pending:
		return nil, errs.New(errs.FailedPrecondition, "approval %s waits for %d more approval(s) from %s", r.ID, r.Waiting(), strings.Join(r.Approvers, ", "))
	case approval.Denied:
		return nil, errs.New(errs.FailedPrecondition, "approval %s was denied by %s: %s", r.ID, r.DeniedBy, r.Reason)
	case approval.Expired:
		return nil, errs.New(errs.FailedPrecondition, "approval %s expired at %s without its quorum", r.ID, r.Expires.UTC().Format(time.RFC3339))
	default:
		return nil, errs.New(errs.Unavailable, "approval %s is %s; retry shortly", r.ID, st)
	}
}

// runnable reports whether r is approved and nobody runs it: never
// claimed, or its runner's lease lapsed.
func runnable(r *approval.Request, now time.Time) bool {
	return r.State == approval.Approved || r.State == approval.Running && now.After(r.LeaseUntil)
}

// run claims an approved request for this replica and runs it, then
// records what it gave. Of replicas racing, one claims it; the others
// get FailedPrecondition. It runs in the trace of the call that set it
// off (the approval completing the quorum, a result asked for, the
// sweep), but not under that call's deadline or cancellation: a run
// begun is a run finished and recorded.
func (s *Server) run(caller context.Context, id string) (*approval.Request, error) {
	ctx, cancel := context.WithTimeout(trace.ContextWithSpanContext(context.Background(), trace.SpanContextFromContext(caller)), s.opts.ApprovalLease)
	defer cancel()
	claimed := false
	r, err := s.approvals.Update(ctx, id, func(r *approval.Request) (err error) {
		claimed, err = r.Claim(s.runner, s.opts.Now(), s.opts.ApprovalLease)
		return err
	})
	if err != nil || !claimed { // a request that is not run twice failed, as interrupted
		return r, err
	}
	failpoint.Hit("approval.after-claim")
	payload, err := s.approvals.Payload(ctx, id)
	if err != nil && !errs.Is(err, errs.FailedPrecondition) {
		return nil, err // the store failed: the claim lapses and the request runs later
	}
	result, code, msg := s.execute(ctx, r, payload)
	failpoint.Hit("approval.after-run")
	if r, err = s.approvals.Update(ctx, id, func(r *approval.Request) error { return r.Finish(s.runner, result, code, msg, s.opts.Now()) }); err != nil {
		return nil, err
	}
	if r.State == approval.Approved { // an outage: it runs again, with its payload
		return r, nil
	}
	if err := s.approvals.DropPayload(ctx, id); err != nil { // else the sweep drops it with the record
		s.log.Warn("dropping the payload of a request that ran failed", "approval_id", id, "err", err)
	}
	return r, nil
}

// execute runs an approved request's RPC as its requester, if the access
// rules in force still allow the requester the operation, and audits
// it, in a span of its own under traced's (run's: no caller's deadline).
// The run's deadline is half the claim's lease, so a live runner
// never outlasts its claim; it returns the response (an Any, marshalled) or the error's code
// and message.
func (s *Server) execute(traced context.Context, r *approval.Request, payload []byte) ([]byte, string, string) {
	start := time.Now()
	traced, span := tracing.Start(traced, "sigil.approval_run")
	defer span.End()
	rec := &audit.Record{Time: start.UTC(), RequestID: requestID(), Identity: r.Requester, Operation: r.Operation, Method: r.Method,
		KeyID: r.KeyID, Namespace: recorded(r.InNamespace()), ApprovalID: r.ID, RequestSHA256: r.PayloadSHA256, Outcome: "allowed",
		TraceID: tracing.TraceID(traced)}
	for _, v := range r.Approvals {
		rec.ApprovedBy = append(rec.ApprovedBy, v.Identity)
	}
	ctx, cancel := context.WithTimeout(context.WithValue(traced, recordKey{}, rec), s.opts.ApprovalLease/2)
	defer cancel()
	out, err := s.dispatch(namespace.NewContext(ctx, r.InNamespace()), r, payload, rec)
	namespace.Unscope(out, r.InNamespace())
	step := "ran"
	if err != nil {
		rec.Outcome, step = "failed", "failed"
	}
	s.metrics.approvals.WithLabelValues(r.Operation, step).Inc()
	if err = toStatus(s.record(rec, err, start)); err == nil {
		var req proto.Message
		if req, err = approval.DecodeRequest(r.Method, payload, r.PayloadSHA256); err == nil {
			s.committed(ctx, rec, r.Method, req, out)
		}
		err = nil
	}
	if err != nil {
		st := status.Convert(err)
		return nil, st.Code().String(), st.Message()
	}
	res, err := anypb.New(out)
	if err == nil {
		var b []byte
		if b, err = proto.Marshal(res); err == nil {
			return b, "", ""
		}
	}
	return nil, codes.Internal.String(), "encoding the result failed"
}

// dispatch calls r's method handler with its recorded request, the
// bytes whose hash was approved. A policy change runs loosening the
// key's policy only if it was approved as loosening it (see
// guardLoosening). A panic in the handler fails the request.
func (s *Server) dispatch(ctx context.Context, r *approval.Request, payload []byte, rec *audit.Record) (out proto.Message, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic running an approved request", "approval_id", r.ID, "method", r.Method, "panic", p)
			out, err = nil, errs.New(errs.Internal, "internal error")
		}
	}()
	ctx = context.WithValue(ctx, looseningKey{}, slices.Contains(r.Actions, actionLoosenPolicy))
	m, ok := s.methods[r.Method]
	if !ok {
		return nil, errs.New(errs.FailedPrecondition, "method %s is not served", r.Method)
	}
	// Its namespace must still be there (and not being deleted, for a
	// creation), as for a call made now.
	if err := s.inNamespace(ctx, r.Method, r.InNamespace()); err != nil {
		return nil, err
	}
	who, err := identity.Parse(r.Requester)
	if err != nil {
		return nil, errs.New(errs.PermissionDenied, "the requester %q is no identity", r.Requester)
	}
	if _, ok := s.authorize([]identity.ID{who}, authz.Op(r.Operation), r.Target()); !ok {
		return nil, errs.New(errs.PermissionDenied, "the access rules no longer allow %s %s on %s", r.Requester, r.Operation, r.KeyID)
	}
	// The review and the handler see the requester as the caller: a check
	// they make of the caller's rules (a JWK Set's patterns) is the
	// requester's.
	ctx = context.WithValue(ctx, runAsKey{}, []identity.ID{who})
	req, err := approval.DecodeRequest(r.Method, payload, r.PayloadSHA256)
	if err != nil {
		return nil, err
	}
	if err := s.quorumNow(ctx, r, req); err != nil {
		return nil, err
	}
	if p := s.payloadOf(r.Method, req); p != nil {
		sum := sha256.Sum256(p)
		rec.PayloadSHA256 = hex.EncodeToString(sum[:])
	}
	resp, err := m.desc.Handler(m.srv, ctx, func(v any) error { proto.Merge(v.(proto.Message), req); return nil }, nil)
	if err != nil {
		return nil, err
	}
	return resp.(proto.Message), nil
}

// quorumNow checks r's approvals against the rules in force, for the
// request as it reads now: the approval rule that would hold it now (if
// it asks at least the quorum r was held under; else r's own) must be
// met by approvals of identities it names that the access rules still
// let approve on the key. A rule made stricter since, a request whose
// facts changed (a transaction that now replaces another, a policy
// change that now loosens), or rights withdrawn stop the run.
func (s *Server) quorumNow(ctx context.Context, r *approval.Request, req proto.Message) error {
	facts, _, err := s.review(ctx, r.Method, authz.Op(r.Operation), req, s.testedOn(authz.Op(r.Operation), r.Target()))
	if err != nil {
		return err
	}
	need, named := r.Quorum, func(id identity.ID) bool { _, ok := r.Approver([]identity.ID{id}); return ok }
	rule, err := s.approvalRule(r.Method, authz.Op(r.Operation), r.Target(), facts)
	if err != nil {
		return err
	}
	if rule != nil && rule.QuorumSize() >= need {
		need, named = rule.QuorumSize(), rule.IsApprover
	}
	n := 0
	for _, v := range r.Approvals {
		id, err := identity.Parse(v.Identity)
		if err != nil || !named(id) {
			continue
		}
		if _, ok := s.authorize([]identity.ID{id}, authz.ApprovalsApprove, r.Target()); ok {
			n++
		}
	}
	if n < need {
		return errs.New(errs.PermissionDenied, "the approvals no longer make the quorum the rules in force ask of this request: %d of %d (approvers the rules name, still allowed to approve)", n, need)
	}
	return nil
}

// sweepApprovals, every interval until ctx ends, runs the approved
// requests nobody runs (their quorum's replica died before running them),
// prunes those that ended long ago and counts the others by state.
func (s *Server) sweepApprovals(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		all, err := s.approvals.Sweep(ctx, s.opts.Now())
		if err != nil {
			s.log.Warn("sweeping approvals failed", "err", err)
			continue
		}
		s.countHeld(all)
		for _, r := range all {
			if runnable(r, s.opts.Now()) {
				if _, err := s.run(ctx, r.ID); err != nil && !errs.Is(err, errs.FailedPrecondition) {
					s.log.Warn("running an approved request failed; it is retried", "approval_id", r.ID, "err", err)
				}
			}
		}
	}
}

// countHeld sets the gauge of kept requests by state.
func (s *Server) countHeld(all []*approval.Request) {
	n := map[approval.State]float64{}
	for _, r := range all {
		n[r.StateAt(s.opts.Now())]++
	}
	for _, st := range approval.States {
		s.metrics.held.WithLabelValues(string(st)).Set(n[st])
	}
}

// noteApproval names the request, and the hash of its bytes, in the
// call's audit record.
func noteApproval(ctx context.Context, r *approval.Request) {
	if rec, ok := ctx.Value(recordKey{}).(*audit.Record); ok {
		rec.ApprovalID, rec.KeyID, rec.RequestSHA256 = r.ID, r.KeyID, r.PayloadSHA256
	}
}

// codeNamed is the gRPC code spelt name (Internal if none is).
func codeNamed(name string) codes.Code {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if c.String() == name && c != codes.OK {
			return c
		}
	}
	return codes.Internal
}

func approvalProto(r *approval.Request, now time.Time) *sigilv1.Approval {
	out := &sigilv1.Approval{ApprovalId: r.ID, State: string(r.StateAt(now)), KeyId: r.KeyID, Namespace: r.InNamespace(), Operation: r.Operation, Method: r.Method,
		Requester: r.Requester, PayloadSha256: r.PayloadSHA256, Approvers: r.Approvers, Quorum: int32(r.Quorum), DeniedBy: r.DeniedBy,
		Reason: r.Reason, CreatedAt: timestamppb.New(r.Created), ExpiresAt: timestamppb.New(r.Expires), FinishedAt: timeOrNil(r.Finished),
		ErrorCode: r.ErrorCode, ErrorMessage: r.ErrorMessage}
	for _, f := range r.Summary {
		out.Summary = append(out.Summary, &sigilv1.ApprovalField{Name: f.Name, Value: f.Value})
	}
	for _, v := range r.Approvals {
		out.Approvals = append(out.Approvals, &sigilv1.ApprovalVote{Identity: v.Identity, At: timestamppb.New(v.At), PasskeyAssertion: []byte(v.Passkey), PasskeyOrigin: v.Origin})
	}
	return out
}

// maxPasskey bounds a decision's passkey assertion.
const maxPasskey = 4 << 10

// checkPasskey verifies a decision's passkey assertion, if it carries
// one (the console's; any gRPC client may send one, so none is taken on
// trust): made by a passkey enrolled for the identity the decision is
// recorded as, on this server's console, over this approval, decision
// and request.
// The verified assertion goes into the decision's audit record once the
// decision is made (notePasskey): one that decided nothing is never
// written where it could be read and replayed.
func (s *Server) checkPasskey(ctx context.Context, raw []byte, ids []identity.ID, r *approval.Request, decision string) error {
	if len(raw) == 0 {
		if r.Passkey {
			return errs.New(errs.PermissionDenied, "this request's approval rule requires a passkey: decide it in the console")
		}
		return nil
	}
	if len(raw) > maxPasskey || s.opts.Anchors == nil || s.opts.ConsoleOrigin == "" {
		return errs.New(errs.InvalidArgument, "passkey: at most %d bytes, and only to a server with a console", maxPasskey)
	}
	// The passkey must be the one enrolled for the identity the decision
	// is recorded as (the first of the caller's that the request's
	// approvers name), not for any other the certificate carries.
	who, ok := r.Approver(ids)
	if !ok {
		return errs.New(errs.PermissionDenied, "passkey: no identity of this certificate is an approver of this request")
	}
	rp := console.Relying{Origin: s.opts.ConsoleOrigin, RPID: s.opts.ConsoleRPID}
	_, err := (console.Store{A: s.opts.Anchors}).Verify(ctx, raw, who.String(), console.Challenge(r.ID, decision, r.PayloadSHA256), rp)
	return err
}

// notePasskey writes a decision's verified passkey assertion into its
// audit record, if the decision was made, with the decision and the
// request's hash its challenge was made of (the record names the
// approval): what console.AuditCheck needs to check it offline.
func (s *Server) notePasskey(ctx context.Context, raw []byte, decision, payloadSHA256 string, err error) {
	if err == nil && len(raw) > 0 {
		noteDetail(ctx, console.DetailOrigin, s.opts.ConsoleOrigin)
		noteDetail(ctx, console.DetailAssertion, string(raw))
		noteDetail(ctx, console.DetailDecision, decision)
		noteDetail(ctx, console.DetailPayload, payloadSHA256)
	}
}
