package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/identity"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/internal/tracing"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
)

// baseOperations names the policy operation of every RPC of the server's
// own services; each purpose names those of its service. Together they
// are the whole list: a method missing is refused, so an RPC added
// without an operation is shut, not open.
var baseOperations = map[string]authz.Op{
	sigilv1.KeyService_CreateKey_FullMethodName:            authz.KeysAdmin,
	sigilv1.KeyService_GetImportParameters_FullMethodName:  authz.KeysAdmin,
	sigilv1.KeyService_UpdateKeyPolicy_FullMethodName:      authz.KeysAdmin,
	sigilv1.KeyService_RotateKey_FullMethodName:            authz.KeysAdmin,
	sigilv1.KeyService_RevokeGeneration_FullMethodName:     authz.KeysAdmin,
	sigilv1.KeyService_DisableKey_FullMethodName:           authz.KeysAdmin,
	sigilv1.KeyService_EnableKey_FullMethodName:            authz.KeysAdmin,
	sigilv1.KeyService_ScheduleKeyDeletion_FullMethodName:  authz.KeysAdmin,
	sigilv1.KeyService_CancelKeyDeletion_FullMethodName:    authz.KeysAdmin,
	sigilv1.KeyService_UpdateKeyMetadata_FullMethodName:    authz.KeysAdmin,
	sigilv1.KeyService_GetKey_FullMethodName:               authz.KeysRead,
	sigilv1.KeyService_ListKeys_FullMethodName:             authz.KeysRead,
	sigilv1.KeyService_GetPublicKey_FullMethodName:         authz.KeysRead,
	sigilv1.AuditService_GetAuditHead_FullMethodName:       authz.KeysRead,     // on the audit key, sigil.audit
	sigilv1.AuditService_TailAudit_FullMethodName:          authz.KeysRead,     // on the audit key, sigil.audit
	sigilv1.StatusService_GetStatus_FullMethodName:         authz.KeysRead,     // on sigil.status
	sigilv1.BackupService_Backup_FullMethodName:            authz.StoreBackup,  // on the audit key, which signs it
	sigilv1.ConsoleService_Enroll_FullMethodName:           authz.ConsoleAdmin, // on sigil.console
	sigilv1.ConsoleService_ListEnrollments_FullMethodName:  authz.ConsoleAdmin,
	sigilv1.ConsoleService_RevokeEnrollment_FullMethodName: authz.ConsoleAdmin,
	// The namespace methods are decided on the namespace they name.
	sigilv1.NamespaceService_CreateNamespace_FullMethodName:   authz.NamespacesAdmin,
	sigilv1.NamespaceService_DeleteNamespace_FullMethodName:   authz.NamespacesAdmin,
	sigilv1.NamespaceService_FreezeNamespace_FullMethodName:   authz.NamespacesAdmin,
	sigilv1.NamespaceService_UnfreezeNamespace_FullMethodName: authz.NamespacesAdmin,
	sigilv1.NamespaceService_GetNamespace_FullMethodName:      authz.NamespacesRead,
	sigilv1.NamespaceService_ListNamespaces_FullMethodName:    authz.NamespacesRead,
	// The approval methods name a held request, not a key: each
	// authorizes against the request it reads (selfAuthorized).
	sigilv1.ApprovalService_ListApprovals_FullMethodName:     authz.ApprovalsApprove,
	sigilv1.ApprovalService_GetApproval_FullMethodName:       authz.ApprovalsApprove,
	sigilv1.ApprovalService_Approve_FullMethodName:           authz.ApprovalsApprove,
	sigilv1.ApprovalService_Deny_FullMethodName:              authz.ApprovalsApprove,
	sigilv1.ApprovalService_GetApprovalResult_FullMethodName: authz.ApprovalsApprove,
}

// routes is how the server admits each method: its operation, the
// purpose serving it (none for the server's own), whether it may name no
// key, and whether it is a batch of calls of another.
type routes struct {
	ops      map[string]authz.Op
	servedBy map[string]purpose.Purpose
	keyless  map[string]bool
	batches  map[string]bool
}

