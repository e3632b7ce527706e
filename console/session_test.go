package console

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/sigil-hsm/sigil/internal/identity"
	"github.com/sigil-hsm/sigil/keyring/boltstore"
)

// Sessions: a sign-in never adopts the cookie the browser brought (an
// attacker's planted token names no session after it); a session ends
// after SessionIdle unused, after SessionMax however used, at sign-out,
// and when its passkey is revoked.
func TestSessionsFixationExpiryAndRevocation(t *testing.T) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	store := Store{A: st}
	ctx := context.Background()
	p := &Passkey{Identity: "spiffe://example.org/alice", Credential: webauthn.Credential{ID: []byte("cred-alice")}, Created: time.Now()}
	if err := store.AddPasskey(ctx, p); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	c, err := New(Options{Store: store, Origin: "https://sigil.example.org", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	alice, _ := identity.Parse(p.Identity)
	request := func(token string) *http.Request {
		r := httptest.NewRequest("GET", "/keys", nil)
		if token != "" {
			r.AddCookie(&http.Cookie{Name: sessionCookie, Value: token})
		}
		return r
	}
	signIn := func() string {
		w := httptest.NewRecorder()
		if err := c.startSession(w, alice, p.ID()); err != nil {
			t.Fatal(err)
		}
		for _, ck := range w.Result().Cookies() {
			if ck.Name == sessionCookie && ck.HttpOnly && ck.Secure && ck.SameSite == http.SameSiteStrictMode {
				return ck.Value
			}
		}
		t.Fatal("no HttpOnly, Secure, SameSite=Strict session cookie")
		return ""
	}

	const planted = "attacker-chosen-token"
	token := signIn()
	if token == planted || c.session(request(planted)) != nil {
		t.Fatal("a planted cookie names a session")
	}
	if s := c.session(request(token)); s == nil || s.id.String() != p.Identity {
		t.Fatal("the new session is not alice's")
	}

	now = now.Add(SessionIdle + time.Second)
	if c.session(request(token)) != nil {
		t.Error("a session unused past SessionIdle lives")
	}

	token = signIn()
	for elapsed := time.Duration(0); elapsed <= SessionMax; elapsed += SessionIdle / 2 {
		now = now.Add(SessionIdle / 2)
		if c.session(request(token)) == nil {
			if elapsed+SessionIdle/2 <= SessionMax {
				t.Fatalf("a session in use ended after %v", elapsed+SessionIdle/2)
			}
			break
		}
		if elapsed+SessionIdle/2 > SessionMax {
			t.Fatal("a session in use lived past SessionMax")
		}
	}

	token = signIn()
	w := httptest.NewRecorder()
	if _, err := c.logout(w, request(token)); err != nil || c.session(request(token)) != nil {
		t.Errorf("after signing out: %v", err)
	}

	token = signIn()
	if err := store.Revoke(ctx, p.ID()); err != nil {
		t.Fatal(err)
	}
	if c.session(request(token)) != nil {
		t.Error("a session of a revoked passkey lives")
	}
}
