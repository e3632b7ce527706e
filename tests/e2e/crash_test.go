package e2e_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sigil-hsm/sigil/tests/framework"
)

// objects lists the token's key objects as pkcs11-tool shows them:
// "private|public label id" per object.
func objects(e *framework.Env) []string {
	var out []string
	var class string
	var label string
	for _, l := range strings.Split(e.P11("--list-objects"), "\n") {
		switch f := strings.Fields(l); {
		case strings.HasPrefix(l, "Private Key Object"):
			class = "private"
		case strings.HasPrefix(l, "Public Key Object"):
			class = "public"
		case strings.HasPrefix(l, "Data object"), strings.HasPrefix(l, "Certificate Object"):
			class = ""
		case class != "" && len(f) >= 1 && f[0] == "label:":
			label = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "label:"))
		case class != "" && len(f) == 2 && f[0] == "ID:":
			out = append(out, class+" "+label+" "+f[1])
			class = ""
		}
	}
	slices.Sort(out)
	return out
}

// owner is the keyring's owner mark, in hex, as the audit key's backend
// reference shows it (the CKA_ID after Sigil's marker).
func owner(e *framework.Env) string {
	e.T.Helper()
	var k framework.KeyJSON
	if err := json.Unmarshal([]byte(e.Must("keys", "get", "sigil.audit", "--json")), &k); err != nil {
		e.T.Fatal(err)
	}
	m := regexp.MustCompile(`id=%53%47%4C%01%(..)%(..)%(..)%(..)`).FindStringSubmatch(k.Generations[0].BackendRef)
	if m == nil {
		e.T.Fatalf("no owner mark in %s", k.Generations[0].BackendRef)
	}
	return strings.ToLower(m[1] + m[2] + m[3] + m[4])
}

