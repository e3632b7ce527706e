package jwt

import (
	"context"
	"strings"

	"github.com/sigil-hsm/sigil/internal/approval"
	"github.com/sigil-hsm/sigil/internal/authz"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
)

var _ purpose.Reviewer = Purpose{}

// Review implements purpose.Reviewer: approvers see the claims and
// headers of the token to be signed, and its lifetime.
// A set the caller could not create is answered, never held.
func (Purpose) Review(ctx context.Context, d purpose.Deps, _ string, req any, _ func(string) bool) (authz.Facts, []approval.Field, error) {
	switch r := req.(type) {
	case *sigilv1.SignJWTRequest:
		return authz.Facts{}, []approval.Field{{Name: "claims", Value: string(r.GetClaimsJson())}, {Name: "headers", Value: string(r.GetHeadersJson())},
			{Name: "ttl", Value: r.GetTtl().AsDuration().String()}}, nil
	case *sigilv1.CreateJWKSetRequest:
		patterns := EffectivePatterns(r.GetName(), r.GetKeyPatterns())
		if err := mayCreateSet(ctx, d, r.GetName(), patterns); err != nil {
			return authz.Facts{}, nil, err
		}
		return authz.Facts{}, []approval.Field{{Name: "set", Value: r.GetName()}, {Name: "key patterns", Value: strings.Join(patterns, ", ")}}, nil
	}
	return authz.Facts{}, nil, nil
}
