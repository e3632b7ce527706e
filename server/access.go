package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/internal/audit"
	"github.com/sigil-hsm/sigil/internal/authz"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/identity"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// operations names the policy operation of every RPC that touches keys.
// RPCs not listed (health, reflection) need only a verified certificate.
var operations = map[string]authz.Op{
	sigilv1.KeyService_CreateKey_FullMethodName:            authz.KeysAdmin,
	sigilv1.KeyService_UpdateKeyPolicy_FullMethodName:      authz.KeysAdmin,
	sigilv1.KeyService_RotateKey_FullMethodName:            authz.KeysAdmin,
	sigilv1.KeyService_RevokeGeneration_FullMethodName:     authz.KeysAdmin,
	sigilv1.KeyService_GetKey_FullMethodName:               authz.KeysRead,
	sigilv1.KeyService_ListKeys_FullMethodName:             authz.KeysRead,
	sigilv1.KeyService_GetPublicKey_FullMethodName:         authz.KeysRead,
	sigilv1.EthereumService_GetAddress_FullMethodName:      authz.KeysRead,
	sigilv1.SigningService_Sign_FullMethodName:             authz.SignRaw,
	sigilv1.JWTService_SignJWT_FullMethodName:              authz.SignJWT,
	sigilv1.EthereumService_SignTransaction_FullMethodName: authz.EthSignTx,
	sigilv1.EthereumService_SignMessage_FullMethodName:     authz.EthSignMessage,
	sigilv1.EthereumService_SignTypedData_FullMethodName:   authz.EthSignTypedData,
}

type recordKey struct{}

// access authorizes each request before any key is looked up, and writes
// every decision to the audit log before the response leaves. A denial
// says nothing of whether the key exists. If the audit record cannot be
// written, the response is withheld: nothing is signed off the record.
func (s *Server) access(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	op, ok := operations[info.FullMethod]
	if !ok {
		return h(ctx, req)
	}
	start := time.Now()
	ids := identities(ctx)
	rec := &audit.Record{Time: start.UTC(), RequestID: requestID(), Operation: string(op), KeyID: keyIDOf(req), Peer: peerAddr(ctx)}
	if p := payloadOf(req); p != nil && s.opts.Audit != nil {
		sum := sha256.Sum256(p)
		rec.PayloadSHA256 = hex.EncodeToString(sum[:])
	}
	grpc.SetHeader(ctx, metadata.Pairs("x-request-id", rec.RequestID))
	var resp any
	var err error
	if !s.authorize(rec, ids, op) {
		rec.Outcome, err = "denied", errs.New(errs.PermissionDenied, "permission denied")
	} else {
		resp, err = h(context.WithValue(ctx, recordKey{}, rec), req)
		rec.Outcome = "allowed"
		if err != nil {
			rec.Outcome = "failed"
		}
	}
	rec.Code = status.Code(toStatus(err)).String()
	rec.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
	if s.opts.Audit != nil {
		if aerr := s.opts.Audit.Write(rec); aerr != nil {
			s.log.Error("audit write failed; response withheld", "request_id", rec.RequestID, "err", aerr)
			return nil, errs.New(errs.Unavailable, "audit log unavailable")
		}
	}
	return resp, err
}

// authorize decides whether a client with identities ids may do op on
// the record's key, and records who: the typed identity the allowing rule
// named, or when none did, all of them.
func (s *Server) authorize(rec *audit.Record, ids []identity.ID, op authz.Op) bool {
	if s.opts.Authz == nil {
		rec.Identities = identity.Strings(ids)
		return true
	}
	who, ok := s.opts.Authz.Allowed(ids, op, rec.KeyID)
	if !ok {
		rec.Identities = identity.Strings(ids)
		return false
	}
	rec.Identity = who.String()
	return true
}

// noteGeneration records which generation served the request.
func noteGeneration(ctx context.Context, n int) {
	if rec, ok := ctx.Value(recordKey{}).(*audit.Record); ok {
		rec.Generation = n
	}
}

// allowedKey reports whether the caller may read key id (for listings).
func (s *Server) allowedKey(ctx context.Context, id string) bool {
	if s.opts.Authz == nil {
		return true
	}
	_, ok := s.opts.Authz.Allowed(identities(ctx), authz.KeysRead, id)
	return ok
}

// identities are the caller's typed identities, from its verified client
// certificate; none when there is none (which no policy rule matches).
func identities(ctx context.Context) []identity.ID {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return identity.Of(ti.State.VerifiedChains[0][0])
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

func keyIDOf(req any) string {
	switch r := req.(type) {
	case interface{ GetKeyId() string }:
		return r.GetKeyId()
	case interface{ GetId() string }:
		return r.GetId()
	}
	return ""
}

// payloadOf is what the request asks to have signed; only its hash is
// recorded.
func payloadOf(req any) []byte {
	switch r := req.(type) {
	case *sigilv1.SignRequest:
		if r.GetMessage() != nil {
			return r.GetMessage()
		}
		return r.GetDigest()
	case *sigilv1.SignJWTRequest:
		return r.GetClaimsJson()
	case *sigilv1.SignTransactionRequest:
		if r.GetUnsignedRlp() != nil {
			return r.GetUnsignedRlp()
		}
		return r.GetTransactionJson()
	case *sigilv1.SignMessageRequest:
		return r.GetMessage()
	case *sigilv1.SignTypedDataRequest:
		return r.GetTypedDataJson()
	}
	return nil
}

func requestID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
