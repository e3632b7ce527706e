package e2e_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/sigil-hsm/sigil/tests/framework"
)

// 60 `keys create --purpose jwt` at once, through the CLI, while the
// rotation scheduler ticks: all 60 succeed (none answers Aborted or any
// other error for a key that was in fact created), and each key has
// exactly one generation, active.
func TestSixtyParallelJWTCreates(t *testing.T) {
	framework.RequireTools(t)
	e := framework.NewEnv(t, framework.Build(t))
	e.Start("")
	const n = 60
	var wg sync.WaitGroup
	errs := make([]string, n)
	for i := range n {
		wg.Go(func() {
			if out, err := e.Sigil("keys", "create", fmt.Sprintf("par-%02d", i), "--alg", "ES256", "--purpose", "jwt"); err != nil {
				errs[i] = fmt.Sprintf("par-%02d: %v: %s", i, err, out)
			}
		})
	}
	wg.Wait()
	if failed := strings.Join(slicesNonEmpty(errs), "\n"); failed != "" {
		t.Fatalf("creations failed:\n%s", failed)
	}
	for i := range n {
		var k struct {
			Generations []struct {
				State string `json:"state"`
			} `json:"generations"`
		}
		if err := json.Unmarshal([]byte(e.Must("keys", "get", fmt.Sprintf("par-%02d", i), "--json")), &k); err != nil {
			t.Fatal(err)
		}
		if len(k.Generations) != 1 || k.Generations[0].State != "active" {
			t.Errorf("par-%02d: generations %+v, want one, active", i, k.Generations)
		}
	}
}

func slicesNonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
