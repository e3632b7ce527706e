package jwks

import (
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sigil-hsm/sigil/internal/namespace"
	"github.com/sigil-hsm/sigil/purpose/jwt"
	"github.com/sigil-hsm/sigil/signer"
)

// ContentType is the media type of a JWK Set (RFC 7517 section 8.5.1).
const ContentType = "application/jwk-set+json"

// DefaultMaxAge is the max-age of a document with no key in it.
const DefaultMaxAge = time.Minute

// Entry is one logical key's published generations, how long relying
// parties may cache them, and the sets it belongs to.
type Entry struct {
	ID     string
	MaxAge time.Duration
	Keys   []JWK
	Sets   []string
}

// es256k reports whether e's keys are secp256k1 ones.
func (e Entry) es256k() bool {
	return slices.ContainsFunc(e.Keys, func(k JWK) bool { return k.Algorithm == signer.ES256K })
}

// Document is a serialised JWK Set with its cache headers.
type Document struct {
	Body   []byte
	ETag   string // strong: a hash of Body
	MaxAge time.Duration
}

type documents struct {
	bySet map[string]*Document
	byKey map[string]*Document
}

// Publisher serves the current JWK Set documents.
type Publisher struct {
	cur atomic.Pointer[documents]
	// OnServe, if set, learns of every document request: the set ("" for
	// a key's own document) and whether it was answered 304.
	OnServe func(set string, notModified bool)
}

// NewPublisher returns a Publisher serving an empty default set.
func NewPublisher() *Publisher {
	p := &Publisher{}
	if err := p.Update(nil, nil); err != nil {
		panic(err) // an empty set always encodes
	}
	return p
}

// Update rebuilds every document from entries and the sets and swaps
// them in at once. Each set holds its members' keys, except ES256K ones
// in a set that does not allow them; its max-age is its members' least.
// The output is a pure function of the input (sorted by ID), so every
// replica with the same keyring serves the same bytes and ETag.
func (p *Publisher) Update(entries []Entry, sets []jwt.Set) error {
	entries = slices.Clone(entries)
	slices.SortFunc(entries, func(a, b Entry) int { return strings.Compare(a.ID, b.ID) })
	docs := &documents{bySet: map[string]*Document{}, byKey: map[string]*Document{}}
	for _, e := range entries {
		d, err := build(e.Keys, e.MaxAge)
		if err != nil {
			return fmt.Errorf("JWKS of key %q: %w", e.ID, err)
		}
		docs.byKey[e.ID] = d
	}
	sets = withDefaults(entries, sets)
	for _, set := range sets {
		var keys []JWK
		age := time.Duration(0)
		for _, e := range entries {
			if !slices.Contains(e.Sets, set.Name) || !set.Admits(e.ID) || (e.es256k() && !set.AllowES256K) {
				continue
			}
			keys = append(keys, e.Keys...)
			if age == 0 || e.MaxAge < age {
				age = e.MaxAge
			}
		}
		d, err := build(keys, cmp.Or(age, DefaultMaxAge))
		if err != nil {
			return fmt.Errorf("JWK Set %q: %w", set.Name, err)
		}
		docs.bySet[set.Name] = d
	}
	p.cur.Store(docs)
	return nil
}

// withDefaults adds to sets the default set of root and of every other
// namespace a key of entries lives in.
func withDefaults(entries []Entry, sets []jwt.Set) []jwt.Set {
	sets = slices.Clone(sets)
	need := []string{namespace.Root}
	for _, e := range entries {
		need = append(need, namespace.Of(e.ID))
	}
	for _, ns := range need {
		name := jwt.DefaultSetIn(ns)
		if !slices.ContainsFunc(sets, func(s jwt.Set) bool { return s.Name == name }) {
			sets = append(sets, jwt.Set{Name: name, KeyPatterns: []string{namespace.Qualify(ns, "*")}})
		}
	}
	return sets
}

func build(keys []JWK, maxAge time.Duration) (*Document, error) {
	if keys == nil {
		keys = []JWK{}
	}
	body, err := json.Marshal(struct {
		Keys []JWK `json:"keys"`
	}{keys})
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	return &Document{Body: body, ETag: `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`, MaxAge: maxAge}, nil
}

// Set returns the document of JWK Set name.
func (p *Publisher) Set(name string) (*Document, bool) {
	d, ok := p.cur.Load().bySet[name]
	return d, ok
}