var sigilLabel = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}\.g[0-9]+$`)

// check asserts what must hold after any crash and a restart: every jwt
// key has exactly one active generation, the token holds exactly one key
// pair per generation the keyring says exists (and nothing else of
// Sigil's), and the foreign objects are untouched.
func check(e *framework.Env, foreign []string) {
	e.T.Helper()
	var keys []framework.KeyJSON
	if err := json.Unmarshal([]byte(e.Must("keys", "list", "--json")), &keys); err != nil {
		e.T.Fatal(err)
	}
	var want []string
	for _, k := range keys {
		active := 0
		for _, g := range k.Generations {
			if g.State == "active" {
				active++
			}
			if g.State != "destroyed" {
				want = append(want, fmt.Sprintf("%s.g%d", k.ID, g.Generation))
			}
		}
		if k.Purpose == "jwt" && active != 1 {
			e.T.Errorf("jwt key %s has %d active generations: %+v", k.ID, active, k.Generations)
		}
	}
	var got, others []string
	for _, o := range objects(e) {
		f := strings.Fields(o)
		if len(f) == 3 && sigilLabel.MatchString(f[1]) && f[1] != "theirs.g1" {
			got = append(got, f[0]+" "+f[1])
		} else {
			others = append(others, o)
		}
	}
	var wantObjs []string
	for _, n := range want {
		wantObjs = append(wantObjs, "private "+n, "public "+n)
	}
	slices.Sort(wantObjs)
	if !slices.Equal(got, wantObjs) {
		e.T.Errorf("token objects %v, keyring says %v", got, wantObjs)
	}
	if !slices.Equal(others, foreign) {
		e.T.Errorf("objects Sigil did not make changed: %v, were %v", others, foreign)
	}
}

// The server is killed (SIGKILL, by a failpoint) at every step of create,
// rotate, revoke and destroy. After a restart, within a sweep period, the
// keyring and the token agree one to one, every jwt key has one active
// generation, crashed creations can be retried with the same ID, and
// objects Sigil did not make are untouched.
func TestCrashAtEveryStepHealsAfterRestart(t *testing.T) {
	framework.RequireTools(t, "pkcs11-tool")
	bin := framework.Build(t)
	jwt := []string{"--alg", "ES256", "--purpose", "jwt"}
	cases := []struct {
		fp    string
		setup [][]string // with no failpoint armed
		act   []string   // the call the server dies in; nil: the scheduler dies by itself
		after [][]string // must succeed after the restart
	}{
		{fp: "create.after-record", act: append([]string{"keys", "create", "k"}, jwt...), after: [][]string{append([]string{"keys", "create", "k"}, jwt...)}},
		{fp: "generation.after-record", act: append([]string{"keys", "create", "k"}, jwt...), after: [][]string{append([]string{"keys", "create", "k"}, jwt...)}},
		{fp: "generation.after-backend", act: append([]string{"keys", "create", "k"}, jwt...), after: [][]string{append([]string{"keys", "create", "k"}, jwt...)}},
		{fp: "generation.after-record", setup: [][]string{append([]string{"keys", "create", "k"}, jwt...)}, act: []string{"keys", "rotate", "k", "--now"}, after: [][]string{{"keys", "rotate", "k", "--now"}}},
		{fp: "generation.after-backend", setup: [][]string{append([]string{"keys", "create", "k"}, jwt...)}, act: []string{"keys", "rotate", "k", "--now"}, after: [][]string{{"keys", "rotate", "k", "--now"}}},
		{fp: "generation.after-record", setup: [][]string{append([]string{"keys", "create", "k"}, jwt...)}, act: []string{"keys", "revoke", "k", "--generation", "1"}, after: [][]string{{"keys", "revoke", "k", "--generation", "1"}}},
		{fp: "generation.after-backend", setup: [][]string{append([]string{"keys", "create", "k"}, jwt...)}, act: []string{"keys", "revoke", "k", "--generation", "1"}, after: [][]string{{"keys", "revoke", "k", "--generation", "1"}}},
		{fp: "revoke.after-commit", setup: [][]string{append([]string{"keys", "create", "k"}, jwt...)}, act: []string{"keys", "revoke", "k", "--generation", "1"}},
		{fp: "destroy.after-backend", setup: [][]string{append([]string{"keys", "create", "k"}, jwt...), {"keys", "rotate", "k", "--now"}, {"keys", "revoke", "k", "--generation", "1"}}},
	}
	for _, c := range cases {
		name := c.fp + "/" + strings.Join(c.act, "-")
		if c.act == nil {
			name = c.fp + "/scheduler"
		}
		t.Run(name, func(t *testing.T) {
			e := framework.NewEnv(t, bin)
			e.P11("--keypairgen", "--key-type", "EC:prime256v1", "--id", "0102", "--label", "theirs.g1")
			e.P11("--keypairgen", "--key-type", "EC:prime256v1", "--id", "0304")
			foreign := objects(e)
			if len(foreign) != 4 {
				t.Fatalf("foreign objects: %v", foreign)
			}
			e.Start("")
			if c.act != nil {
				for _, cmd := range c.setup {
					e.Must(cmd...)
				}
			}
			owner := owner(e)
			e.Srv.Stop(t)
			// A key pair this keyring made (Sigil's ID marker and its owner
			// mark, a name of its shape) that no record names: the sweep
			// must destroy it, and audit that.
			e.P11("--keypairgen", "--key-type", "EC:prime256v1", "--id", "53474c01"+owner+"aabbccddeeff0011", "--label", "lost.g1")
			e.Start(c.fp)
			setup := c.setup
			if c.act != nil {
				setup = [][]string{c.act}
			}
			for _, cmd := range setup {
				e.Sigil(cmd...) // the last one may die with the server
			}
			e.Srv.Died(t, 10*time.Second)
			e.Start("")
			time.Sleep(2500 * time.Millisecond) // a sweep period past the orphan grace, and the destroy retried
			check(e, foreign)
			audit, _ := os.ReadFile(e.Audit)
			if !strings.Contains(string(audit), `"key_id":"lost","generation":1,"outcome":"orphan_destroyed"`) {
				t.Errorf("no audit record of the orphan's destruction")
			}
			if strings.HasPrefix(c.fp, "generation.") && !strings.Contains(string(audit), `"outcome":"rollback"`) {
				t.Errorf("no audit record of the rollback")
			}
			for _, cmd := range c.after {
				e.Must(cmd...)
			}
			check(e, foreign)
			e.Srv.Stop(t)
		})
	}
}
