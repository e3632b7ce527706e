package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"
	"google.golang.org/protobuf/proto"

	"github.com/sigil-hsm/sigil/internal/approval"
	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/identity"
)

// Access is the server's one access path, as the console uses it: Invoke
// runs a gRPC method in process, and As makes the context of a call by
// the signed-in identity from the browser at remote.
type Access interface {
	Invoke(ctx context.Context, fullMethod string, req, resp proto.Message) error
	As(ctx context.Context, id identity.ID, remote string) context.Context
	// Record audits what the console does that no gRPC method stands for
	// (a registration, a sign-in); on error the answer is withheld.
	Record(ctx context.Context, operation, keyID string, err error, details ...string) error
}

// Options configure a console.
type Options struct {
	Access Access
	Store  Store
	// Origin is the console's origin, https://HOST[:PORT]: WebAuthn's,
	// and the one every state change must come from.
	Origin string
	// RPID is WebAuthn's relying party ID; the origin's host if empty.
	RPID string
	Now  func() time.Time
	Log  *slog.Logger
}

// Session lifetimes: a session ends after SessionIdle without use or
// SessionMax in all; a ceremony (a WebAuthn challenge) after Ceremony.
const (
	SessionIdle = 15 * time.Minute
	SessionMax  = 8 * time.Hour
	Ceremony    = 5 * time.Minute
)

//go:embed templates/*.html static/*
var assets embed.FS

// pages are the templates; printable shows a value's control and bidi
// characters escaped (an identity or a summary field cannot reorder what
// an approver reads), as the CLI shows them.
var pages = template.Must(template.New("").Funcs(template.FuncMap{"printable": approval.Printable, "activeSince": activeSince}).ParseFS(assets, "templates/*.html"))

// Console serves the console's pages and API.
type Console struct {
	o  Options
	wa *webauthn.WebAuthn

	mu         sync.Mutex
	sessions   map[string]*session // by the SHA-256 of the cookie
	ceremonies map[string]*ceremony
}

type session struct {
	id            identity.ID
	credential    string // the passkey that signed in: revoked, the session ends
	created, seen time.Time
}

// Bounds of what the console keeps in memory: an unauthenticated flood of
// sign-in starts is refused past maxCeremonies, not stored.
const (
	maxCeremonies = 4096
	maxSessions   = 4096
)

// ceremony is a WebAuthn challenge in flight, and what it is for.
type ceremony struct {
	data    webauthn.SessionData
	expires time.Time
	token   string // an enrollment's
	who     string // the identity registering
	action  string // an approval's: "approve ID" or "deny ID"
}

// New makes a console.
func New(o Options) (*Console, error) {
	u, err := url.Parse(o.Origin)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.Path != "" {
		return nil, errs.New(errs.InvalidArgument, "console.origin %q: want https://HOST[:PORT]", o.Origin)
	}
	if o.RPID == "" {
		o.RPID = u.Hostname()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	wa, err := webauthn.New(&webauthn.Config{RPID: o.RPID, RPDisplayName: "Sigil", RPOrigins: []string{o.Origin}})
	if err != nil {
		return nil, err
	}
	return &Console{o: o, wa: wa, sessions: map[string]*session{}, ceremonies: map[string]*ceremony{}}, nil
}

// Handler is the console's HTTP handler.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	static := http.FileServerFS(assets)
	mux.Handle("GET /static/", static)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/approvals", http.StatusSeeOther) })
	mux.HandleFunc("GET /login", c.page("login"))
	mux.HandleFunc("GET /enroll", c.page("enroll"))
	mux.HandleFunc("POST /api/enroll/begin", c.api(c.enrollBegin))
	mux.HandleFunc("POST /api/enroll/finish", c.api(c.enrollFinish))
	mux.HandleFunc("POST /api/login/begin", c.api(c.loginBegin))
	mux.HandleFunc("POST /api/login/finish", c.api(c.loginFinish))
	mux.HandleFunc("POST /api/logout", c.api(c.logout))
	mux.HandleFunc("GET /approvals", c.signedIn(c.approvalsPage))
	mux.HandleFunc("GET /keys", c.signedIn(c.keysPage))
	mux.HandleFunc("GET /keys/{id}", c.signedIn(c.keyPage))
	mux.HandleFunc("GET /jwks", c.signedIn(c.jwksPage))
	mux.HandleFunc("GET /audit", c.signedIn(c.auditPage))
	mux.HandleFunc("GET /health", c.signedIn(c.healthPage))
	mux.HandleFunc("POST /api/approvals/begin", c.api(c.decisionBegin))
	mux.HandleFunc("POST /api/approvals/finish", c.api(c.decisionFinish))
	return secure(mux)
}

// secure sets the headers every answer carries: no inline script (the
// CSP), no framing, no sniffing, no referrer.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Strict-Transport-Security", "max-age=31536000")
		h.ServeHTTP(w, r)
	})
}

func (c *Console) page(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { c.render(w, name, map[string]any{}) }
}

