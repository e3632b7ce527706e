package jwks

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	ethcrypto "github.com/ethereum/go-ethereum/crypto"

	"github.com/sigil-hsm/sigil/signer"
)

func entries(t *testing.T) []Entry {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k1, _ := ethcrypto.GenerateKey()
	ed, _, _ := ed25519.GenerateKey(rand.Reader)
	jwk := func(alg signer.Algorithm, pub any) JWK {
		kid, err := signer.Thumbprint(pub)
		if err != nil {
			t.Fatal(err)
		}
		return JWK{KID: kid, Algorithm: alg, Public: pub}
	}
	return []Entry{
		{ID: "b-key", MaxAge: 5 * time.Minute, Keys: []JWK{jwk(signer.ES256K, &k1.PublicKey), jwk(signer.EdDSA, ed)}},
		{ID: "a-key", MaxAge: 90 * time.Second, Keys: []JWK{jwk(signer.ES256, &p256.PublicKey)}},
	}
}

func get(h http.Handler, path string, hdr map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("GET", path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func TestDocumentsHeadersAndConditionalRequests(t *testing.T) {
	p := NewPublisher()
	es := entries(t)
	if err := p.Update(es); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	p.Register(mux)

	w := get(mux, "/.well-known/jwks.json", nil)
	if w.Code != 200 || w.Header().Get("Content-Type") != ContentType || w.Header().Get("Cache-Control") != "public, max-age=90" ||
		w.Header().Get("Access-Control-Allow-Origin") != "*" || w.Header().Get("Vary") != "Accept" {
		t.Fatalf("all: %d %v", w.Code, w.Header())
	}
	var doc struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil || len(doc.Keys) != 3 {
		t.Fatalf("document %s: %v", w.Body, err)
	}
	for _, k := range doc.Keys {
		if k["use"] != "sig" || k["kid"] == "" || k["alg"] == "" {
			t.Errorf("JWK lacks use/kid/alg: %v", k)
		}
		if k["alg"] == "ES256K" && (k["crv"] != "secp256k1" || k["kty"] != "EC" || len(k["x"]) != 43 || len(k["y"]) != 43) {
			t.Errorf("secp256k1 JWK: %v", k)
		}
	}
	if doc.Keys[0]["alg"] != "ES256" {
		t.Errorf("keys not in ID order: %v", doc.Keys[0])
	}
	etag := w.Header().Get("ETag")
	if len(etag) < 10 || etag[0] != '"' {
		t.Fatalf("ETag %q is not a strong validator", etag)
	}
	for _, inm := range []string{etag, `"other", ` + etag, "W/" + etag, "*"} {
		if w := get(mux, "/.well-known/jwks.json", map[string]string{"If-None-Match": inm}); w.Code != 304 || w.Body.Len() != 0 || w.Header().Get("ETag") != etag {
			t.Errorf("If-None-Match %s: %d", inm, w.Code)
		}
	}
	if w := get(mux, "/.well-known/jwks.json", map[string]string{"If-None-Match": `"stale"`}); w.Code != 200 {
		t.Errorf("stale If-None-Match: %d", w.Code)
	}
	if w := get(mux, "/.well-known/jwks.json", map[string]string{"Accept": "application/json"}); w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("Accept: application/json gave %s", w.Header().Get("Content-Type"))
	}

	w = get(mux, "/keys/b-key/jwks.json", nil)
	if w.Code != 200 || w.Header().Get("Cache-Control") != "public, max-age=300" || w.Header().Get("ETag") == etag {
		t.Fatalf("per key: %d %v", w.Code, w.Header())
	}
	if w := get(mux, "/keys/nope/jwks.json", nil); w.Code != 404 {
		t.Fatalf("unknown key: %d", w.Code)
	}

	// Same entries in another order: same bytes, same ETag. A change: a new ETag.
	p2 := NewPublisher()
	p2.Update([]Entry{es[1], es[0]})
	if p2.All().ETag != etag {
		t.Fatal("the document depends on entry order")
	}
	p.Update(es[:1])
	if p.All().ETag == etag {
		t.Fatal("ETag unchanged after the keys changed")
	}
}

func TestEmptyDocument(t *testing.T) {
	p := NewPublisher()
	if string(p.All().Body) != `{"keys":[]}` || p.All().MaxAge != DefaultMaxAge {
		t.Fatalf("%s %v", p.All().Body, p.All().MaxAge)
	}
}
