package jwt

import (
	"context"
	"strings"

	"github.com/sigil-hsm/sigil/internal/approval"
	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/namespace"
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
		return authz.Facts{}, []approval.Field{{Name: "set", Value: namespace.Local(r.GetName())}, {Name: "key patterns", Value: localNames(patterns)}}, nil
	case *sigilv1.UpdateJWKSetRequest:
		if err := mayCreateSet(ctx, d, r.GetName(), r.GetKeyPatterns()); err != nil {
			return authz.Facts{}, nil, err
		}
		return authz.Facts{}, []approval.Field{{Name: "set", Value: namespace.Local(r.GetName())}, {Name: "new key patterns", Value: localNames(r.GetKeyPatterns())}}, nil
	case *sigilv1.DeleteJWKSetRequest:
		return authz.Facts{}, []approval.Field{{Name: "delete set", Value: namespace.Local(r.GetName())}}, nil
	}
	return authz.Facts{}, nil, nil
}

// localNames lists qualified names as their namespace's members read them.
func localNames(names []string) string {
	local := make([]string, len(names))
	for i, n := range names {
		local[i] = namespace.Local(n)
	}
	return strings.Join(local, ", ")
}
