package jwks

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	ethcrypto "github.com/ethereum/go-ethereum/crypto"

	"github.com/sigil-hsm/sigil/purpose/jwt"
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
		// b-key names issuer-a too, whose patterns do not admit it (a store
		// edited by hand): it is left out there.
		{ID: "b-key", MaxAge: 5 * time.Minute, Keys: []JWK{jwk(signer.EdDSA, ed)}, Sets: []string{"default", "issuer-a"}},
		{ID: "a-key", MaxAge: 90 * time.Second, Keys: []JWK{jwk(signer.ES256, &p256.PublicKey)}, Sets: []string{"default", "issuer-a"}},
		// An ES256K key that names the default set (a store edited by
		// hand): it is left out there, and served where it is allowed.
		{ID: "k-key", MaxAge: 2 * time.Minute, Keys: []JWK{jwk(signer.ES256K, &k1.PublicKey)}, Sets: []string{"default", "k1"}},
	}
}

// sets are the sets entries name: k1 takes ES256K keys.
var sets = []jwt.Set{{Name: "issuer-a", KeyPatterns: []string{"a-*"}}, {Name: "k1", AllowES256K: true, KeyPatterns: []string{"*"}}, {Name: "empty", KeyPatterns: []string{"*"}}}

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
	served := map[string]int{}
	p.OnServe = func(set string, notModified bool) { served[fmt.Sprintf("%s %v", set, notModified)]++ }
	es := entries(t)
	if err := p.Update(es, sets); err != nil {
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
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil || len(doc.Keys) != 2 {
		t.Fatalf("default set %s: %v", w.Body, err)
	}
	for _, k := range doc.Keys {
		if k["use"] != "sig" || k["kid"] == "" || k["alg"] == "" || k["alg"] == "ES256K" {
			t.Errorf("default set member: %v", k)
		}
	}
	if d := get(mux, "/jwks/default.json", nil); d.Body.String() != w.Body.String() {
		t.Errorf("/jwks/default.json differs from /.well-known/jwks.json")
	}
	k1 := get(mux, "/jwks/k1.json", nil)
	if err := json.Unmarshal(k1.Body.Bytes(), &doc); err != nil || len(doc.Keys) != 1 || k1.Header().Get("Cache-Control") != "public, max-age=120" {
		t.Fatalf("k1 set %s %v: %v", k1.Body, k1.Header(), err)
	}
	if k := doc.Keys[0]; k["alg"] != "ES256K" || k["crv"] != "secp256k1" || k["kty"] != "EC" || len(k["x"]) != 43 || len(k["y"]) != 43 {
		t.Errorf("secp256k1 JWK: %v", k)
	}
	a := get(mux, "/jwks/issuer-a.json", nil)
	if err := json.Unmarshal(a.Body.Bytes(), &doc); err != nil || len(doc.Keys) != 1 || doc.Keys[0]["alg"] != "ES256" || a.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("issuer-a set %s: %v", a.Body, err)
	}
	if e := get(mux, "/jwks/empty.json", nil); e.Code != 200 || e.Body.String() != `{"keys":[]}` {
		t.Errorf("a set with no members: %d %s", e.Code, e.Body)
	}
	for _, path := range []string{"/jwks/nope.json", "/jwks/issuer-a", "/jwks/.json", "/jwks/issuer-a.json/x"} {
		if w := get(mux, path, nil); w.Code != 404 {
			t.Errorf("%s: %d", path, w.Code)
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
	p2.Update([]Entry{es[2], es[1], es[0]}, []jwt.Set{sets[2], sets[0], sets[1]})
	if p2.Default().ETag != etag {
		t.Fatal("the document depends on entry order")
	}
	p.Update(es[:1], sets)
	if p.Default().ETag == etag {
		t.Fatal("ETag unchanged after the keys changed")
	}
	if served["default false"] < 3 || served["default true"] != 4 || served["k1 false"] != 1 || served[" false"] != 1 {
		t.Errorf("OnServe saw %v", served)
	}
}

func TestEmptyDocument(t *testing.T) {
	p := NewPublisher()
	if string(p.Default().Body) != `{"keys":[]}` || p.Default().MaxAge != DefaultMaxAge {
		t.Fatalf("%s %v", p.Default().Body, p.Default().MaxAge)
	}
}
