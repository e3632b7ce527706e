package server

import (
	"context"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/keyring"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
)

// requestNamespace is the namespace the call ctx describes is made in.
func requestNamespace(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	switch vals := md.Get(namespace.Header); {
	case len(vals) == 0 || len(vals) == 1 && vals[0] == "":
		return namespace.Root, nil
	case len(vals) > 1:
		return "", errs.New(errs.InvalidArgument, "%s: one namespace per call", namespace.Header)
	default:
		return vals[0], namespace.Validate(vals[0])
	}
}

// namespaceMethods are decided on the namespace their request names, not
// the one the call is made in.
var namespaceMethods = map[string]bool{
	sigilv1.NamespaceService_CreateNamespace_FullMethodName:   true,
	sigilv1.NamespaceService_GetNamespace_FullMethodName:      true,
	sigilv1.NamespaceService_ListNamespaces_FullMethodName:    true,
	sigilv1.NamespaceService_DeleteNamespace_FullMethodName:   true,
	sigilv1.NamespaceService_FreezeNamespace_FullMethodName:   true,
	sigilv1.NamespaceService_UnfreezeNamespace_FullMethodName: true,
}

// namespaceActions name what each NamespaceService method changing a
// namespace does, for approval rules' actions.
var namespaceActions = map[string]string{
	sigilv1.NamespaceService_CreateNamespace_FullMethodName:   "create",
	sigilv1.NamespaceService_DeleteNamespace_FullMethodName:   "delete",
	sigilv1.NamespaceService_FreezeNamespace_FullMethodName:   "freeze",
	sigilv1.NamespaceService_UnfreezeNamespace_FullMethodName: "unfreeze",
}

// alwaysHeld are the methods held for approval whatever the approval
// rules say: lifting a freeze takes more than the one admin who may pull
// it (see approvalRule).
var alwaysHeld = map[string]bool{sigilv1.NamespaceService_UnfreezeNamespace_FullMethodName: true}

// creations are the methods that make something in the namespace they
// are called in: it must not be being deleted.
var creations = map[string]bool{
	sigilv1.KeyService_CreateKey_FullMethodName:    true,
	sigilv1.JWTService_CreateJWKSet_FullMethodName: true,
}

// inNamespace answers nil if method may run in namespace ns: it exists
// (NotFound if not) and, for a creation, is not being deleted. The
// NamespaceService's methods see to their namespace themselves.
func (s *Server) inNamespace(ctx context.Context, method, ns string) error {
	switch {
	case namespaceMethods[method]:
		return nil
	case creations[method]:
		return s.namespaces.Usable(ctx, ns)
	}
	_, err := s.namespaces.Get(ctx, ns)
	return err
}

// scope places the request in its namespace (rec.Namespace; for a
// NamespaceService method, the one it names) and names its key in rec. It
// returns the target the policy decides on: the key, qualified, or for a
// keyless call the namespace itself.
func (s *Server) scope(req any, method string, rec *audit.Record) (string, error) {
	if namespaceMethods[method] {
		r, ok := req.(interface{ GetNamespace() string })
		if !ok { // the listing: each namespace is decided as it is listed
			return namespace.Qualify(rec.Namespace, ""), nil
		}
		if err := namespace.Validate(r.GetNamespace()); err != nil {
			return "", err
		}
		rec.Namespace = recorded(r.GetNamespace())
		return namespace.Qualify(r.GetNamespace(), ""), nil
	}
	if s.routes.batches[method] { // its items are placed each as a call of its own, so one bad item fails alone
		return targetOf(rec), nil
	}
	if err := namespace.Scope(req.(proto.Message), rec.Namespace); err != nil {
		return "", err
	}
	rec.KeyID = keyIDOf(req)
	return targetOf(rec), nil
}

// recorded is namespace ns as an audit record names it: root's records
// name none, as before namespaces existed.
func recorded(ns string) string {
	if ns == namespace.Root {
		return ""
	}
	return ns
}