// routing builds the routes of the server's own methods and each
// purpose's. A method claimed twice is a programming error found at start.
func routing(purposes []purpose.Purpose) routes {
	r := routes{ops: maps.Clone(baseOperations), servedBy: map[string]purpose.Purpose{}, keyless: map[string]bool{}, batches: map[string]bool{}}
	for method := range baseOperations {
		r.keyless[method] = true // the server's own check their IDs themselves
	}
	for _, p := range purposes {
		for method, op := range p.Operations() {
			if _, taken := r.ops[method]; taken {
				panic(fmt.Sprintf("purpose %s claims %s, which another service has", p.Name(), method))
			}
			r.ops[method], r.servedBy[method] = op, p
		}
		if k, ok := p.(purpose.Keyless); ok {
			for _, method := range k.KeylessMethods() {
				r.keyless[method] = r.servedBy[method] == p
			}
		}
		if b, ok := p.(purpose.Batches); ok {
			for _, method := range b.BatchMethods() {
				r.batches[method] = r.servedBy[method] == p
				r.keyless[method] = r.batches[method]
			}
		}
	}
	return r
}

// charge is how many requests of its quota a call of method spends: one,
// or none for a batch, whose items each spend theirs.
func (r routes) charge(method string) int {
	if r.batches[method] {
		return 0
	}
	return 1
}

// openServices need only a verified certificate, no operation: health
// checks and reflection reveal no key. Every other service, a purpose's
// included, goes through the access checks; an unknown one is refused.
var openServices = map[string]bool{
	healthpb.Health_ServiceDesc.ServiceName:    true,
	"grpc.reflection.v1.ServerReflection":      true,
	"grpc.reflection.v1alpha.ServerReflection": true,
}

// isOpen reports whether a full method name belongs to an open service.
func isOpen(fullMethod string) bool {
	svc, _, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	return openServices[svc]
}

type recordKey struct{}

// requestIDKey holds a call's request ID in its context, from the first
// interceptor on: its log lines, span and audit record name the same one
// (and the items of a batch, their batch's).
type requestIDKey struct{}

// withRequestID is ctx with its call's request ID fixed.
func withRequestID(ctx context.Context) context.Context {
	if _, ok := ctx.Value(requestIDKey{}).(string); ok {
		return ctx
	}
	return context.WithValue(ctx, requestIDKey{}, requestIDOf(ctx))
}

