package raw

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/sigil-hsm/sigil/internal/approval"
	"github.com/sigil-hsm/sigil/internal/authz"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose"
)

var _ purpose.Reviewer = Purpose{}

// Review implements purpose.Reviewer: approvers see the digest to be
// signed, or the message's length and SHA-256.
func (Purpose) Review(_ context.Context, _ purpose.Deps, _ string, req any, _ func(string) bool) (authz.Facts, []approval.Field, error) {
	r, ok := req.(*sigilv1.SignRequest)
	if !ok {
		return authz.Facts{}, nil, nil
	}
	if d := r.GetDigest(); d != nil {
		return authz.Facts{}, []approval.Field{{Name: "digest", Value: hex.EncodeToString(d)}}, nil
	}
	sum := sha256.Sum256(r.GetMessage())
	return authz.Facts{}, []approval.Field{{Name: "message", Value: fmt.Sprintf("%d bytes, SHA-256 %x", len(r.GetMessage()), sum)}}, nil
}