// targetOf is what the policy decides a recorded call on: its key, or
// its namespace when it names none.
func targetOf(rec *audit.Record) string {
	if rec.KeyID != "" {
		return rec.KeyID
	}
	return namespace.Qualify(rec.Namespace, "")
}

// approvalRule is the rule a request of op on target with facts f must
// be approved under: the configured one; for a method always held that
// none holds, one approval by another identity allowed op on target.
func (s *Server) approvalRule(method string, op authz.Op, target string, f authz.Facts) (*authz.ApprovalRule, error) {
	if rule := s.opts.Authz.Approval(op, target, f); rule != nil || !alwaysHeld[method] {
		return rule, nil
	}
	if rule := s.opts.Authz.DefaultApproval(op, target); rule != nil {
		return rule, nil
	}
	return nil, errs.New(errs.FailedPrecondition, "this request needs an approval, and no rule names anyone who could give it")
}

// namespaceService implements sigil.v1.NamespaceService over the
// registry.
type namespaceService struct {
	sigilv1.UnimplementedNamespaceServiceServer
	s *Server
}

var _ sigilv1.NamespaceServiceServer = (*namespaceService)(nil)

func (n *namespaceService) CreateNamespace(ctx context.Context, req *sigilv1.CreateNamespaceRequest) (*sigilv1.CreateNamespaceResponse, error) {
	if err := keyring.CheckLabels(req.GetLabels()); err != nil {
		return nil, err
	}
	if err := keyring.CheckInventory(req.GetOwner(), ""); err != nil {
		return nil, err
	}
	rec, err := n.s.namespaces.Create(ctx, namespace.Record{Name: req.GetNamespace(), Labels: req.GetLabels(), Owner: req.GetOwner(),
		CreatedAt: n.s.opts.Now().UTC(), CreatedBy: callerOf(ctx)})
	if err != nil {
		return nil, err
	}
	return &sigilv1.CreateNamespaceResponse{Namespace: namespaceProto(rec)}, nil
}

func (n *namespaceService) GetNamespace(ctx context.Context, req *sigilv1.GetNamespaceRequest) (*sigilv1.GetNamespaceResponse, error) {
	rec, err := n.s.namespaces.Get(ctx, req.GetNamespace())
	if err != nil {
		return nil, err
	}
	return &sigilv1.GetNamespaceResponse{Namespace: namespaceProto(rec)}, nil
}

// ListNamespaces lists the namespaces the caller may read.
func (n *namespaceService) ListNamespaces(ctx context.Context, _ *sigilv1.ListNamespacesRequest) (*sigilv1.ListNamespacesResponse, error) {
	all, err := n.s.namespaces.List(ctx)
	if err != nil {
		return nil, err
	}
	out := &sigilv1.ListNamespacesResponse{}
	for _, rec := range all {
		if _, ok := n.s.authorize(identities(ctx), authz.NamespacesRead, namespace.Qualify(rec.Name, "")); ok {
			out.Namespaces = append(out.Namespaces, namespaceProto(rec))
		}
	}
	return out, nil
}

