package e2e_test

import (
	"cmp"
	"context"
	"crypto/hmac"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sigil-hsm/sigil/internal/notify"
)

// hookReceiver is a webhook endpoint that black-holes every call (it
// never answers) until up, then takes each signed delivery, counting
// them by idempotency key.
type hookReceiver struct {
	secret []byte
	up     time.Time
	mu     sync.Mutex
	got    map[string]int
	bad    []string
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if time.Now().Before(h.up) {
		select { // hangs past the notifier's timeout
		case <-r.Context().Done():
		case <-time.After(time.Until(h.up)):
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	body, _ := io.ReadAll(r.Body)
	ts, sig, _ := strings.Cut(strings.TrimPrefix(r.Header.Get(notify.HeaderSignature), "t="), ",v1=")
	h.mu.Lock()
	defer h.mu.Unlock()
	if !hmac.Equal([]byte(sig), []byte(notify.Sign(h.secret, ts, body))) {
		h.bad = append(h.bad, string(body))
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	h.got[r.Header.Get(notify.HeaderIdempotency)]++
}

func (h *hookReceiver) keys() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for k, v := range h.got {
		out[k] = v
	}
	return out
}

// A request held for approval raises held, approved and ran; the hook
// black-holes every call for 30 s, and the replica delivering to it is
// killed with SIGKILL mid-call and restarted. Every event then reaches
// the hook, signed, and once by its idempotency key: no event lost, none
// invented.
func TestWebhooksGetEveryEventAcrossOutageAndKill9(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "hook-secret")
	os.WriteFile(secretFile, []byte("throwaway-test-webhook-secret"), 0o600)
	rcv := &hookReceiver{secret: []byte("throwaway-test-webhook-secret"), up: time.Now().Add(30 * time.Second), got: map[string]int{}}
	hook := httptest.NewServer(rcv)
	defer hook.Close()
	w := newDualWorld(t, 2, fmt.Sprintf(`notify:
  - url: %s/hook
    secret: file:%s
    events: [approval.held, approval.approved, approval.denied, approval.expired, approval.ran]
`, hook.URL, secretFile))
	w.newTreasuryKey()
	id := w.held(treasury, 0, "eth", "sign-tx", "--key", "treasury-1", "--tx", txJSON(0, twoETH))

	// The replica that holds the request's outbox while its call hangs
	// dies, and comes back.
	cli, err := clientv3.New(clientv3.Config{Endpoints: w.etcd, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	holder := ""
	for deadline := time.Now().Add(15 * time.Second); holder == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := cli.Get(context.Background(), "/sigil-dual/anchors/approvals/"+id)
		if err == nil && len(resp.Kvs) == 1 {
			var r struct {
				Outbox struct {
					Hooks map[string]struct{ Holder string }
				}
			}
			json.Unmarshal(resp.Kvs[0].Value, &r)
			for _, h := range r.Outbox.Hooks {
				holder = cmp.Or(holder, h.Holder)
			}
		}
	}
	if holder != "r0" && holder != "r1" {
		t.Fatalf("no replica held the outbox of %s (holder %q)", id, holder)
	}
	i := int(holder[1] - '0')
	w.procs[i].Kill()
	w.start(i, "")

	w.must(alice, 0, "approvals", "approve", id)
	w.must(bob, 1, "approvals", "approve", id)
	want := []string{id + ".approval.held", id + ".approval.approved", id + ".approval.ran"}
	deadline := time.Now().Add(90 * time.Second)
	for {
		got := rcv.keys()
		missing := 0
		for _, k := range want {
			if got[k] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hook got %v, want every one of %v", got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // what else a replica would send
	got := rcv.keys()
	if len(got) != len(want) {
		t.Errorf("the hook got events nobody raised: %v", got)
	}
	for _, k := range want {
		if got[k] != 1 {
			t.Logf("%s delivered %d times (at least once; the receiver dedupes by the key)", k, got[k])
		}
	}
	if len(rcv.bad) > 0 {
		t.Errorf("deliveries whose signature does not verify: %v", rcv.bad)
	}
}
