package jwt_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/relyingparty"
	"github.com/sigil-hsm/sigil/internal/strictjson"
	"github.com/sigil-hsm/sigil/internal/testutil/keyringtest"
	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
	"github.com/sigil-hsm/sigil/jwks"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/purpose/jwt"
	"github.com/sigil-hsm/sigil/signer"
)

func TestMain(m *testing.M) { softhsmtest.Main(m, 6) }

var policy = jwt.Policy{Schedule: keyring.Schedule{RotateEvery: time.Hour, PublishAhead: 10 * time.Minute, MaxTokenTTL: 15 * time.Minute, Skew: 30 * time.Second}}

// newKeyring returns a keyring with one jwt key per algorithm ("jwt-es256"…)
// and a publisher kept in step with it.
func newKeyring(tb testing.TB) (*keyring.Keyring, *jwks.Publisher) {
	tb.Helper()
	ctx := context.Background()
	kr := keyringtest.HSM(tb, keyringtest.Options{}).Keyring
	pub := jwks.NewPublisher()
	if err := jwks.Follow(ctx, kr, jwt.Sets{}, pub, slog.Default()); err != nil {
		tb.Fatal(err)
	}
	for _, alg := range signer.Algorithms {
		p := policy
		if _, err := kr.Create(ctx, keyring.CreateSpec{ID: "jwt-" + strings.ToLower(string(alg)), Purpose: jwt.Name, Algorithm: alg, Policy: &p}); err != nil {
			tb.Fatal(err)
		}
	}
	return kr, pub
}

func mint(t *testing.T, kr *keyring.Keyring, id string, req jwt.Request) jwt.Token {
	t.Helper()
	s, err := kr.ForSigning(context.Background(), id, jwt.Name)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jwt.Prepare(req, jwt.PolicyOf(s.Key), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Sign(context.Background(), s, p)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestEveryAlgorithmVerifiesAgainstTheJWKS(t *testing.T) {
	kr, pub := newKeyring(t)
	for _, alg := range signer.Algorithms {
		t.Run(string(alg), func(t *testing.T) {
			// The key's own JWK Set: ES256K keys are in no shared set here.
			id := "jwt-" + strings.ToLower(string(alg))
			rp := relyingparty.New(func() ([]byte, time.Duration, error) { d, _ := pub.Key(id); return d.Body, d.MaxAge, nil }, time.Now, policy.Skew)
			tok := mint(t, kr, id, jwt.Request{
				Claims: []byte(`{"sub":"alice","aud":"api","scope":["a","b"]}`), Headers: []byte(`{"typ":"at+jwt","x-tenant":"t1"}`), TTL: 5 * time.Minute})
			hdrJSON, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok.Compact, ".")[0])
			var hdr map[string]any
			json.Unmarshal(hdrJSON, &hdr)
			if hdr["alg"] != string(alg) || hdr["kid"] != tok.KID || hdr["typ"] != "at+jwt" || hdr["x-tenant"] != "t1" {
				t.Fatalf("header %v", hdr)
			}
			if tok.Expiry.Sub(tok.IssuedAt) != 5*time.Minute {
				t.Fatalf("lifetime %v", tok.Expiry.Sub(tok.IssuedAt))
			}
			if err := rp.Verify(tok.Compact); err != nil {
				t.Fatal(err)
			}
			// Altered claims must not verify.
			parts := strings.Split(tok.Compact, ".")
			forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory","exp":4000000000}`)) + "." + parts[2]
			if rp.Verify(forged) == nil {
				t.Fatal("a token with altered claims verified")
			}
		})
	}
}

