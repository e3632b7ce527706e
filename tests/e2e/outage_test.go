package e2e_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigil-hsm/sigil/internal/softhsm"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/tests/framework"
)

// The token's storage disappears for 8 s under a signing load (a network
// HSM dropping out, a remounted volume) and comes back. Meanwhile every
// answer is Unavailable (never NotFound, never past the deadline) and
// /readyz is 503; within 10 s of the return, signing works again without
// a restart, /readyz is 200, and the re-initialisation shows in metrics.
func TestTokenOutageHealsWithoutRestart(t *testing.T) {
	framework.RequireTools(t)
	e := framework.NewEnv(t, framework.Build(t))
	e.Start("")
	e.Must("keys", "create", "blip", "--alg", "ES256")
	client := sigilv1.NewSigningServiceClient(e.Dial(t))
	var phase atomic.Int32 // 0 before, 1 during the fault, 2 after the restore
	var okDuring, unavailable atomic.Int32
	var lastOK atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				start := time.Now()
				_, err := client.Sign(ctx, &sigilv1.SignRequest{KeyId: "blip", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}})
				cancel()
				switch code := status.Code(err); {
				case code == codes.OK:
					lastOK.Store(time.Now().UnixNano())
					if phase.Load() == 1 {
						okDuring.Add(1)
					}
				case code == codes.Unavailable:
					unavailable.Add(1)
					time.Sleep(10 * time.Millisecond)
				default:
					t.Errorf("phase %d: %v after %v; want OK or Unavailable", phase.Load(), err, time.Since(start))
					return
				}
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(300 * time.Millisecond)
	dir, err := softhsm.TokenDir(e.HSMDir, e.Token)
	if err != nil {
		t.Fatal(err)
	}
	// Out of SoftHSM's token folder: a folder left inside it is found as a
	// token again by the next C_Initialize.
	aside := filepath.Join(e.HSMDir, "aside")
	if err := os.Rename(dir, aside); err != nil {
		t.Fatal(err)
	}
	phase.Store(1)
	away := time.Now()
	if !withinE(4*time.Second, func() bool { code, _ := get(t, e.Srv.AdminAddr, "/readyz"); return code == 503 }) {
		t.Fatal("/readyz not 503 with the token's storage gone")
	}
	_, body := get(t, e.Srv.AdminAddr, "/readyz")
	if !strings.Contains(body, `"hsm":{"up":false`) {
		t.Errorf("/readyz body does not say which backend is down: %s", body)
	}
	okDuring.Store(0) // answers already in flight when the storage went may have succeeded
	time.Sleep(8*time.Second - time.Since(away))
	if n := okDuring.Load(); n > 0 {
		t.Errorf("%d signatures while the token's storage was gone and readiness said so", n)
	}
	if err := os.Rename(aside, dir); err != nil {
		t.Fatal(err)
	}
	phase.Store(2)
	back := time.Now()
	if !withinE(10*time.Second, func() bool { return lastOK.Load() > back.UnixNano() }) {
		t.Fatalf("not signing 10 s after the storage returned: %s", e.Srv.Logs.String())
	}
	t.Logf("signing again %v after the storage returned; %d Unavailable answers meanwhile", time.Since(back).Round(time.Millisecond), unavailable.Load())
	if !withinE(2*time.Second, func() bool { code, _ := get(t, e.Srv.AdminAddr, "/readyz"); return code == 200 }) {
		t.Fatal("/readyz not back to 200")
	}
	_, metrics := get(t, e.Srv.AdminAddr, "/metrics")
	m := regexp.MustCompile(`sigil_backend_reinit_total\{backend="hsm"\} (\d+)`).FindStringSubmatch(metrics)
	if n, _ := strconv.Atoi(m[1]); m == nil || n == 0 {
		t.Fatalf("sigil_backend_reinit_total did not increase: %v", m)
	}
	if !strings.Contains(metrics, `sigil_backend_up{backend="hsm"} 1`) {
		t.Fatal("sigil_backend_up is not 1 after the recovery")
	}
	// An outage is not a deletion: the key-missing alarm (whose runbook
	// says to restore the object or revoke the generation) stays silent.
	if !strings.Contains(metrics, `sigil_backend_key_missing_total{backend="hsm"} 0`) {
		t.Fatalf("sigil_backend_key_missing_total is not 0 after a token outage:\n%s", regexp.MustCompile(`(?m)^sigil_backend_key_missing.*$`).FindAllString(metrics, -1))
	}
	if logs := e.Srv.Logs.String(); strings.Contains(logs, "key object missing") {
		t.Fatal("a token outage was logged as a missing key object")
	}
	if !withinE(time.Second, func() bool { return strings.Contains(e.Srv.Logs.String(), `"msg":"backend up"`) }) ||
		strings.Count(e.Srv.Logs.String(), `"msg":"backend down"`) != 1 {
		t.Fatalf("the outage and the recovery were not logged once each:\n%s", e.Srv.Logs.String())
	}
	if unavailable.Load() == 0 {
		t.Fatal("no request saw the outage")
	}
}

func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