// Default returns the document of the default set.
func (p *Publisher) Default() *Document {
	d, _ := p.Set(jwt.DefaultSet)
	return d
}

// Key returns the document of key id.
func (p *Publisher) Key(id string) (*Document, bool) {
	d, ok := p.cur.Load().byKey[id]
	return d, ok
}

// Register adds the JWKS routes to mux: root's default set at
// /.well-known/jwks.json and /jwks/default.json, every set of root at
// /jwks/{name}.json and of namespace NS at /jwks/NS/{name}.json (its
// default set at /jwks/NS/default.json), every key's own document at
// /keys/{id}/jwks.json, or /keys/NS/{id}/jwks.json.
func (p *Publisher) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		p.serve(w, r, jwt.DefaultSet, p.Default())
	})
	mux.HandleFunc("GET /jwks/{file}", func(w http.ResponseWriter, r *http.Request) {
		p.serveSet(w, r, namespace.Root, r.PathValue("file"))
	})
	mux.HandleFunc("GET /jwks/{ns}/{file}", func(w http.ResponseWriter, r *http.Request) {
		p.serveSet(w, r, r.PathValue("ns"), r.PathValue("file"))
	})
	mux.HandleFunc("GET /keys/{id}/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		p.serveKey(w, r, namespace.Root, r.PathValue("id"))
	})
	mux.HandleFunc("GET /keys/{ns}/{id}/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		p.serveKey(w, r, r.PathValue("ns"), r.PathValue("id"))
	})
}

// serveSet serves set file (NAME.json) of namespace ns. A namespace named
// "root" in the path is refused: root's sets have one address each.
func (p *Publisher) serveSet(w http.ResponseWriter, r *http.Request, ns, file string) {
	name, ok := strings.CutSuffix(file, ".json")
	if r.PathValue("ns") == namespace.Root || strings.Contains(name, "/") {
		ok = false
	}
	name = inPath(ns, name)
	d, found := p.Set(name)
	if !ok || !found {
		http.Error(w, "no such JWK Set", http.StatusNotFound)
		return
	}
	p.serve(w, r, name, d)
}

// inPath is the qualified name a path's namespace and name stand for:
// NS/NAME, whatever NAME (a "sigil." one is no root key here).
func inPath(ns, name string) string {
	if ns == namespace.Root {
		return name
	}
	return ns + "/" + name
}

// serveKey serves the document of key id of namespace ns.
func (p *Publisher) serveKey(w http.ResponseWriter, r *http.Request, ns, id string) {
	d, ok := p.Key(inPath(ns, id))
	if !ok || r.PathValue("ns") == namespace.Root || strings.Contains(id, "/") {
		http.Error(w, "no such JWT key", http.StatusNotFound)
		return
	}
	p.serve(w, r, "", d)
}

// serve writes d and reports the request to OnServe.
func (p *Publisher) serve(w http.ResponseWriter, r *http.Request, set string, d *Document) {
	notModified := serve(w, r, d)
	if p.OnServe != nil {
		p.OnServe(set, notModified)
	}
}

// serve writes d with its validators and cache headers, or 304 when the
// client already holds it, and reports which. (GET routes answer HEAD too.)
func serve(w http.ResponseWriter, r *http.Request, d *Document) bool {
	h := w.Header()
	h.Set("ETag", d.ETag)
	h.Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(d.MaxAge.Seconds())))
	h.Set("Vary", "Accept")
	// Public keys, for any origin: a browser relying party may fetch them.
	h.Set("Access-Control-Allow-Origin", "*")
	if matches(r.Header.Get("If-None-Match"), d.ETag) {
		w.WriteHeader(http.StatusNotModified)
		return true
	}
	h.Set("Content-Type", contentType(r.Header.Get("Accept")))
	h.Set("Content-Length", fmt.Sprint(len(d.Body)))
	w.Write(d.Body)
	return false
}

// matches applies If-None-Match's weak comparison (RFC 9110 13.1.2).
func matches(ifNoneMatch, etag string) bool {
	for tag := range strings.SplitSeq(ifNoneMatch, ",") {
		tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
		if tag == "*" || tag == etag {
			return true
		}
	}
	return false
}

// contentType answers application/json to a client that asks for JSON
// and not for the JWK Set type.
func contentType(accept string) string {
	if strings.Contains(accept, "application/json") && !strings.Contains(accept, ContentType) {
		return "application/json"
	}
	return ContentType
}
