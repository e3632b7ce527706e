package server_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server/servertest"
)

// Enrollment links not yet used are listed by their link ID (never the
// token) and can be cancelled: a cancelled link registers nothing and is
// listed no more; a used or unknown one is not cancelled; and each
// cancellation is decided by console.admin like any other.
func TestPendingEnrollmentLinksListedAndCancelled(t *testing.T) {
	e := servertest.NewMTLS(t, `
rules:
  - identity: spiffe://example.org/enroller
    keys: ["sigil.console"]
    allow: [console.admin]
  - identity: spiffe://example.org/officer
    keys: ["x-*"]
    allow: [keys.read]
`)
	ctx := context.Background()
	admin := sigilv1.NewConsoleServiceClient(e.Client(t, "spiffe://example.org/enroller"))
	first, err := admin.Enroll(ctx, &sigilv1.EnrollRequest{Identity: "spiffe://example.org/officer"})
	if err != nil {
		t.Fatal(err)
	}
	second, err := admin.Enroll(ctx, &sigilv1.EnrollRequest{Identity: "spiffe://example.org/officer"})
	if err != nil {
		t.Fatal(err)
	}
	list, err := admin.ListEnrollments(ctx, &sigilv1.ListEnrollmentsRequest{})
	if err != nil || len(list.GetPending()) != 2 {
		t.Fatalf("pending links: %v %v", list.GetPending(), err)
	}
	for _, p := range list.GetPending() {
		if p.GetLinkId() == first.GetToken() || p.GetLinkId() == second.GetToken() || p.GetIdentity() != "spiffe://example.org/officer" {
			t.Errorf("a pending link listed as %+v", p)
		}
	}
	if _, err := sigilv1.NewConsoleServiceClient(e.Client(t, "spiffe://example.org/officer")).RevokeEnrollment(ctx, &sigilv1.RevokeEnrollmentRequest{LinkId: first.GetLinkId()}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("cancelling without console.admin: %v", err)
	}
	if _, err := admin.RevokeEnrollment(ctx, &sigilv1.RevokeEnrollmentRequest{LinkId: first.GetLinkId()}); err != nil {
		t.Fatalf("cancelling a pending link: %v", err)
	}
	for name, c := range map[string]struct {
		req  *sigilv1.RevokeEnrollmentRequest
		want codes.Code
	}{
		"cancelled again": {&sigilv1.RevokeEnrollmentRequest{LinkId: first.GetLinkId()}, codes.FailedPrecondition},
		"unknown":         {&sigilv1.RevokeEnrollmentRequest{LinkId: "00" + first.GetLinkId()[2:]}, codes.NotFound},
		"not a link ID":   {&sigilv1.RevokeEnrollmentRequest{LinkId: first.GetToken()}, codes.InvalidArgument},
		"both named":      {&sigilv1.RevokeEnrollmentRequest{LinkId: second.GetLinkId(), CredentialId: "x"}, codes.InvalidArgument},
		"neither named":   {&sigilv1.RevokeEnrollmentRequest{}, codes.InvalidArgument},
	} {
		if _, err := admin.RevokeEnrollment(ctx, c.req); status.Code(err) != c.want {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	list, err = admin.ListEnrollments(ctx, &sigilv1.ListEnrollmentsRequest{})
	if err != nil || len(list.GetPending()) != 1 || list.GetPending()[0].GetLinkId() != second.GetLinkId() {
		t.Fatalf("pending after the cancellation: %v %v", list.GetPending(), err)
	}
}
