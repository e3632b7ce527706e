package awskms_test

import (
	"context"
	"crypto"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/sigil-hsm/sigil/internal/errs"
	"github.com/sigil-hsm/sigil/internal/testutil/backendtest"
	"github.com/sigil-hsm/sigil/internal/testutil/keyringtest"
	"github.com/sigil-hsm/sigil/internal/testutil/kmstest"
	"github.com/sigil-hsm/sigil/keyring"
	"github.com/sigil-hsm/sigil/purpose/jwt"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/signer"
	"github.com/sigil-hsm/sigil/signer/awskms"
)

func open(t *testing.T, e *kmstest.Emulator, mod func(*awskms.Config)) *awskms.Backend {
	t.Helper()
	cfg := awskms.Config{Region: kmstest.Region, Endpoint: e.Endpoint}
	if mod != nil {
		mod(&cfg)
	}
	b, err := awskms.Open(context.Background(), "aws-test", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantKind(t *testing.T, err error, k errs.Kind) {
	t.Helper()
	if !errs.Is(err, k) {
		t.Fatalf("got %v (kind %v), want kind %v", err, errs.KindOf(err), k)
	}
}

// The backend conformance suite on the emulator: every algorithm it
// offers, the JWT path and the Ethereum path, as the PKCS#11 backend runs
// them too.
func TestConformance(t *testing.T) {
	b := open(t, kmstest.Start(t), nil)
	backendtest.Run(t, backendtest.Suite{Backend: b, Verify: verify, Keys: []backendtest.Key{ // all but EdDSA, which local-kms lacks
		{Alg: signer.ES256}, {Alg: signer.ES384}, {Alg: signer.ES256K}, {Alg: signer.RS256, Bits: 2048}, {Alg: signer.PS256, Bits: 3072},
	}})
}

// KMS offers Ed25519 since 2025; the emulator does not. Where it is
// offered it signs; where not, Sigil says so.
func TestEdDSASignsOrIsRefusedClearly(t *testing.T) {
	s := backendtest.Suite{Backend: open(t, kmstest.Start(t), nil), Keys: []backendtest.Key{{Alg: signer.EdDSA}}}
	_, err := s.Backend.CreateKey(context.Background(), signer.CreateKeyRequest{Name: "k.eddsa-probe", Algorithm: signer.EdDSA})
	switch {
	case err == nil:
		backendtest.SignAndVerify(t, s)
	case !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), "does not offer EdDSA"):
		t.Fatalf("EdDSA refusal is not clear: %v", err)
	}
}

