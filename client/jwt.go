package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// MintJWT signs claims (anything that encodes as a JSON object) with jwt
// key keyID's active generation, under Sigil's checks: Sigil sets alg,
// kid, typ and iat, and exp to now + ttl when claims carry none (the
// key's max token lifetime if ttl is zero). It returns the compact JWS.
func (c *Client) MintJWT(ctx context.Context, keyID string, claims any, ttl time.Duration) (string, error) {
	body, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("sigil client: claims: %w", err)
	}
	req := &sigilv1.SignJWTRequest{KeyId: keyID, ClaimsJson: body}
	if ttl != 0 {
		req.Ttl = durationpb.New(ttl)
	}
	resp, err := c.JWT.SignJWT(ctx, req)
	if err != nil {
		return "", err
	}
	return resp.GetToken(), nil
}