// Without extra headers the protected header is exactly alg, kid and typ
// JWT, and the token is three base64url segments.
func TestDefaultHeader(t *testing.T) {
	kr, _ := newKeyring(t)
	tok := mint(t, kr, "jwt-es256", jwt.Request{Claims: []byte(`{"sub":"alice"}`)})
	parts := strings.Split(tok.Compact, ".")
	if len(parts) != 3 || strings.ContainsAny(tok.Compact, "=+/") {
		t.Fatalf("not a compact JWS: %q", tok.Compact)
	}
	hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if want := `{"alg":"ES256","kid":"` + tok.KID + `","typ":"JWT"}`; string(hdr) != want {
		t.Fatalf("header %s, want %s", hdr, want)
	}
}

// A keyring holding an ES256K jwt key leaves the default set readable by
// go-jose (which refuses a whole set with a secp256k1 member): the key is
// in its own document only. Every other algorithm's key is in the set.
func TestGoJoseReadsTheDefaultSetBesideAnES256KKey(t *testing.T) {
	_, pub := newKeyring(t)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(pub.Default().Body, &set); err != nil || len(set.Keys) != len(signer.Algorithms)-1 {
		t.Fatalf("go-jose reads %d keys of the default set: %v", len(set.Keys), err)
	}
	for _, k := range set.Keys {
		if k.Algorithm == string(signer.ES256K) {
			t.Errorf("the default set holds an ES256K key")
		}
	}
	if doc, ok := pub.Key("jwt-es256k"); !ok || json.Unmarshal(doc.Body, &set) == nil {
		t.Log("go-jose now reads a secp256k1 JWK; the note in docs/relying-parties.md can go")
	}
}

func TestPrepareRefusesBadRequests(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	late := `{"exp":` + strconv.FormatInt(now.Add(policy.MaxTokenTTL+time.Second).Unix(), 10) + `}`
	cases := map[string]jwt.Request{
		"claims an array":        {Claims: []byte(`["a"]`)},
		"claims a string":        {Claims: []byte(`"a"`)},
		"claims null":            {Claims: []byte(`null`)},
		"claims empty":           {},
		"claims malformed":       {Claims: []byte(`{"a":`)},
		"trailing data":          {Claims: []byte(`{"a":1} {"b":2}`)},
		"duplicate member":       {Claims: []byte(`{"sub":"a","sub":"b"}`)},
		"claims too large":       {Claims: []byte(`{"a":"` + strings.Repeat("x", jwt.MaxClaimsBytes) + `"}`)},
		"exp beyond T":           {Claims: []byte(late)},
		"exp in the past":        {Claims: []byte(`{"exp":1000}`)},
		"exp a string":           {Claims: []byte(`{"exp":"tomorrow"}`)},
		"nbf negative":           {Claims: []byte(`{"nbf":-1}`)},
		"ttl beyond T":           {Claims: []byte(`{}`), TTL: policy.MaxTokenTTL + time.Second},
		"ttl negative":           {Claims: []byte(`{}`), TTL: -time.Second},
		"exp and ttl":            {Claims: []byte(`{"exp":` + strconv.FormatInt(now.Add(time.Minute).Unix(), 10) + `}`), TTL: time.Minute},
		"headers not an object":  {Claims: []byte(`{}`), Headers: []byte(`[1]`)},
		"headers duplicate name": {Claims: []byte(`{}`), Headers: []byte(`{"typ":"a","typ":"b"}`)},
		"escaped duplicate":      {Claims: []byte(`{"exp":1,"\u0065xp":2}`)},
		"nested duplicate":       {Claims: []byte(`{"act":{"sub":"a","sub":"b"}}`)},
		"raw invalid UTF-8":      {Claims: []byte("{\"sub\":\"ad\xffmin\"}")},
		"invalid UTF-8 name":     {Claims: []byte("{\"s\xffub\":\"admin\"}")},
		"lone surrogate":         {Claims: []byte(`{"sub":"ad\ud800min"}`)},
		"header invalid UTF-8":   {Claims: []byte(`{}`), Headers: []byte("{\"cty\":\"\xc3\"}")},
		"nesting bomb":           {Claims: []byte(`{"a":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`)},
	}
	for _, h := range []string{"alg", "kid", "jku", "jwk", "x5u", "x5c", "crit", "b64"} {
		cases["header "+h] = jwt.Request{Claims: []byte(`{}`), Headers: []byte(`{"` + h + `":"x"}`)}
	}
	for name, req := range cases {
		if _, err := jwt.Prepare(req, policy, now); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("%s: got %v, want InvalidArgument", name, err)
		}
	}
	p, err := jwt.Prepare(jwt.Request{Claims: []byte(`{"iat":1,"sub":"x"}`)}, policy, now)
	if err != nil || !p.Expiry.Equal(now.Add(policy.MaxTokenTTL)) || !strings.Contains(string(p.Payload), `"iat":1800000000`) {
		t.Fatalf("defaults: %s %v %v", p.Payload, p.Expiry, err)
	}
}

