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

// JWTItem is one set of claims to sign with jwt key KeyID, as MintJWT
// would.
type JWTItem struct {
	KeyID  string
	Claims any
	TTL    time.Duration
}

// JWTResult is an item's token, or the error a MintJWT of it alone
// would have got.
type JWTResult struct {
	Token      string
	KID        string
	Generation int
	Err        error
}

// MintJWTBatch signs items with SignJWTBatch calls of at most MaxBatch
// items (and 240 KiB): each decided, signed and audited as a SignJWT of its own,
// concurrently on the server. An item's failure is its result's Err; the
// error returned is a call's (claims that do not encode, the transport,
// or a batch refused whole), after which the results of the items not
// signed are missing.
func (c *Client) MintJWTBatch(ctx context.Context, items []JWTItem) ([]JWTResult, error) {
	reqs := make([]*sigilv1.SignJWTRequest, len(items))
	for i, it := range items {
		body, err := json.Marshal(it.Claims)
		if err != nil {
			return nil, fmt.Errorf("sigil client: item %d: claims: %w", i, err)
		}
		reqs[i] = &sigilv1.SignJWTRequest{KeyId: it.KeyID, ClaimsJson: body}
		if it.TTL != 0 {
			reqs[i].Ttl = durationpb.New(it.TTL)
		}
	}
	out := make([]JWTResult, 0, len(items))
	for _, chunk := range batches(reqs) {
		resp, err := c.JWT.SignJWTBatch(ctx, &sigilv1.SignJWTBatchRequest{Items: chunk})
		if err != nil {
			return out, err
		}
		if len(resp.GetResults()) != len(chunk) {
			return out, fmt.Errorf("SignJWTBatch answered %d results for %d items", len(resp.GetResults()), len(chunk))
		}
		for _, r := range resp.GetResults() {
			if e := r.GetError(); e != nil {
				out = append(out, JWTResult{Err: fmt.Errorf("%s: %s", e.GetCode(), e.GetMessage())})
				continue
			}
			t := r.GetResponse()
			out = append(out, JWTResult{Token: t.GetToken(), KID: t.GetKid(), Generation: int(t.GetGeneration())})
		}
	}
	return out, nil
}