// access admits each Sigil request before any key is looked up, and
// writes every decision to the audit log before the response leaves. A
// denial says nothing of whether the key exists. If the audit record
// cannot be written, the response is withheld: nothing is signed off the
// record.
func (s *Server) access(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if isOpen(info.FullMethod) {
		if err := s.authenticate(ctx); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
	start := time.Now()
	op, named := s.routes.ops[info.FullMethod]
	rec := s.newRecord(ctx, start, info.FullMethod, req)
	grpc.SetHeader(ctx, metadata.Pairs("x-request-id", rec.RequestID))
	var resp any
	outcome, err := step(ctx, "sigil.authorize", func(ctx context.Context) (string, error) {
		outcome, _, err := s.admit(ctx, rec, req, info.FullMethod, op, named, s.routes.charge(info.FullMethod))
		return outcome, err
	})
	rec.Outcome = outcome
	ctx = namespace.NewContext(ctx, rec.Namespace)
	if err == nil {
		_, span := tracing.Start(ctx, "sigil.approval_review") // hold's context goes on, not its span
		if ctx, err = s.hold(ctx, rec, info.FullMethod, op, req); err != nil && rec.Outcome != "held" {
			rec.Outcome = "failed"
		}
		span.End()
	}
	if err == nil {
		resp, err = h(context.WithValue(ctx, recordKey{}, rec), req)
		if err != nil {
			rec.Outcome = "failed"
		}
	}
	describe(ctx, rec)
	if _, err = step(ctx, "sigil.audit_append", func(context.Context) (struct{}, error) { return struct{}{}, s.record(rec, err, start) }); err == nil {
		s.committed(ctx, rec, info.FullMethod, req, resp)
	}
	if m, ok := resp.(proto.Message); ok {
		namespace.Unscope(m, rec.Namespace)
	}
	return resp, unscopeError(err, rec.Namespace)
}

// newRecord begins the audit record of a call of method with req at
// start: who called from where, the operation (the method's name if it
// has none), and the hash of what it asks to sign.
func (s *Server) newRecord(ctx context.Context, start time.Time, method string, req any) *audit.Record {
	op, named := s.routes.ops[method]
	rec := &audit.Record{Time: start.UTC(), RequestID: requestIDOf(ctx), Operation: string(op), Peer: peerAddr(ctx)}
	if !named {
		rec.Operation = method
	} else {
		rec.Method = method
	}
	s.notePayload(rec, method, req)
	return rec
}

// notePayload records the hash of what req asks to sign, if anything.
func (s *Server) notePayload(rec *audit.Record, method string, req any) {
	if p := s.payloadOf(method, req); p != nil && s.opts.Audit != nil {
		sum := sha256.Sum256(p)
		rec.PayloadSHA256 = hex.EncodeToString(sum[:])
	}
}

// committed lets the purpose serving method act on a request whose audit
// record is written (see purpose.Committer), and records what it notes.
func (s *Server) committed(ctx context.Context, rec *audit.Record, method string, req, resp any) {
	c, ok := s.routes.servedBy[method].(purpose.Committer)
	if !ok || resp == nil {
		return
	}
	if note := c.Committed(ctx, s.deps, method, req, resp); note != "" {
		after := *rec
		after.Time, after.Reason, after.LatencyMS = s.opts.Now().UTC(), note, 0
		after.Operation = rec.Operation + ".committed"
		if err := s.record(&after, nil, time.Now()); err != nil {
			s.log.Error("the record of what followed a request could not be written", "request_id", rec.RequestID, "err", err)
		}
	}
}

// errDenied is every authorization refusal: it says nothing of whether
// the key exists.
var errDenied = errs.New(errs.PermissionDenied, "permission denied")

// admit decides a request: the client's certificate must still be
// valid and trusted, the method must have an operation, the request
// must be well-formed, and a policy rule must allow one of the client's
// identities the operation on the key. It returns the outcome to record
// and, unless "allowed", the error to answer. The record names the
// identity the rule allowed, or when none did, all of them.
//
// It decides n requests alike at once (a batch's items on one key, req
// the first) and charges the quota for each: granted is how many of
// them it let through, the first ones; the error, when some are but not
// all, is the others' answer.
func (s *Server) admit(ctx context.Context, rec *audit.Record, req any, method string, op authz.Op, named bool, n int) (outcome string, granted int, err error) {
	var decodeErr error
	if failed := decodeFailed(ctx); failed != nil {
		decodeErr = failed.Err()
		rec.Reason, rec.RequestBytes = "malformed request", failed.size
	}
	ids := identities(ctx)
	defer func() {
		if rec.Identity == "" {
			rec.Identities = identity.Brief(ids)
		}
	}()
	if err := s.authenticate(ctx); err != nil {
		return "denied", 0, err
	}
	if !named {
		return "denied", 0, errDenied
	}
	ns, err := requestNamespace(ctx)
	if err != nil {
		return "failed", 0, err
	}
	rec.Namespace = recorded(ns)
	if err := checkRequest(req, decodeErr); err != nil {
		// An impossible key ID is recorded as its length and SHA-256,
		// never its bytes.
		if id := keyIDOf(req); id != "" && keyring.ValidateID(id) != nil {
			rec.InvalidKeyID = audit.DigestOf(id)
		}
		return "failed", 0, err
	}
	target, err := s.scope(req, method, rec)
	if err != nil {
		return "failed", 0, err
	}
	if _, names := keyIDField(req); !names && !s.routes.keyless[method] {
		return "failed", 0, errs.New(errs.InvalidArgument, "the request names no key")
	}
	granted, rest := n, error(nil)
	if s.opts.Authz != nil {
		d := s.decide(ids, op, target, method, n)
		switch {
		case !d.OK && d.RetryAfter > 0:
			rec.Identity = d.Who.String()
			s.metrics.throttled.WithLabelValues(d.Rule, string(op)).Inc()
			return "throttled", 0, throttled(d.RetryAfter)
		case !d.OK:
			return "denied", 0, errDenied
		case d.RetryAfter > 0:
			s.metrics.throttled.WithLabelValues(d.Rule, string(op)).Inc()
			granted, rest = d.Granted, throttled(d.RetryAfter)
		}
		rec.Identity = d.Who.String()
	}
	// Only a caller the namespace's rules let in learns whether it exists.
	if err := s.inNamespace(ctx, method, ns); err != nil {
		return "failed", 0, err
	}
	return "allowed", granted, rest
}

// decide applies the policy to a request: a method that authorizes in
// its handler (selfAuthorized) needs only a rule naming the caller in the
// namespace it is called in, and spends that rule's quota; any other
// needs a rule allowing op on keyID (qualified).
func (s *Server) decide(ids []identity.ID, op authz.Op, keyID, method string, n int) authz.Decision {
	if selfAuthorized[method] {
		ns := namespace.Of(keyID)
		if method == sigilv1.NamespaceService_ListNamespaces_FullMethodName {
			ns = "" // about every namespace: each is decided as it is listed
		}
		return s.opts.Authz.DecideAny(ids, op, ns, s.opts.Now())
	}
	return s.opts.Authz.DecideN(ids, op, keyID, s.opts.Now(), n)
}

// throttled is the answer to a request past its identity's quota:
// ResourceExhausted, with when to retry in a RetryInfo detail.
func throttled(after time.Duration) error {
	st := status.New(codes.ResourceExhausted, fmt.Sprintf("quota: this identity's rate for the operation is spent; retry in %v", after.Round(time.Millisecond)))
	if withInfo, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(after)}); err == nil {
		st = withInfo
	}
	return st.Err()
}

