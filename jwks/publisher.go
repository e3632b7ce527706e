package jwks

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// ContentType is the media type of a JWK Set (RFC 7517 section 8.5.1).
const ContentType = "application/jwk-set+json"

// DefaultMaxAge is the max-age of a document with no key in it.
const DefaultMaxAge = time.Minute

// Entry is one logical key's published generations and how long relying
// parties may cache them.
type Entry struct {
	ID     string
	MaxAge time.Duration
	Keys   []JWK
}

// Document is a serialised JWK Set with its cache headers.
type Document struct {
	Body   []byte
	ETag   string // strong: a hash of Body
	MaxAge time.Duration
}

type documents struct {
	all   *Document
	byKey map[string]*Document
}

// Publisher serves the current JWK Set documents.
type Publisher struct {
	cur atomic.Pointer[documents]
}

// NewPublisher returns a Publisher serving empty documents.
func NewPublisher() *Publisher {
	p := &Publisher{}
	if err := p.Update(nil); err != nil {
		panic(err) // an empty set always encodes
	}
	return p
}

// Update rebuilds every document from entries and swaps them in at once.
// The output is a pure function of the entries (sorted by ID), so every
// replica with the same keyring serves the same bytes and ETag.
func (p *Publisher) Update(entries []Entry) error {
	entries = slices.Clone(entries)
	slices.SortFunc(entries, func(a, b Entry) int { return strings.Compare(a.ID, b.ID) })
	var all []JWK
	allAge := time.Duration(0)
	docs := &documents{byKey: map[string]*Document{}}
	for _, e := range entries {
		d, err := build(e.Keys, e.MaxAge)
		if err != nil {
			return fmt.Errorf("JWKS of key %q: %w", e.ID, err)
		}
		docs.byKey[e.ID] = d
		all = append(all, e.Keys...)
		if allAge == 0 || e.MaxAge < allAge {
			allAge = e.MaxAge
		}
	}
	if allAge == 0 {
		allAge = DefaultMaxAge
	}
	d, err := build(all, allAge)
	if err != nil {
		return err
	}
	docs.all = d
	p.cur.Store(docs)
	return nil
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

// All returns the document of every JWT key.
func (p *Publisher) All() *Document { return p.cur.Load().all }

// Key returns the document of key id.
func (p *Publisher) Key(id string) (*Document, bool) {
	d, ok := p.cur.Load().byKey[id]
	return d, ok
}

// Register adds the JWKS routes to mux.
func (p *Publisher) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, r *http.Request) { serve(w, r, p.All()) })
	mux.HandleFunc("GET /keys/{id}/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		d, ok := p.Key(r.PathValue("id"))
		if !ok {
			http.Error(w, "no such JWT key", http.StatusNotFound)
			return
		}
		serve(w, r, d)
	})
}

// serve writes d with its validators and cache headers, or 304 when the
// client already holds it. (GET routes answer HEAD too.)
func serve(w http.ResponseWriter, r *http.Request, d *Document) {
	h := w.Header()
	h.Set("ETag", d.ETag)
	h.Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(d.MaxAge.Seconds())))
	h.Set("Vary", "Accept")
	// Public keys, for any origin: a browser relying party may fetch them.
	h.Set("Access-Control-Allow-Origin", "*")
	if matches(r.Header.Get("If-None-Match"), d.ETag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", contentType(r.Header.Get("Accept")))
	h.Set("Content-Length", fmt.Sprint(len(d.Body)))
	w.Write(d.Body)
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