// FuzzPrepare: whatever the client sends, jwt.Prepare refuses it with
// InvalidArgument or returns a payload that is a JSON object whose exp is
// within the policy and whose headers hold nothing forbidden.
func FuzzPrepare(f *testing.F) {
	f.Add([]byte(`{"sub":"a"}`), []byte(``), int64(0))
	f.Add([]byte(`{"exp":1800000100,"nbf":1}`), []byte(`{"typ":"x"}`), int64(0))
	f.Add([]byte(`{"a":{"b":[1,2,{"c":null}]}}`), []byte(`{"kid":"x"}`), int64(60e9))
	f.Add([]byte(`{"sub":"a","sub":"b"}`), []byte(`{}`), int64(-1))
	f.Add([]byte(`{"a\"b":1,"c\\d":2,"\u0001":3,"é":4,"<&>":5}`), []byte(`{"x\ty":"z"}`), int64(0))
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, claims, headers []byte, ttl int64) {
		p, err := jwt.Prepare(jwt.Request{Claims: claims, Headers: headers, TTL: time.Duration(ttl)}, policy, now)
		if duplicateMember(claims) && err == nil {
			t.Fatal("claims with a member name twice were accepted")
		}
		if err != nil {
			if !errs.Is(err, errs.InvalidArgument) {
				t.Fatalf("kind %v: %v", errs.KindOf(err), err)
			}
			return
		}
		if err := strictjson.Check("payload", p.Payload, 1<<20); err != nil {
			t.Fatalf("the payload fails the checks its input passed: %v", err)
		}
		var c map[string]any
		if err := json.Unmarshal(p.Payload, &c); err != nil {
			t.Fatalf("payload is not a JSON object: %v", err)
		}
		var in map[string]json.RawMessage
		json.Unmarshal(claims, &in)
		for name := range in { // member names survive encoding exactly
			if _, ok := c[name]; !ok {
				t.Fatalf("claim %q is not in the payload %s", name, p.Payload)
			}
		}
		if exp, ok := c["exp"].(float64); !ok || exp > float64(now.Add(policy.MaxTokenTTL).Unix()) || exp <= float64(now.Unix()) {
			t.Fatalf("exp %v outside the policy", c["exp"])
		}
		for _, h := range []string{"alg", "kid", "jku", "jwk", "x5u", "x5c", "crit", "b64"} {
			if _, bad := p.Headers[h]; bad {
				t.Fatalf("forbidden header %s passed", h)
			}
		}
		for name, v := range p.Headers { // jwt.Sign copies them into the header as they are
			if strictjson.Check("header", v, 1<<20) != nil {
				t.Fatalf("header %q has a value that is not JSON: %q", name, v)
			}
		}
	})
}

// duplicateMember reports, the slow and obvious way, whether data is a
// valid JSON object with a member name twice at the top level.
func duplicateMember(data []byte) bool {
	if len(data) > jwt.MaxClaimsBytes || !json.Valid(data) {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, _ := dec.Token(); tok != json.Delim('{') {
		return false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, _ := dec.Token()
		name := tok.(string)
		if seen[name] {
			return true
		}
		seen[name] = true
		var v json.RawMessage
		dec.Decode(&v)
	}
	return false
}