// verify is signer.Verify, except that PS256 accepts any salt length:
// local-kms signs PSS with the maximum salt (222 bytes for RSA-2048,
// measured), where RFC 7518 and AWS KMS use the hash length.
func verify(pub any, alg signer.Algorithm, in, sig []byte) error {
	if alg == signer.PS256 {
		return rsa.VerifyPSS(pub.(*rsa.PublicKey), crypto.SHA256, in, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
	}
	return signer.Verify(pub, alg, in, sig)
}

// kmsKeyring is a keyring whose one backend is the emulator.
func kmsKeyring(t *testing.T, b *awskms.Backend) *keyring.Keyring {
	t.Helper()
	return keyringtest.With(t, "aws-eu", b, keyringtest.Options{}).Keyring
}

func TestKeysDisabledOrDeletedBehindSigilsBack(t *testing.T) {
	b := open(t, kmstest.Start(t), nil)
	kr := kmsKeyring(t, b)
	ctx := context.Background()
	for _, id := range []string{"gone", "off"} {
		if _, err := kr.Create(ctx, keyring.CreateSpec{ID: id, Purpose: raw.Name, Algorithm: signer.ES256}); err != nil {
			t.Fatal(err)
		}
	}
	gone, _ := kr.ForSigning(ctx, "gone", raw.Name)
	off, _ := kr.ForSigning(ctx, "off", raw.Name)
	if err := b.DestroyKey(ctx, gone.Generation.Ref); err != nil {
		t.Fatal(err)
	}
	if err := b.DestroyKey(ctx, gone.Generation.Ref); err != nil {
		t.Fatalf("destroying twice: %v", err)
	}
	if err := b.DisableKey(ctx, off.Generation.Ref); err != nil {
		t.Fatal(err)
	}
	d := make([]byte, 32)
	for _, sg := range []keyring.Signing{gone, off} {
		_, err := sg.Sign(ctx, d)
		wantKind(t, err, errs.FailedPrecondition)
		if !strings.Contains(err.Error(), fmt.Sprintf("key %q generation 1", sg.Key.ID)) {
			t.Errorf("error does not name the key and generation: %v", err)
		}
	}
	// Revoking through the keyring disables the KMS key too.
	if _, err := kr.Create(ctx, keyring.CreateSpec{ID: "rev", Purpose: jwt.Name, Algorithm: signer.ES256}); err != nil {
		t.Fatal(err)
	}
	before, _ := kr.ForSigning(ctx, "rev", jwt.Name)
	if _, err := kr.Revoke(ctx, "rev", 1); err != nil {
		t.Fatal(err)
	}
	_, err := b.Sign(ctx, before.Generation.Ref, signer.ES256, d)
	wantKind(t, err, errs.FailedPrecondition)
}

func TestEmulatorDownAndBack(t *testing.T) {
	e := kmstest.Start(t)
	b := open(t, e, func(c *awskms.Config) { c.HealthInterval = 200 * time.Millisecond })
	ctx := context.Background()
	info, err := b.CreateKey(ctx, signer.CreateKeyRequest{Name: "resilient", Algorithm: signer.ES256K})
	if err != nil {
		t.Fatal(err)
	}
	d := make([]byte, 32)
	var failed, ok atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 { // a load running while the emulator goes away
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := b.Sign(cctx, info.Ref, signer.ES256K, d)
				cancel()
				switch {
				case err == nil:
					ok.Add(1)
				case errs.Is(err, errs.Unavailable):
					failed.Add(1)
					time.Sleep(time.Millisecond) // failing fast; no need to spin
				default:
					t.Errorf("while down: %v (kind %v), want Unavailable", err, errs.KindOf(err))
					return
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	e.Stop()
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = b.Sign(cctx, info.Ref, signer.ES256K, d)
	cancel()
	wantKind(t, err, errs.Unavailable) // and not DeadlineExceeded: it failed fast
	t.Logf("Unavailable after %v with the emulator down", time.Since(start))
	time.Sleep(200 * time.Millisecond)
	if err := e.Restart(); err != nil {
		t.Fatal(err)
	}
	before := ok.Load()
	for deadline := time.Now().Add(5 * time.Second); ok.Load() == before && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if ok.Load() == before || failed.Load() == 0 {
		t.Fatalf("signing did not resume, or never failed: %d ok before, %d after, %d Unavailable", before, ok.Load(), failed.Load())
	}
}

func TestAdmissionControlShedsLoad(t *testing.T) {
	b := open(t, kmstest.Start(t), func(c *awskms.Config) { c.MaxRPS, c.MaxConcurrency = 20, 4 })
	ctx := context.Background()
	info, err := b.CreateKey(ctx, signer.CreateKeyRequest{Name: "limited", Algorithm: signer.ES256})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // let the rate limiter's bucket refill
	var ok, shed atomic.Int32
	var wg sync.WaitGroup
	start := time.Now()
	for range 100 {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			_, err := b.Sign(cctx, info.Ref, signer.ES256, make([]byte, 32))
			switch {
			case err == nil:
				ok.Add(1)
			case errs.Is(err, errs.ResourceExhausted):
				shed.Add(1)
			case errs.Is(err, errs.DeadlineExceeded): // admitted at the last moment, then out of time in KMS
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// At 20/s with a burst of 20, about 20 + 20 × 0.5 fit in the deadline.
	limit := int32(20 + 20*time.Since(start).Seconds() + 2)
	t.Logf("%d signed, %d shed in %v", ok.Load(), shed.Load(), time.Since(start))
	if ok.Load() > limit || shed.Load() == 0 || ok.Load() == 0 {
		t.Fatalf("%d signed (at most %d allowed), %d shed", ok.Load(), limit, shed.Load())
	}
}

func TestStartupErrorsNameTheBackendNotTheSecret(t *testing.T) {
	e := kmstest.Start(t)
	creds, _ := kmstest.FakeCredentials()
	secret := creds["AWS_SECRET_ACCESS_KEY"]
	_, err := signer.Open(context.Background(), awskms.Type, "aws-eu", func(v any) error {
		*(v.(*awskms.Config)) = awskms.Config{Region: kmstest.Region, Endpoint: "http://127.0.0.1:1"}
		return nil
	})
	if !errs.Is(err, errs.Unavailable) || !strings.Contains(err.Error(), `backend "aws-eu"`) || !strings.Contains(err.Error(), "127.0.0.1:1") || strings.Contains(err.Error(), secret) {
		t.Fatalf("unreachable endpoint: %v", err)
	}
	_, err = awskms.Open(context.Background(), "aws-eu", awskms.Config{Endpoint: e.Endpoint})
	if !errs.Is(err, errs.InvalidArgument) || !strings.Contains(err.Error(), "region") {
		t.Fatalf("no region: %v", err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	_, err = awskms.Open(context.Background(), "aws-eu", awskms.Config{Region: kmstest.Region, Endpoint: e.Endpoint})
	if !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), "credentials") {
		t.Fatalf("no credentials: %v", err)
	}
}

// faultProxy is a reverse proxy in front of the emulator; fault may
// answer a request itself (returning true) by its KMS operation name.
func faultProxy(t *testing.T, e *kmstest.Emulator, fault func(op string, w http.ResponseWriter, r *http.Request) bool) string {
	target, _ := url.Parse(e.Endpoint)
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !fault(strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "TrentService."), w, r) {
			proxy.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// throttler answers the next n Sign requests with KMS's
// ThrottlingException, as KMS does when an account's shared request quota
// is spent (local-kms never throttles).
type throttler struct {
	next  atomic.Int32 // Sign requests still to throttle; -1: all of them
	signs atomic.Int32 // Sign requests seen
}

func (th *throttler) start(t *testing.T, e *kmstest.Emulator) string {
	return faultProxy(t, e, func(op string, w http.ResponseWriter, _ *http.Request) bool {
		if op != "Sign" {
			return false
		}
		th.signs.Add(1)
		if n := th.next.Load(); n < 0 || n > 0 && th.next.CompareAndSwap(n, n-1) {
			w.Header().Set("Content-Type", "application/x-amz-json-1.1")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"__type":"ThrottlingException","message":"Rate exceeded"}`)
			return true
		}
		return false
	})
}

// A creation whose alias never comes (here: KMS stalls until the caller's
// deadline passes) leaves no live key behind: the key made a moment
// before is scheduled for deletion although the caller's context is over.
func TestCreationCutShortLeavesNoLiveKey(t *testing.T) {
	e := kmstest.Start(t)
	endpoint := faultProxy(t, e, func(op string, w http.ResponseWriter, r *http.Request) bool {
		if op != "CreateAlias" {
			return false
		}
		time.Sleep(2 * time.Second) // past the caller's deadline
		w.WriteHeader(http.StatusInternalServerError)
		return true
	})
	b := open(t, e, func(c *awskms.Config) { c.Endpoint = endpoint })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, createErr := b.CreateKey(ctx, signer.CreateKeyRequest{Name: "cut.short", Algorithm: signer.ES256})
	if createErr == nil {
		t.Fatal("CreateKey succeeded without its alias")
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithRegion(kmstest.Region))
	if err != nil {
		t.Fatal(err)
	}
	keys := kms.NewFromConfig(awsCfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(e.Endpoint) })
	list, lerr := keys.ListKeys(context.Background(), &kms.ListKeysInput{})
	if lerr != nil {
		t.Fatal(lerr)
	}
	found := 0
	for _, k := range list.Keys {
		d, err := keys.DescribeKey(context.Background(), &kms.DescribeKeyInput{KeyId: k.KeyId})
		if err != nil || aws.ToString(d.KeyMetadata.Description) != "Sigil cut.short" {
			continue
		}
		found++
		if d.KeyMetadata.KeyState != kmstypes.KeyStatePendingDeletion {
			t.Errorf("key %s is %s after a failed creation, want PendingDeletion", aws.ToString(k.KeyId), d.KeyMetadata.KeyState)
		}
	}
	if found != 1 {
		t.Fatalf("%d keys made by the failed creation, want 1 (%v)", found, createErr)
	}
}

func TestThrottlingIsRetriedThenReportedAsResourceExhausted(t *testing.T) {
	e := kmstest.Start(t)
	var th throttler
	endpoint := th.start(t, e)
	b := open(t, e, func(c *awskms.Config) { c.Endpoint = endpoint })
	ctx := context.Background()
	info, err := b.CreateKey(ctx, signer.CreateKeyRequest{Name: "throttled", Algorithm: signer.ES256})
	if err != nil {
		t.Fatal(err)
	}
	d := make([]byte, 32)

	// Two throttled answers: the SDK backs off and retries, and the
	// caller sees a signature.
	th.next.Store(2)
	sig, err := b.Sign(ctx, info.Ref, signer.ES256, d)
	if err != nil {
		t.Fatalf("after two throttled answers: %v", err)
	}
	if err := signer.Verify(info.Public, signer.ES256, d, sig); err != nil {
		t.Fatal(err)
	}
	if n := th.signs.Load(); n != 3 {
		t.Fatalf("KMS saw %d Sign requests, want 3 (two throttled, one retry signed)", n)
	}

	// Throttled throughout: a bounded number of attempts, then
	// ResourceExhausted (the gRPC code that tells a client to back off).
	th.next.Store(-1)
	th.signs.Store(0)
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err = b.Sign(cctx, info.Ref, signer.ES256, d)
	wantKind(t, err, errs.ResourceExhausted)
	if n := th.signs.Load(); n < 2 || n > 5 {
		t.Fatalf("%d attempts under constant throttling, want a few retries and no more", n)
	}
	t.Logf("%d attempts in %v, then: %v", th.signs.Load(), time.Since(start), err)

	// A deadline shorter than the backoff: the caller's deadline wins.
	cctx, cancel = context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	_, err = b.Sign(cctx, info.Ref, signer.ES256, d)
	if !errs.Is(err, errs.DeadlineExceeded) && !errs.Is(err, errs.ResourceExhausted) {
		t.Fatalf("throttled past a short deadline: %v (kind %v)", err, errs.KindOf(err))
	}
}

// Every error code KMS documents for the calls Sigil makes, answered by
// the fault proxy in front of the emulator, gets its kind and its cause;
// callers decide by cause (errors.Is), never by message text.
func TestEveryKMSErrorCodeIsKeptApart(t *testing.T) {
	e := kmstest.Start(t)
	var failOp, failCode atomic.Value
	failOp.Store("")
	endpoint := faultProxy(t, e, func(op string, w http.ResponseWriter, _ *http.Request) bool {
		if op != failOp.Load().(string) {
			return false
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"__type":%q,"message":"injected"}`, failCode.Load().(string))
		return true
	})
	b := open(t, e, func(c *awskms.Config) { c.Endpoint = endpoint })
	ctx := context.Background()
	info, err := b.CreateKey(ctx, signer.CreateKeyRequest{Name: "codes", Algorithm: signer.ES256})
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		kind  errs.Kind
		cause error
	}
	common := map[string]want{
		"AccessDeniedException":       {errs.PermissionDenied, awskms.ErrAccessDenied},
		"UnrecognizedClientException": {errs.PermissionDenied, awskms.ErrAccessDenied},
		"ThrottlingException":         {errs.ResourceExhausted, awskms.ErrThrottled},
		"ValidationException":         {errs.FailedPrecondition, awskms.ErrRefused},
		"KMSInternalException":        {errs.Unavailable, awskms.ErrUnavailable},
		"DependencyTimeoutException":  {errs.Unavailable, awskms.ErrUnavailable},
		"SomethingNewException":       {errs.Internal, nil},
	}
	keyCodes := map[string]want{ // the calls on an existing key
		"NotFoundException":        {errs.Unavailable, signer.ErrKeyMissing},
		"InvalidArnException":      {errs.FailedPrecondition, awskms.ErrRefused},
		"KMSInvalidStateException": {errs.FailedPrecondition, awskms.ErrInvalidState},
	}
	calls := map[string]struct {
		run   func(context.Context) error
		codes map[string]want
	}{
		"CreateKey": {func(ctx context.Context) error {
			_, err := b.CreateKey(ctx, signer.CreateKeyRequest{Name: "never", Algorithm: signer.ES256})
			return err
		}, map[string]want{
			"LimitExceededException":                       {errs.ResourceExhausted, awskms.ErrThrottled},
			"MalformedPolicyDocumentException":             {errs.FailedPrecondition, awskms.ErrRefused},
			"TagException":                                 {errs.FailedPrecondition, awskms.ErrRefused},
			"UnsupportedOperationException":                {errs.FailedPrecondition, awskms.ErrRefused},
			"InvalidArnException":                          {errs.FailedPrecondition, awskms.ErrRefused},
			"CloudHsmClusterInvalidConfigurationException": {errs.FailedPrecondition, awskms.ErrRefused},
			"CustomKeyStoreNotFoundException":              {errs.FailedPrecondition, awskms.ErrRefused},
			"CustomKeyStoreInvalidStateException":          {errs.Unavailable, awskms.ErrUnavailable},
		}},
		"Sign": {func(ctx context.Context) error {
			_, err := b.Sign(ctx, info.Ref, signer.ES256, make([]byte, 32))
			return err
		}, mergeWants(keyCodes, map[string]want{
			"DisabledException":          {errs.FailedPrecondition, awskms.ErrDisabled},
			"KeyUnavailableException":    {errs.Unavailable, awskms.ErrUnavailable},
			"InvalidKeyUsageException":   {errs.FailedPrecondition, awskms.ErrRefused},
			"InvalidGrantTokenException": {errs.PermissionDenied, awskms.ErrAccessDenied},
			"DryRunOperationException":   {errs.FailedPrecondition, awskms.ErrRefused},
		})},
		"ScheduleKeyDeletion": {func(ctx context.Context) error { return b.DestroyKey(ctx, info.Ref) }, keyCodes},
		"DisableKey":          {func(ctx context.Context) error { return b.DisableKey(ctx, info.Ref) }, keyCodes},
	}
	for op, c := range calls {
		for code, w := range mergeWants(common, c.codes) {
			t.Run(op+"/"+code, func(t *testing.T) {
				failOp.Store(op)
				failCode.Store(code)
				defer failOp.Store("")
				cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				err := c.run(cctx)
				wantKind(t, err, w.kind)
				if w.cause != nil && !errors.Is(err, w.cause) {
					t.Fatalf("%v: cause is not %v", err, w.cause)
				}
			})
		}
	}
	// None of that destroyed or disabled the key.
	if _, err := b.Sign(ctx, info.Ref, signer.ES256, make([]byte, 32)); err != nil {
		t.Fatalf("after the injected errors: %v", err)
	}
}

func mergeWants[M ~map[string]V, V any](a, b M) M {
	out := M{}
	maps.Copy(out, a)
	maps.Copy(out, b)
	return out
}

// ListKeys finds the keys one keyring made, by their tags, aliased or
// not (a creation cut short between the key and its alias); never a key
// of another application, nor another keyring's, nor one pending
// deletion.
func TestListKeysFindsOneKeyringsKeysOnly(t *testing.T) {
	e := kmstest.Start(t)
	b := open(t, e, nil)
	ctx := context.Background()
	mine := []byte("mine")
	kept, err := b.CreateKey(ctx, signer.CreateKeyRequest{Name: "kept.g1", Algorithm: signer.ES256, Owner: mine})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := b.CreateKey(ctx, signer.CreateKeyRequest{Name: "gone.g1", Algorithm: signer.ES256, Owner: mine})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.DestroyKey(ctx, gone.Ref); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateKey(ctx, signer.CreateKeyRequest{Name: "theirs.g1", Algorithm: signer.ES256, Owner: []byte("othr")}); err != nil {
		t.Fatal(err)
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(kmstest.Region))
	if err != nil {
		t.Fatal(err)
	}
	raw := kms.NewFromConfig(awsCfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(e.Endpoint) })
	mk := func(tags ...kmstypes.Tag) string {
		out, err := raw.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: kmstypes.KeySpecEccNistP256, KeyUsage: kmstypes.KeyUsageTypeSignVerify, Tags: tags})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.KeyMetadata.KeyId)
	}
	unaliased := mk(kmstypes.Tag{TagKey: aws.String("sigil:key"), TagValue: aws.String("cut.g1")}, kmstypes.Tag{TagKey: aws.String("sigil:owner"), TagValue: aws.String(hex.EncodeToString(mine))})
	mk(kmstypes.Tag{TagKey: aws.String("team"), TagValue: aws.String("other")})
	listed, err := b.ListKeys(ctx, mine)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, k := range listed {
		got[k.Name] = k.Ref
	}
	if len(got) != 2 || got["cut.g1"] != unaliased || got["kept.g1"] == "" {
		t.Fatalf("listed %v; want kept.g1 and cut.g1 (%s) only", got, unaliased)
	}
	if _, err := b.Sign(ctx, kept.Ref, signer.ES256, make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
}
