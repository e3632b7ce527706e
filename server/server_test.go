package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-hsm/sigil/internal/testutil/softhsmtest"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/server"
	"github.com/sigil-hsm/sigil/server/servertest"
	"github.com/sigil-hsm/sigil/signer"
	"github.com/sigil-hsm/sigil/signer/pkcs11"
)

func TestMain(m *testing.M) { softhsmtest.Main(m, 110) }

// harness is a running server (servertest) with the tests' helpers.
type harness struct{ *servertest.Server }

func newHarness(t testing.TB, opts ...func(*server.Options)) *harness {
	return &harness{servertest.New(t, opts...)}
}

func (h *harness) create(t *testing.T, id, alg, purpose string) *sigilv1.Key {
	t.Helper()
	resp, err := h.Keys.CreateKey(context.Background(), &sigilv1.CreateKeyRequest{Id: id, Algorithm: alg, Purpose: purpose})
	if err != nil {
		t.Fatalf("CreateKey %s: %v", id, err)
	}
	return resp.GetKey()
}

func publicOf(t *testing.T, k *sigilv1.Key) any {
	t.Helper()
	pub, err := signer.ParsePublicKey(pemBody(t, k.GetGenerations()[0].GetPublicKeyPem()))
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func wantCode(t *testing.T, err error, c codes.Code) {
	t.Helper()
	if status.Code(err) != c {
		t.Fatalf("got %v, want code %v", err, c)
	}
}

func TestSignEveryAlgorithmOverGRPC(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	msg := []byte("sigil over grpc")
	for _, alg := range signer.Algorithms {
		k := h.create(t, "k-"+strings.ToLower(string(alg)), string(alg), "raw")
		pub := publicOf(t, k)
		req := &sigilv1.SignRequest{KeyId: k.GetId(), Input: &sigilv1.SignRequest_Digest{Digest: alg.Input(msg)}}
		if alg == signer.EdDSA {
			req.Input = &sigilv1.SignRequest_Message{Message: msg}
		}
		resp, err := h.Sign.Sign(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if resp.GetKid() != k.GetGenerations()[0].GetKid() || resp.GetGeneration() != 1 || resp.GetAlgorithm() != string(alg) {
			t.Errorf("%s: response %v", alg, resp)
		}
		pk, err := h.Keys.GetPublicKey(ctx, &sigilv1.GetPublicKeyRequest{Id: k.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		if pk.GetPublicKeyPem() != k.GetGenerations()[0].GetPublicKeyPem() || pk.GetKid() != resp.GetKid() || pk.GetGeneration() != 1 {
			t.Errorf("%s: GetPublicKey %v", alg, pk)
		}
		if der, err := signer.ParsePublicKey(pk.GetPublicKeyDer()); err != nil || !der.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
			t.Errorf("%s: GetPublicKey DER: %v", alg, err)
		}
		sig := resp.GetSignature()
		if alg.IsECDSA() { // DER by default; check it is DER, then verify as r‖s
			size := signer.CurveSize(pub.(*ecdsa.PublicKey).Curve)
			if sig, err = signer.DERToRaw(sig, size); err != nil {
				t.Fatalf("%s: not DER: %v", alg, err)
			}
			req.Format = sigilv1.SignatureFormat_SIGNATURE_FORMAT_RAW
			raw, err := h.Sign.Sign(ctx, req)
			if err != nil || len(raw.GetSignature()) != 2*size {
				t.Fatalf("%s raw: %v %x", alg, err, raw.GetSignature())
			}
			if err := signer.Verify(pub, alg, alg.Input(msg), raw.GetSignature()); err != nil {
				t.Fatalf("%s raw: %v", alg, err)
			}
		}
		if err := signer.Verify(pub, alg, alg.Input(msg), sig); err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
	}
}

func TestBadInputGetsItsCode(t *testing.T) {
	h := newHarness(t)
	h.create(t, "raw-p256", "ES256", "raw")
	h.create(t, "raw-ed", "EdDSA", "raw")
	h.create(t, "auth-jwt", "ES256", "jwt")
	d32 := make([]byte, 32)
	digest := func(b []byte) *sigilv1.SignRequest_Digest { return &sigilv1.SignRequest_Digest{Digest: b} }
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	cases := []struct {
		name string
		ctx  context.Context
		call func(ctx context.Context) error
		want codes.Code
	}{
		{"unknown key", nil, h.signer(&sigilv1.SignRequest{KeyId: "nope", Input: digest(d32)}), codes.NotFound},
		{"bad key ID", nil, h.signer(&sigilv1.SignRequest{KeyId: "Not/Valid", Input: digest(d32)}), codes.InvalidArgument},
		{"empty key ID", nil, h.signer(&sigilv1.SignRequest{Input: digest(d32)}), codes.InvalidArgument},
		{"jwt key for raw signing", nil, h.signer(&sigilv1.SignRequest{KeyId: "auth-jwt", Input: digest(d32)}), codes.FailedPrecondition},
		{"short digest", nil, h.signer(&sigilv1.SignRequest{KeyId: "raw-p256", Input: digest(d32[:31])}), codes.InvalidArgument},
		{"no input", nil, h.signer(&sigilv1.SignRequest{KeyId: "raw-p256"}), codes.InvalidArgument},
		{"message to an ECDSA key", nil, h.signer(&sigilv1.SignRequest{KeyId: "raw-p256", Input: &sigilv1.SignRequest_Message{Message: []byte("m")}}), codes.InvalidArgument},
		{"digest to an EdDSA key", nil, h.signer(&sigilv1.SignRequest{KeyId: "raw-ed", Input: digest(d32)}), codes.InvalidArgument},
		{"EdDSA message too long", nil, h.signer(&sigilv1.SignRequest{KeyId: "raw-ed", Input: &sigilv1.SignRequest_Message{Message: make([]byte, signer.MaxMessage+1)}}), codes.InvalidArgument},
		{"request over the size limit", nil, h.signer(&sigilv1.SignRequest{KeyId: "raw-ed", Input: &sigilv1.SignRequest_Message{Message: make([]byte, server.MaxRequestBytes+1)}}), codes.ResourceExhausted},
		{"expired deadline", expired, h.signer(&sigilv1.SignRequest{KeyId: "raw-p256", Input: digest(d32)}), codes.DeadlineExceeded},
		{"unknown algorithm", nil, h.creator(&sigilv1.CreateKeyRequest{Id: "x", Algorithm: "HS256"}), codes.InvalidArgument},
		{"unknown purpose", nil, h.creator(&sigilv1.CreateKeyRequest{Id: "x", Algorithm: "ES256", Purpose: "mint"}), codes.InvalidArgument},
		{"bad ID on create", nil, h.creator(&sigilv1.CreateKeyRequest{Id: "UPPER", Algorithm: "ES256"}), codes.InvalidArgument},
		{"existing ID", nil, h.creator(&sigilv1.CreateKeyRequest{Id: "raw-p256", Algorithm: "ES256"}), codes.AlreadyExists},
		{"unknown backend", nil, h.creator(&sigilv1.CreateKeyRequest{Id: "x", Algorithm: "ES256", Backend: "nowhere"}), codes.InvalidArgument},
		{"get unknown key", nil, func(ctx context.Context) error {
			_, err := h.Keys.GetKey(ctx, &sigilv1.GetKeyRequest{Id: "nope"})
			return err
		}, codes.NotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := c.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			wantCode(t, c.call(ctx), c.want)
		})
	}
	h.HSM.Down.Store(true)
	_, err := h.Sign.Sign(context.Background(), &sigilv1.SignRequest{KeyId: "raw-p256", Input: digest(d32)})
	wantCode(t, err, codes.Unavailable)
	h.HSM.Down.Store(false)
	if _, err := h.Sign.Sign(context.Background(), &sigilv1.SignRequest{KeyId: "raw-p256", Input: digest(d32)}); err != nil {
		t.Fatalf("after the backend came back: %v", err)
	}
	list, err := h.Keys.ListKeys(context.Background(), &sigilv1.ListKeysRequest{})
	if err != nil || len(list.GetKeys()) != 3 {
		t.Fatalf("refused requests changed the keyring: %v, %d keys", err, len(list.GetKeys()))
	}
}

func (h *harness) signer(req *sigilv1.SignRequest) func(context.Context) error {
	return func(ctx context.Context) error { _, err := h.Sign.Sign(ctx, req); return err }
}

func (h *harness) creator(req *sigilv1.CreateKeyRequest) func(context.Context) error {
	return func(ctx context.Context) error { _, err := h.Keys.CreateKey(ctx, req); return err }
}

func TestConcurrentSigningOverGRPC(t *testing.T) {
	h := newHarness(t)
	pub := publicOf(t, h.create(t, "busy", "ES256K", "raw"))
	var wg sync.WaitGroup
	for range 24 {
		wg.Go(func() {
			for range 10 {
				d := make([]byte, 32)
				rand.Read(d)
				resp, err := h.Sign.Sign(context.Background(), &sigilv1.SignRequest{KeyId: "busy", Input: &sigilv1.SignRequest_Digest{Digest: d},
					Format: sigilv1.SignatureFormat_SIGNATURE_FORMAT_RAW})
				if err == nil {
					err = signer.Verify(pub, signer.ES256K, d, resp.GetSignature())
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestKeysSurviveRestart(t *testing.T) {
	b, err := pkcs11.Open(context.Background(), "hsm-a", pkcs11.Config(softhsmtest.Token(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	hsm := &servertest.FaultyBackend{Backend: b}
	db := filepath.Join(t.TempDir(), "keyring.db")
	h := &harness{servertest.Start(t, hsm, db)}
	before := h.create(t, "keep", "EdDSA", "raw")
	h.Stop()

	h = &harness{servertest.Start(t, hsm, db)}
	got, err := h.Keys.GetKey(context.Background(), &sigilv1.GetKeyRequest{Id: "keep"})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetKey().GetGenerations()[0].GetPublicKeyPem() != before.GetGenerations()[0].GetPublicKeyPem() {
		t.Fatal("public key changed across the restart")
	}
	resp, err := h.Sign.Sign(context.Background(), &sigilv1.SignRequest{KeyId: "keep", Input: &sigilv1.SignRequest_Message{Message: []byte("m")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := signer.Verify(publicOf(t, before), signer.EdDSA, []byte("m"), resp.GetSignature()); err != nil {
		t.Fatal(err)
	}
}

func TestHealthReflectionAndHTTPEndpoints(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.create(t, "observed", "ES256", "raw")
	if _, err := h.Sign.Sign(ctx, &sigilv1.SignRequest{KeyId: "observed", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}}); err != nil {
		t.Fatal(err)
	}
	hc, err := healthpb.NewHealthClient(h.Conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hc, err)
	}
	stream, err := reflectionpb.NewServerReflectionClient(h.Conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	rr, err := stream.Recv()
	if err != nil || !strings.Contains(rr.String(), "sigil.v1.SigningService") {
		t.Fatalf("reflection: %v %v", rr, err)
	}
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  `"ready":true`,
		"/metrics": `sigil_sign_operations_total{algorithm="ES256",backend="hsm-a",key="observed",namespace="root",outcome="OK"} 1`,
	} {
		resp, err := http.Get(h.AdminURL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s: %d, body lacks %q", path, resp.StatusCode, want)
		}
	}
	for _, metric := range []string{`sigil_backend_up{backend="hsm-a"} 1`, `sigil_backend_reinit_total{backend="hsm-a"} 0`, "sigil_backend_seconds_since_healthy", "sigil_backend_sessions_in_use", "sigil_backend_session_waits_total", "sigil_sign_duration_seconds_bucket", "sigil_grpc_requests_total"} {
		resp, _ := http.Get(h.AdminURL + "/metrics")
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), metric) {
			t.Errorf("/metrics lacks %s", metric)
		}
	}
}

func pemBody(t *testing.T, s string) []byte {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "PUBLIC KEY" {
		t.Fatalf("not a PUBLIC KEY PEM: %q", s)
	}
	return b.Bytes
}

// While a backend is down, readiness says so on both protocols, per
// service too, and comes back by itself when the backend does.
func TestReadinessFollowsBackendHealth(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	health := healthpb.NewHealthClient(h.Conn)
	services := []string{"", "sigil.v1.SigningService", "sigil.v1.KeyService", "sigil.v1.JWTService", "sigil.v1.EthereumService"}
	expect := func(code int, want healthpb.HealthCheckResponse_ServingStatus, body string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			var problems []string
			resp, err := http.Get(h.AdminURL + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != code || !strings.Contains(string(b), body) {
				problems = append(problems, fmt.Sprintf("/readyz %d %s", resp.StatusCode, b))
			}
			for _, svc := range services {
				hc, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
				if err != nil || hc.GetStatus() != want {
					problems = append(problems, fmt.Sprintf("health(%q): %v %v", svc, hc.GetStatus(), err))
				}
			}
			if len(problems) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("want %d/%v: %v", code, want, problems)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	expect(200, healthpb.HealthCheckResponse_SERVING, `"hsm-a":{"up":true`)
	h.HSM.Down.Store(true)
	expect(503, healthpb.HealthCheckResponse_NOT_SERVING, `"detail":"injected: token unreachable"`)
	h.HSM.Down.Store(false)
	expect(200, healthpb.HealthCheckResponse_SERVING, `"ready":true`)
}

// The public listener serves relying parties only; health, readiness and
// metrics (whose labels name keys) are on the admin listener only.
func TestPublicAndAdminListenersServeTheirOwn(t *testing.T) {
	h := newHarness(t)
	for url, want := range map[string]int{
		h.PublicURL + "/.well-known/jwks.json": 200, h.PublicURL + "/metrics": 404, h.PublicURL + "/readyz": 404, h.PublicURL + "/healthz": 404,
		h.AdminURL + "/metrics": 200, h.AdminURL + "/readyz": 200, h.AdminURL + "/.well-known/jwks.json": 404, h.AdminURL + "/audit/key": 404,
	} {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", url, resp.StatusCode, want)
		}
	}
}

// Idle keep-alive connections to the HTTP listeners are closed.
func TestIdleHTTPConnectionsAreClosed(t *testing.T) {
	server.SetHTTPIdleTimeout(t, 200*time.Millisecond)
	h := newHarness(t)
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.AdminURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: sigil\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if n, err := conn.Read(make([]byte, 1)); err == nil || n > 0 {
		t.Fatalf("read %d bytes from an idle connection, err %v", n, err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("idle connection closed only after %v (read deadline hit?)", took)
	}
}

// A disabled key refuses to sign (FailedPrecondition) but keeps its
// generations; enabled again it signs as before.
func TestDisableAndEnableAKey(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.create(t, "pausable", "ES256", "raw")
	sign := func() error {
		_, err := h.Sign.Sign(ctx, &sigilv1.SignRequest{KeyId: "pausable", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}})
		return err
	}
	resp, err := h.Keys.DisableKey(ctx, &sigilv1.DisableKeyRequest{Id: "pausable"})
	if err != nil || !resp.GetKey().GetDisabled() || len(resp.GetKey().GetGenerations()) != 1 {
		t.Fatalf("disable: %v %v", resp, err)
	}
	wantCode(t, sign(), codes.FailedPrecondition)
	if _, err := h.Keys.DisableKey(ctx, &sigilv1.DisableKeyRequest{Id: "pausable"}); err != nil {
		t.Fatalf("disabling twice: %v", err)
	}
	_, err = h.Keys.DisableKey(ctx, &sigilv1.DisableKeyRequest{Id: "missing"})
	wantCode(t, err, codes.NotFound)
	if resp, err := h.Keys.EnableKey(ctx, &sigilv1.EnableKeyRequest{Id: "pausable"}); err != nil || resp.GetKey().GetDisabled() {
		t.Fatalf("enable: %v %v", resp, err)
	}
	if err := sign(); err != nil {
		t.Fatalf("signing once enabled: %v", err)
	}
}

// A raw key rotates at once; signatures by the generation before it still
// verify (retiring, then retired) until it is revoked; public keys are
// found by generation and by kid.
func TestRawKeysRotateAndVerify(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	for _, alg := range []string{"ES256", "ES256K", "EdDSA", "PS256"} {
		t.Run(alg, func(t *testing.T) {
			id := "v-" + strings.ToLower(alg)
			h.create(t, id, alg, "raw")
			in := &sigilv1.SignRequest{KeyId: id, Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}}
			vin := &sigilv1.VerifyRequest{KeyId: id, Input: &sigilv1.VerifyRequest_Digest{Digest: make([]byte, 32)}}
			if alg == "EdDSA" {
				in.Input = &sigilv1.SignRequest_Message{Message: []byte("m")}
				vin.Input = &sigilv1.VerifyRequest_Message{Message: []byte("m")}
			}
			verify := func(sig []byte, gen int32, kid string) *sigilv1.VerifyResponse {
				t.Helper()
				req := proto.Clone(vin).(*sigilv1.VerifyRequest)
				req.Signature, req.Generation, req.Kid = sig, gen, kid
				resp, err := h.Sign.Verify(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				return resp
			}
			first, err := h.Sign.Sign(ctx, in)
			if err != nil {
				t.Fatal(err)
			}
			if r := verify(first.GetSignature(), 0, ""); !r.GetValid() || r.GetGeneration() != 1 || r.GetKid() != first.GetKid() {
				t.Fatalf("first signature: %v", r)
			}
			if _, err := h.Keys.RotateKey(ctx, &sigilv1.RotateKeyRequest{Id: id}); err != nil {
				t.Fatal(err)
			}
			second, err := h.Sign.Sign(ctx, in)
			if err != nil || second.GetGeneration() != 2 {
				t.Fatalf("after rotation: %v %v", second, err)
			}
			if r := verify(first.GetSignature(), 0, ""); !r.GetValid() || r.GetGeneration() != 1 {
				t.Fatalf("the retiring generation's signature: %v", r)
			}
			if r := verify(first.GetSignature(), 2, ""); r.GetValid() {
				t.Fatal("generation 1's signature verified with generation 2")
			}
			if r := verify(second.GetSignature(), 0, second.GetKid()); !r.GetValid() || r.GetGeneration() != 2 {
				t.Fatalf("by kid: %v", r)
			}
			pk, err := h.Keys.GetPublicKey(ctx, &sigilv1.GetPublicKeyRequest{Id: id, Generation: 1})
			if err != nil || pk.GetKid() != first.GetKid() {
				t.Fatalf("public key of generation 1: %v %v", pk, err)
			}
			if pk, err := h.Keys.GetPublicKey(ctx, &sigilv1.GetPublicKeyRequest{Id: id, Kid: second.GetKid()}); err != nil || pk.GetGeneration() != 2 {
				t.Fatalf("public key by kid: %v %v", pk, err)
			}
			if _, err := h.Keys.RevokeGeneration(ctx, &sigilv1.RevokeGenerationRequest{Id: id, Generation: 1}); err != nil {
				t.Fatal(err)
			}
			if r := verify(first.GetSignature(), 0, ""); r.GetValid() {
				t.Fatal("a revoked generation's signature still verifies")
			}
			altered := bytes.Clone(second.GetSignature())
			altered[len(altered)-1] ^= 1
			if r := verify(altered, 0, ""); r.GetValid() {
				t.Fatal("an altered signature verified")
			}
		})
	}
	_, err := h.Sign.Verify(ctx, &sigilv1.VerifyRequest{KeyId: "v-es256", Input: &sigilv1.VerifyRequest_Digest{Digest: make([]byte, 32)}, Signature: []byte{0x30, 0x01}})
	wantCode(t, err, codes.InvalidArgument)
	_, err = h.Keys.GetPublicKey(ctx, &sigilv1.GetPublicKeyRequest{Id: "v-es256", Generation: 1, Kid: "x"})
	wantCode(t, err, codes.InvalidArgument)
	_, err = h.Keys.GetPublicKey(ctx, &sigilv1.GetPublicKeyRequest{Id: "v-es256", Generation: 9})
	wantCode(t, err, codes.NotFound)
}

// ListKeys filters by purpose and generation state and pages in ID order.
func TestListKeysFiltersAndPages(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	for _, id := range []string{"a-raw", "b-raw", "c-raw"} {
		h.create(t, id, "ES256", "raw")
	}
	h.create(t, "d-jwt", "ES256", "jwt")
	if _, err := h.Keys.RotateKey(ctx, &sigilv1.RotateKeyRequest{Id: "b-raw"}); err != nil {
		t.Fatal(err)
	}
	ids := func(req *sigilv1.ListKeysRequest) ([]string, string) {
		t.Helper()
		resp, err := h.Keys.ListKeys(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, k := range resp.GetKeys() {
			out = append(out, k.GetId())
		}
		return out, resp.GetNextPageToken()
	}
	if got, _ := ids(&sigilv1.ListKeysRequest{Purpose: "jwt"}); !slices.Equal(got, []string{"d-jwt"}) {
		t.Errorf("purpose jwt: %v", got)
	}
	if got, _ := ids(&sigilv1.ListKeysRequest{State: "retiring"}); !slices.Equal(got, []string{"b-raw"}) {
		t.Errorf("state retiring: %v", got)
	}
	var all []string
	for token, pages := "", 0; ; pages++ {
		got, next := ids(&sigilv1.ListKeysRequest{Purpose: "raw", PageSize: 2, PageToken: token})
		all = append(all, got...)
		if next == "" {
			if pages != 1 {
				t.Errorf("%d pages of 2 for 3 keys", pages+1)
			}
			break
		}
		token = next
	}
	if !slices.Equal(all, []string{"a-raw", "b-raw", "c-raw"}) {
		t.Errorf("paged: %v", all)
	}
	for _, bad := range []*sigilv1.ListKeysRequest{{PageSize: -1}, {PageSize: 1001}, {PageToken: "!!"}, {State: "creating"}, {Purpose: "nope"}} {
		_, err := h.Keys.ListKeys(ctx, bad)
		wantCode(t, err, codes.InvalidArgument)
	}
}

// Deletion and inventory over gRPC: a key pending deletion refuses to
// sign (FailedPrecondition) until cancelled; labels filter listings.
func TestDeletionAndInventoryOverGRPC(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	for _, req := range []*sigilv1.CreateKeyRequest{
		{Id: "pay-1", Algorithm: "ES256", Labels: map[string]string{"team": "payments", "env": "prod"}, Owner: "payments-oncall"},
		{Id: "pay-2", Algorithm: "ES256", Labels: map[string]string{"team": "payments", "env": "dev"}},
		{Id: "id-1", Algorithm: "ES256", Labels: map[string]string{"team": "identity"}},
	} {
		if _, err := h.Keys.CreateKey(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	list := func(labels ...string) string {
		resp, err := h.Keys.ListKeys(ctx, &sigilv1.ListKeysRequest{Labels: labels})
		if err != nil {
			return status.Code(err).String()
		}
		var ids []string
		for _, k := range resp.GetKeys() {
			ids = append(ids, k.GetId())
		}
		return strings.Join(ids, ",")
	}
	for labels, want := range map[string]string{"team=payments": "pay-1,pay-2", "team=payments,env=prod": "pay-1", "env": "pay-1,pay-2", "team=nobody": "", "BAD KEY": "InvalidArgument"} {
		if got := list(strings.Split(labels, ",")...); got != want {
			t.Errorf("labels %s: %s, want %s", labels, got, want)
		}
	}
	owner := "identity-oncall"
	resp, err := h.Keys.UpdateKeyMetadata(ctx, &sigilv1.UpdateKeyMetadataRequest{Id: "id-1", SetLabels: map[string]string{"env": "prod"}, Owner: &owner})
	if err != nil || resp.GetKey().GetOwner() != owner || resp.GetKey().GetLabels()["env"] != "prod" {
		t.Fatalf("UpdateKeyMetadata: %v %v", resp, err)
	}
	if got := list("env=prod"); got != "id-1,pay-1" {
		t.Errorf("after relabelling: %s", got)
	}

	sign := func() error {
		_, err := h.Sign.Sign(ctx, &sigilv1.SignRequest{KeyId: "pay-2", Input: &sigilv1.SignRequest_Digest{Digest: make([]byte, 32)}})
		return err
	}
	_, err = h.Keys.ScheduleKeyDeletion(ctx, &sigilv1.ScheduleKeyDeletionRequest{Id: "pay-2", Window: durationpb.New(24 * time.Hour)})
	wantCode(t, err, codes.InvalidArgument)
	del, err := h.Keys.ScheduleKeyDeletion(ctx, &sigilv1.ScheduleKeyDeletionRequest{Id: "pay-2", Window: durationpb.New(7 * 24 * time.Hour)})
	if err != nil || del.GetKey().GetDeleteTime() == nil {
		t.Fatalf("ScheduleKeyDeletion: %v %v", del, err)
	}
	wantCode(t, sign(), codes.FailedPrecondition)
	_, err = h.Keys.CancelKeyDeletion(ctx, &sigilv1.CancelKeyDeletionRequest{Id: "pay-2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := sign(); err != nil {
		t.Fatalf("signing after the deletion was cancelled: %v", err)
	}
	_, err = h.Keys.CancelKeyDeletion(ctx, &sigilv1.CancelKeyDeletionRequest{Id: "pay-2"})
	wantCode(t, err, codes.FailedPrecondition)
}
