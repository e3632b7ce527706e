package e2e_test

import (
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/internal/devmode"
	"github.com/sigil-hsm/sigil/internal/testutil/crosscheck"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// Five relying-party libraries nobody here wrote (Node jose 5 and 6,
// PyJWT, Go jwx v3 and keyfunc), set up as docs/relying-parties.md says,
// against a live server whose keyring also holds an ES256K key (in a set
// of its own): they all read the default set, accept a rotated key's
// tokens the moment it signs, and reject a revoked generation's tokens
// within the max-age Sigil sends.
func TestRelyingPartiesFollowRotationAndRevocation(t *testing.T) {
	framework.RequireTools(t)
	crosscheck.Require(t)
	bin := framework.Build(t)
	data := filepath.Join(t.TempDir(), ".sigil-dev")
	defer framework.DevServer(t, bin, data)()
	dc, err := devmode.ReadClient(data)
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string { return framework.Run(t, bin, append(args, "--data-dir", data)...) }
	run("jwks-set", "create", "chain", "--allow-es256k")
	run("keys", "create", "chain-1", "--alg", "ES256K", "--purpose", "jwt", "--jwks-set", "chain")
	// max-age = A − S = 3 s.
	run("keys", "create", "auth", "--alg", "ES256", "--purpose", "jwt", "--rotate-every", "1h", "--publish-ahead", "4s", "--skew", "1s", "--max-token-ttl", "1m")
	const maxAge = 3 * time.Second
	mint := func() (string, int) {
		var out struct {
			Token      string `json:"token"`
			Generation int    `json:"generation"`
		}
		if err := json.Unmarshal([]byte(run("jwt", "sign", "--key", "auth", "--claims", `{"sub":"alice"}`, "--json")), &out); err != nil {
			t.Fatal(err)
		}
		return out.Token, out.Generation
	}
	rps := crosscheck.RelyingParties(t, "http://"+dc.HTTPAddr+"/.well-known/jwks.json", maxAge)

	t1, _ := mint()
	for _, rp := range rps {
		if ok, answer := rp.Verify(t1); !ok {
			t.Errorf("%s rejects a token of the default set's key: %s", rp.Name, answer)
		}
	}

	// A rotation: published A before it signs, so every cache has it.
	run("keys", "rotate", "auth")
	t2, gen := mint()
	for deadline := time.Now().Add(15 * time.Second); gen != 2 && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		t2, gen = mint()
	}
	if gen != 2 {
		t.Fatalf("generation %d signs 15 s after the rotation", gen)
	}
	for _, rp := range rps {
		if ok, answer := rp.Verify(t2); !ok {
			t.Errorf("%s rejects the first tokens of the new generation: %s", rp.Name, answer)
		}
	}

	// A revocation reaches every relying party within the max-age.
	run("keys", "revoke", "auth", "--generation", "2")
	revoked := time.Now()
	var wg sync.WaitGroup
	for _, rp := range rps {
		wg.Go(func() {
			for time.Since(revoked) < maxAge+5*time.Second {
				if ok, _ := rp.Verify(t2); !ok {
					took := time.Since(revoked)
					t.Logf("%s rejects the revoked generation after %v", rp.Name, took.Round(100*time.Millisecond))
					if took > maxAge+2*time.Second {
						t.Errorf("%s accepted the revoked generation for %v, past the max-age of %v", rp.Name, took, maxAge)
					}
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
			t.Errorf("%s still accepts the revoked generation %v after its revocation", rp.Name, time.Since(revoked))
		})
	}
	wg.Wait()
	for _, rp := range rps {
		if ok, answer := rp.Verify(t1); !ok {
			t.Errorf("%s rejects the retiring generation's token, still valid: %s", rp.Name, answer)
		}
	}
}
