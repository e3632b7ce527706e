package console

import (
	"crypto/ecdsa"
	"net/http"
	"time"

	"github.com/sigil-hsm/sigil/internal/audit"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/signer"
)

// jwksPage shows the JWK Sets the identity may read: where each is
// served and the kids it publishes now, per key.
func (c *Console) jwksPage(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := c.o.Access.As(r.Context(), s.id, r.RemoteAddr)
	data := map[string]any{"Identity": s.id.String()}
	var sets sigilv1.ListJWKSetsResponse
	if err := c.o.Access.Invoke(ctx, sigilv1.JWTService_ListJWKSets_FullMethodName, &sigilv1.ListJWKSetsRequest{}, &sets); err != nil {
		w.WriteHeader(httpStatus(err))
		data["Error"] = publicError(err)
		c.render(w, "jwks", data)
		return
	}
	type published struct {
		Key  string
		Kids []string
	}
	type set struct {
		*sigilv1.JWKSet
		Keys []published
	}
	var out []set
	for _, js := range sets.GetSets() {
		st := set{JWKSet: js}
		for _, id := range js.GetKeyIds() {
			var k sigilv1.GetKeyResponse
			if err := c.o.Access.Invoke(ctx, sigilv1.KeyService_GetKey_FullMethodName, &sigilv1.GetKeyRequest{Id: id}, &k); err != nil {
				continue // gone since, or not readable: not shown
			}
			p := published{Key: id}
			for _, g := range k.GetKey().GetGenerations() {
				switch g.GetState() {
				case "pending", "active", "retiring":
					p.Kids = append(p.Kids, g.GetKid()+" ("+g.GetState()+")")
				}
			}
			st.Keys = append(st.Keys, p)
		}
		out = append(out, st)
	}
	data["Sets"] = out
	c.render(w, "jwks", data)
}

// auditPage shows each replica's latest anchored checkpoint of the audit
// trail, its signature checked here with the audit key, and how long ago
// it was made.
func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := c.o.Access.As(r.Context(), s.id, r.RemoteAddr)
	data := map[string]any{"Identity": s.id.String()}
	var head sigilv1.GetAuditHeadResponse
	if err := c.o.Access.Invoke(ctx, sigilv1.AuditService_GetAuditHead_FullMethodName, &sigilv1.GetAuditHeadRequest{}, &head); err != nil {
		w.WriteHeader(httpStatus(err))
		data["Error"] = publicError(err)
		c.render(w, "audit", data)
		return
	}
	pub, _ := signer.ParsePublicKeyPEM(head.GetPublicKeyPem())
	key, _ := pub.(*ecdsa.PublicKey)
	type row struct {
		*sigilv1.AuditCheckpoint
		Verified string
		Age      string
	}
	var rows []row
	for _, cp := range head.GetCheckpoints() {
		v := "the signature verifies with the audit key"
		check := audit.Checkpoint{Replica: cp.GetReplica(), Seq: cp.GetSeq(), Hash: cp.GetHash(), Time: cp.GetTime().AsTime(), Every: int(cp.GetEvery()), Signature: cp.GetSignature()}
		if key == nil {
			v = "NOT VERIFIED: no audit key"
		} else if err := check.Verify(key); err != nil {
			v = "NOT VERIFIED: " + err.Error()
		}
		rows = append(rows, row{AuditCheckpoint: cp, Verified: v, Age: c.o.Now().Sub(cp.GetTime().AsTime()).Round(time.Second).String()})
	}
	data["Checkpoints"], data["PublicKey"] = rows, head.GetPublicKeyPem()
	var tail sigilv1.TailAuditResponse
	if err := c.o.Access.Invoke(ctx, sigilv1.AuditService_TailAudit_FullMethodName, &sigilv1.TailAuditRequest{Limit: auditTail}, &tail); err != nil {
		data["TailError"] = publicError(err)
	} else {
		data["Tail"] = &tail
	}
	c.render(w, "audit", data)
}

// auditTail is how many of the latest records the audit page shows.
const auditTail = 50

// healthPage shows the answering replica's backends, store and audit
// log as their health monitors last saw them.
func (c *Console) healthPage(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := c.o.Access.As(r.Context(), s.id, r.RemoteAddr)
	data := map[string]any{"Identity": s.id.String()}
	var st sigilv1.GetStatusResponse
	if err := c.o.Access.Invoke(ctx, sigilv1.StatusService_GetStatus_FullMethodName, &sigilv1.GetStatusRequest{}, &st); err != nil {
		w.WriteHeader(httpStatus(err))
		data["Error"] = publicError(err)
	} else {
		data["Status"] = &st
	}
	c.render(w, "health", data)
}