// checkRequest refuses a request that did not decode, breaks the schema
// (see checkMessage) or names a key ID that cannot exist.
func checkRequest(req any, decodeErr error) error {
	if decodeErr != nil {
		return decodeErr
	}
	m, ok := req.(proto.Message)
	if !ok {
		return errs.New(errs.InvalidArgument, "request is not a protobuf message")
	}
	if err := checkMessage(m.ProtoReflect()); err != nil {
		return err
	}
	if id, ok := keyIDField(req); ok {
		return keyring.ValidateID(id)
	}
	return nil
}

// record completes the audit record of a decision and writes it.
func (s *Server) record(rec *audit.Record, err error, start time.Time) error {
	if aerr := s.recordAll([]*audit.Record{rec}, []error{err}, start); aerr != nil {
		return aerr
	}
	return err
}

// recordAll completes the records of decisions taken together (failed[i]
// is recs[i]'s answer) and writes them in one group. An error means they
// may not all be written: every answer they record is withheld.
func (s *Server) recordAll(recs []*audit.Record, failed []error, start time.Time) error {
	for i, rec := range recs {
		rec.Code = status.Code(toStatus(failed[i])).String()
		rec.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
		if rec.Outcome == "denied" {
			op := rec.Operation
			if strings.HasPrefix(op, "/") {
				op = "unnamed" // a method with no operation: its name, the client's choice, is no label
			}
			s.metrics.denials.WithLabelValues(op).Inc()
		}
	}
	if s.opts.Audit == nil {
		return nil
	}
	begun := time.Now()
	aerr := s.opts.Audit.WriteAll(recs)
	s.metrics.auditTime.Observe(time.Since(begun).Seconds())
	if aerr != nil {
		s.log.Error("audit write failed; response withheld", "request_id", recs[0].RequestID, "records", len(recs), "err", aerr)
		return errs.New(errs.Unavailable, "audit log unavailable")
	}
	return nil
}

// streamAccess refuses every streaming method but the open services'
// (reflection, health watches), which need only a verified certificate:
// the access checks above are unary, so any other stream could only pass
// them unchecked.
func (s *Server) streamAccess(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if isOpen(info.FullMethod) {
		if err := s.authenticate(ss.Context()); err != nil {
			return toStatus(err)
		}
		return h(srv, ss)
	}
	start := time.Now()
	rec := &audit.Record{Time: start.UTC(), RequestID: requestID(), Operation: info.FullMethod, Peer: peerAddr(ss.Context()),
		Identities: identity.Brief(identities(ss.Context())), Outcome: "denied"}
	return toStatus(s.record(rec, errDenied, start))
}

// unknownMethod refuses, and audits, a call to a method no registered
// service has (gRPC would answer Unimplemented, unaudited, without even
// checking the certificate is still valid).
func (s *Server) unknownMethod(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	start := time.Now()
	rec := &audit.Record{Time: start.UTC(), RequestID: requestID(), Operation: method, Peer: peerAddr(ss.Context()),
		Identities: identity.Brief(identities(ss.Context())), Outcome: "denied"}
	err := s.authenticate(ss.Context())
	if err == nil {
		err = errDenied
	}
	return toStatus(s.record(rec, err, start))
}