func (c *Console) render(w http.ResponseWriter, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pages.ExecuteTemplate(w, name+".html", data); err != nil {
		c.o.Log.Error("console page", "page", name, "err", err)
	}
}

// api wraps a JSON endpoint: a state change, so the request must come
// from the console's own origin (a cross-site form or fetch carries
// another, or none), with a JSON body of at most 64 KiB.
func (c *Console) api(fn func(w http.ResponseWriter, r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Origin") != c.o.Origin {
			http.Error(w, "cross-origin request refused", http.StatusForbidden)
			return
		}
		if r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "want application/json", http.StatusUnsupportedMediaType)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		out, err := fn(w, r)
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			w.WriteHeader(httpStatus(err))
			json.NewEncoder(w).Encode(map[string]string{"error": publicError(err)})
			return
		}
		json.NewEncoder(w).Encode(out)
	}
}

// signedIn serves a page to a signed-in identity, and sends anyone else
// to the sign-in page.
func (c *Console) signedIn(fn func(w http.ResponseWriter, r *http.Request, s *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := c.session(r)
		if s == nil {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		fn(w, r, s)
	}
}

const sessionCookie = "__Host-sigil-session"

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return string(sum[:])
}

// session is the live session the request's cookie names, if any; using
// it extends it up to SessionMax.
func (c *Console) session(r *http.Request) *session {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	now := c.o.Now()
	c.mu.Lock()
	s := c.sessions[digest(ck.Value)]
	if s == nil || now.Sub(s.seen) > SessionIdle || now.Sub(s.created) > SessionMax {
		delete(c.sessions, digest(ck.Value))
		c.mu.Unlock()
		return nil
	}
	s.seen = now
	c.mu.Unlock()
	// A passkey revoked ends its sessions at their next request.
	if p, err := c.o.Store.Passkey(r.Context(), s.credential); err != nil || p.Revoked {
		c.mu.Lock()
		delete(c.sessions, digest(ck.Value))
		c.mu.Unlock()
		return nil
	}
	return s
}

// startSession makes a new session for id (never one the browser
// brought: no fixation) and sets its cookie.
func (c *Console) startSession(w http.ResponseWriter, id identity.ID, credential string) error {
	token := random()
	now := c.o.Now()
	c.mu.Lock()
	if len(c.sessions) >= maxSessions {
		for k, v := range c.sessions {
			if now.Sub(v.seen) > SessionIdle || now.Sub(v.created) > SessionMax {
				delete(c.sessions, k)
			}
		}
	}
	if len(c.sessions) >= maxSessions {
		c.mu.Unlock()
		return errs.New(errs.ResourceExhausted, "too many sessions: try again later")
	}
	c.sessions[digest(token)] = &session{id: id, credential: credential, created: now, seen: now}
	c.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: token, Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode, MaxAge: int(SessionMax.Seconds())})
	return nil
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) (any, error) {
	if ck, err := r.Cookie(sessionCookie); err == nil {
		c.mu.Lock()
		delete(c.sessions, digest(ck.Value))
		c.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	return map[string]string{"ok": "signed out"}, nil
}

// remember keeps a ceremony for Ceremony and returns its handle. The
// expired are swept only when the map is full, and a full map of live
// ones refuses: a flood of starts costs a bounded amount.
func (c *Console) remember(cer *ceremony) (string, error) {
	h := random()
	now := c.o.Now()
	cer.expires = now.Add(Ceremony)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ceremonies) >= maxCeremonies {
		for k, v := range c.ceremonies {
			if now.After(v.expires) {
				delete(c.ceremonies, k)
			}
		}
	}
	if len(c.ceremonies) >= maxCeremonies {
		return "", errs.New(errs.ResourceExhausted, "too many sign-ins under way: try again later")
	}
	c.ceremonies[h] = cer
	return h, nil
}

// take returns and forgets the ceremony h: a challenge answers once.
func (c *Console) take(h string) (*ceremony, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cer := c.ceremonies[h]
	delete(c.ceremonies, h)
	if cer == nil || c.o.Now().After(cer.expires) {
		return nil, errs.New(errs.PermissionDenied, "this sign-in or approval was not started here, or took too long: start again")
	}
	return cer, nil
}

func random() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// httpStatus maps an error to the status the API answers it with.
func httpStatus(err error) int {
	switch errs.KindOf(err) {
	case errs.InvalidArgument:
		return http.StatusBadRequest
	case errs.PermissionDenied, errs.Unauthenticated:
		return http.StatusForbidden
	case errs.NotFound:
		return http.StatusNotFound
	case errs.FailedPrecondition, errs.Aborted, errs.AlreadyExists:
		return http.StatusConflict
	case errs.ResourceExhausted:
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

// publicError is what the browser is told: a refusal's own words (they
// name no secret), and nothing of an internal failure.
func publicError(err error) string {
	switch errs.KindOf(err) {
	case errs.Internal, errs.Unavailable, errs.DeadlineExceeded, errs.Canceled:
		return "the console could not do that now: try again"
	}
	return err.Error()
}