// DeleteNamespace deletes an empty namespace: no key (deleted ones
// included: their IDs stay reserved), no request awaiting approval or
// running, and nothing a purpose keeps in it.
func (n *namespaceService) DeleteNamespace(ctx context.Context, req *sigilv1.DeleteNamespaceRequest) (*sigilv1.DeleteNamespaceResponse, error) {
	ns := req.GetNamespace()
	err := n.s.namespaces.Delete(ctx, ns, func(ctx context.Context) error {
		for _, k := range n.s.opts.Keyring.List(ctx) {
			if namespace.Of(k.ID) == ns {
				return errs.New(errs.FailedPrecondition, "namespace %q holds keys (%s first); delete them first", ns, namespace.Local(k.ID))
			}
		}
		if n.s.approvals != nil {
			held, err := n.s.approvals.List(ctx)
			if err != nil {
				return err
			}
			now := n.s.opts.Now()
			for _, r := range held {
				if r.InNamespace() == ns && r.Live(now) {
					return errs.New(errs.FailedPrecondition, "namespace %q holds request %s awaiting approval; deny it or let it expire first", ns, r.ID)
				}
			}
		}
		for _, p := range n.s.purposes {
			if h, ok := p.(purpose.NamespaceHolder); ok {
				if err := h.Empty(ctx, n.s.deps, ns); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &sigilv1.DeleteNamespaceResponse{}, nil
}

// FreezeNamespace pulls the brake: from now on no key of the namespace
// signs, on this replica at once and on the others within their refresh.
func (n *namespaceService) FreezeNamespace(ctx context.Context, req *sigilv1.FreezeNamespaceRequest) (*sigilv1.FreezeNamespaceResponse, error) {
	now, by := n.s.opts.Now().UTC(), callerOf(ctx)
	rec, err := n.s.namespaces.Update(ctx, req.GetNamespace(), func(rec *namespace.Record) error {
		// Frozen again, it is counted again: an unfreeze asked before
		// this freeze no longer lifts it (see UnfreezeNamespace).
		rec.Frozen, rec.FrozenBy, rec.FrozenAt = true, by, now
		rec.Freezes++
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &sigilv1.FreezeNamespaceResponse{Namespace: namespaceProto(rec)}, nil
}

// UnfreezeNamespace lifts a freeze; the access path holds it for
// approval first (alwaysHeld, with the freeze it lifts named: see
// nameFreeze), so it runs only approved, and only if that freeze is still
// the one in force: the approvers judged it, not a later one.
func (n *namespaceService) UnfreezeNamespace(ctx context.Context, req *sigilv1.UnfreezeNamespaceRequest) (*sigilv1.UnfreezeNamespaceResponse, error) {
	rec, err := n.s.namespaces.Update(ctx, req.GetNamespace(), func(rec *namespace.Record) error {
		if rec.Frozen && req.GetFreezes() != 0 && rec.Freezes != req.GetFreezes() {
			return errs.New(errs.FailedPrecondition, "namespace %q was frozen again (freeze %d) after this unfreeze of freeze %d was asked; ask again", rec.Name, rec.Freezes, req.GetFreezes())
		}
		rec.Frozen, rec.FrozenBy, rec.FrozenAt = false, "", time.Time{}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &sigilv1.UnfreezeNamespaceResponse{Namespace: namespaceProto(rec)}, nil
}

// nameFreeze makes an unfreeze about to be held name the freeze it
// lifts, if it names none: the one in force now.
func (s *Server) nameFreeze(ctx context.Context, req any) error {
	r, ok := req.(*sigilv1.UnfreezeNamespaceRequest)
	if !ok || r.GetFreezes() != 0 {
		return nil
	}
	rec, err := s.namespaces.Get(ctx, r.GetNamespace())
	if err != nil {
		return err
	}
	r.Freezes = rec.Freezes
	return nil
}

// callerOf is the identity the access rule allowed the call ctx
// belongs to, as its audit record names it.
func callerOf(ctx context.Context) string {
	if rec, ok := ctx.Value(recordKey{}).(*audit.Record); ok {
		return rec.Identity
	}
	return ""
}

func namespaceProto(rec namespace.Record) *sigilv1.Namespace {
	out := &sigilv1.Namespace{Name: rec.Name, Labels: rec.Labels, Owner: rec.Owner, Frozen: rec.Frozen, FrozenBy: rec.FrozenBy, Freezes: rec.Freezes}
	if !rec.CreatedAt.IsZero() {
		out.CreateTime = timestamppb.New(rec.CreatedAt)
	}
	if !rec.FrozenAt.IsZero() {
		out.FreezeTime = timestamppb.New(rec.FrozenAt)
	}
	return out
}

// unscopeError is err as a caller in namespace ns reads it: the names it
// quotes ("NS/ID") without their namespace, as the caller gave them.
func unscopeError(err error, ns string) error {
	if err == nil || ns == "" || ns == namespace.Root {
		return err
	}
	st := status.Convert(toStatus(err))
	msg := strings.ReplaceAll(st.Message(), `"`+ns+`/`, `"`)
	if msg == st.Message() {
		return st.Err()
	}
	p := st.Proto()
	p.Message = msg
	return status.FromProto(p).Err()
}