// authorize decides whether a client with identities ids may do op on
// key keyID, and names the typed identity the allowing rule matched ("" when
// there is no authorizer).
func (s *Server) authorize(ids []identity.ID, op authz.Op, keyID string) (string, bool) {
	if s.opts.Authz == nil {
		return "", true
	}
	who, ok := s.opts.Authz.Allowed(ids, op, keyID)
	return who.String(), ok
}

// covering reports which identity of the caller a rule allows op on
// every key each of patterns can match (see authz.Policy.Covering).
func (s *Server) covering(ctx context.Context, op authz.Op, patterns []string) (string, bool) {
	if s.opts.Authz == nil {
		return "", true
	}
	who, ok := s.opts.Authz.Covering(identities(ctx), op, patterns)
	return who.String(), ok
}

// noteGeneration records which generation served the request.
func noteGeneration(ctx context.Context, n int) {
	if rec, ok := ctx.Value(recordKey{}).(*audit.Record); ok {
		rec.Generation = n
	}
}

// noteDetail writes a purpose's detail into the request's audit record.
func noteDetail(ctx context.Context, name, value string) {
	if rec, ok := ctx.Value(recordKey{}).(*audit.Record); ok {
		if rec.Details == nil {
			rec.Details = map[string]string{}
		}
		rec.Details[name] = value
	}
}

// allowedKey reports whether the caller may read key id (for listings).
func (s *Server) allowedKey(ctx context.Context, id string) bool {
	_, ok := s.authorize(identities(ctx), authz.KeysRead, id)
	return ok
}

// runAsKey carries, in an approved request's run, the requester's
// identity: the run's caller. Only the server sets it.
type runAsKey struct{}

// identities are the caller's typed identities, from its verified client
// certificate (or, in an approved request's run, the requester's); none
// when there is none (which no policy rule matches).
func identities(ctx context.Context) []identity.ID {
	if ids, ok := ctx.Value(runAsKey{}).([]identity.ID); ok {
		return ids
	}
	chain, conn := tlsPeer(ctx)
	switch {
	case chain == nil:
		return nil
	case conn == nil:
		return identity.Of(chain[0])
	}
	if ids := conn.ids.Load(); ids != nil {
		return slices.Clip(*ids) // shared: an append copies
	}
	ids := slices.Clip(identity.Of(chain[0]))
	conn.ids.Store(&ids)
	return ids
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// keyIDField is the key a request names, if its type names one.
func keyIDField(req any) (string, bool) {
	switch r := req.(type) {
	case *sigilv1.GetAuditHeadRequest, *sigilv1.TailAuditRequest: // reading the audit trail reads the audit key
		return keyring.AuditKeyID, true
	case *sigilv1.BackupRequest: // a backup is signed with the audit key
		return keyring.AuditKeyID, true
	case *sigilv1.EnrollRequest, *sigilv1.ListEnrollmentsRequest, *sigilv1.RevokeEnrollmentRequest:
		return ConsoleKeyID, true
	case *sigilv1.GetStatusRequest:
		return StatusKeyID, true
	case interface{ GetKeyId() string }:
		return r.GetKeyId(), true
	case interface{ GetId() string }:
		return r.GetId(), true
	}
	return "", false
}

// keyIDOf is the key a request names; "" for none (a listing).
func keyIDOf(req any) string {
	id, _ := keyIDField(req)
	return id
}

// payloadOf is what the request asks to have signed, as the purpose
// serving method says; only its hash is recorded.
func (s *Server) payloadOf(method string, req any) []byte {
	if p, ok := s.routes.servedBy[method]; ok {
		return p.Payload(req)
	}
	return nil
}

func requestID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// requestIDPattern is a request ID a client may give (x-request-id): one
// token of 8 to 64 letters, digits, dots, dashes and underscores, so it
// is safe in logs and records as it is.
var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{8,64}$`)

// requestIDOf is the ID of the request ctx carries: the client's
// x-request-id if it gives a valid one (its trace joins Sigil's audit
// record and logs), else a new one.
func requestIDOf(ctx context.Context) string {
	if id, ok := ctx.Value(requestIDKey{}).(string); ok {
		return id
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("x-request-id"); len(v) == 1 && requestIDPattern.MatchString(v[0]) {
			return v[0]
		}
	}
	return requestID()
}
