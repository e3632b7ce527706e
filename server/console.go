package server

import (
	"context"
	"sort"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sigil-hsm/sigil/console"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/namespace"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// ConsoleKeyID is the name console.admin is decided on: enrolling a
// person lets them sign in as an identity, so a rule must name it (or
// every key) to allow it.
const ConsoleKeyID = "sigil.console"

// consoleService implements sigil.v1.ConsoleService: enrollments for the
// browser console, kept in the store's anchors.
type consoleService struct {
	sigilv1.UnimplementedConsoleServiceServer
	s *Server
}

func (c *consoleService) store(ctx context.Context) (console.Store, error) {
	if namespace.FromContext(ctx) != namespace.Root {
		return console.Store{}, errs.New(errs.PermissionDenied, "console enrollments are made in the root namespace")
	}
	if c.s.opts.Anchors == nil {
		return console.Store{}, errs.New(errs.FailedPrecondition, "this server keeps no anchors")
	}
	return console.Store{A: c.s.opts.Anchors}, nil
}

func (c *consoleService) Enroll(ctx context.Context, req *sigilv1.EnrollRequest) (*sigilv1.EnrollResponse, error) {
	st, err := c.store(ctx)
	if err != nil {
		return nil, err
	}
	// Only an identity the policy names itself: an enrollment is the power
	// to act as it, and a pattern's every match is no identity anyone chose.
	if !c.s.Named(req.GetIdentity()) {
		return nil, errs.New(errs.FailedPrecondition, "identity %q is not named in the policy (as a rule's identity or an approver, not through a pattern): only those can be enrolled", req.GetIdentity())
	}
	token, expires, err := st.Enroll(ctx, req.GetIdentity(), req.GetTtl().AsDuration(), c.s.opts.Now())
	if err != nil {
		return nil, err
	}
	noteDetail(ctx, "enrolled_identity", req.GetIdentity())
	noteDetail(ctx, "link_id", console.LinkID(token))
	out := &sigilv1.EnrollResponse{Token: token, Expires: timestamppb.New(expires), LinkId: console.LinkID(token)}
	if c.s.opts.ConsoleOrigin != "" {
		out.Url = c.s.opts.ConsoleOrigin + "/enroll#" + token
	}
	return out, nil
}

func (c *consoleService) ListEnrollments(ctx context.Context, _ *sigilv1.ListEnrollmentsRequest) (*sigilv1.ListEnrollmentsResponse, error) {
	st, err := c.store(ctx)
	if err != nil {
		return nil, err
	}
	all, err := st.Passkeys(ctx)
	if err != nil {
		return nil, err
	}
	pending, err := st.PendingLinks(ctx, c.s.opts.Now())
	if err != nil {
		return nil, err
	}
	out := &sigilv1.ListEnrollmentsResponse{}
	for _, p := range all {
		out.Enrollments = append(out.Enrollments, &sigilv1.Enrollment{CredentialId: p.ID(), Identity: p.Identity, Created: timestamppb.New(p.Created), Revoked: p.Revoked})
	}
	sort.Slice(out.Enrollments, func(i, j int) bool {
		return out.Enrollments[i].GetCreated().AsTime().Before(out.Enrollments[j].GetCreated().AsTime())
	})
	for _, p := range pending {
		out.Pending = append(out.Pending, &sigilv1.PendingEnrollment{LinkId: p.LinkID, Identity: p.Identity, Expires: timestamppb.New(p.Expires)})
	}
	return out, nil
}

func (c *consoleService) RevokeEnrollment(ctx context.Context, req *sigilv1.RevokeEnrollmentRequest) (*sigilv1.RevokeEnrollmentResponse, error) {
	st, err := c.store(ctx)
	if err != nil {
		return nil, err
	}
	switch cred, link := req.GetCredentialId(), req.GetLinkId(); {
	case (cred == "") == (link == ""):
		return nil, errs.New(errs.InvalidArgument, "name a passkey (credential_id) or a pending link (link_id): one of the two")
	case link != "":
		noteDetail(ctx, "link_id", link)
		return &sigilv1.RevokeEnrollmentResponse{}, st.Cancel(ctx, link, c.s.opts.Now())
	}
	return &sigilv1.RevokeEnrollmentResponse{}, st.Revoke(ctx, req.GetCredentialId())
}
