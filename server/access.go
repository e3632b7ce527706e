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
	"github.com/sigil-hsm/sigil/internal/mtls"
	"github.com/sigil-hsm/sigil/keyring"
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
	sigilv1.AuditService_GetAuditHead_FullMethodName:       authz.KeysRead,
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
	rec := &audit.Record{Time: start.UTC(), RequestID: requestID(), Identity: identity(ctx), Operation: string(op), Peer: peerAddr(ctx)}
	// A client's key ID is recorded only once it is a valid one: an
	// invalid one (any length, any bytes) as its length and SHA-256.
	if id := keyIDOf(req); keyring.ValidateID(id) == nil {
		rec.KeyID = id
	} else if id != "" {
		rec.InvalidKeyID = audit.DigestOf(id)
	}
	if p := payloadOf(req); p != nil && s.opts.Audit != nil {
		sum := sha256.Sum256(p)
		rec.PayloadSHA256 = hex.EncodeToString(sum[:])
	}
	grpc.SetHeader(ctx, metadata.Pairs("x-request-id", rec.RequestID))
	var resp any
	var err error
	if bad := decodeFailed(ctx); bad != nil {
		rec.Outcome, rec.Reason, rec.RequestBytes = "malformed", "malformed request", bad.size
		err = errs.New(errs.InvalidArgument, "malformed request: %v", bad.err)
	} else if s.opts.Authz != nil && !s.opts.Authz.Allowed(rec.Identity, op, keyIDOf(req)) {
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

// noteGeneration records which generation served the request.
func noteGeneration(ctx context.Context, n int) {
	if rec, ok := ctx.Value(recordKey{}).(*audit.Record); ok {
		rec.Generation = n
	}
}

// allowedKey reports whether the caller may read key id (for listings).
func (s *Server) allowedKey(ctx context.Context, id string) bool {
	return s.opts.Authz == nil || s.opts.Authz.Allowed(identity(ctx), authz.KeysRead, id)
}

// identity names the caller by its verified client certificate; "" when
// there is none (which no policy rule matches).
func identity(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return ""
	}
	return mtls.Identity(ti.State.VerifiedChains[0][0])
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
