package server_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigil-hsm/sigil/internal/notify"
	"github.com/sigil-hsm/sigil/internal/tracing"
	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
	"github.com/sigil-hsm/sigil/purpose/eth"
	"github.com/sigil-hsm/sigil/purpose/raw"
	"github.com/sigil-hsm/sigil/server"
)

// What a rotation operator watches is on /metrics, and the exposition
// passes promlint (the checks of `promtool check metrics`).
func TestMetricsAnOperatorWants(t *testing.T) {
	e := newMTLSEnv(t)
	ctx := context.Background()
	admin := e.Client(t, "spiffe://example.org/all/ops")
	keys := sigilv1.NewKeyServiceClient(admin)
	for _, req := range []*sigilv1.CreateKeyRequest{
		{Id: "auth-jwt", Algorithm: "ES256", Purpose: "jwt"},
		{Id: "treasury-1", Algorithm: "ES256K", Purpose: "eth", EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}, DailyLimit: "1000"}},
		{Id: "raw-old", Algorithm: "ES256"},
	} {
		if _, err := keys.CreateKey(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := keys.RotateKey(ctx, &sigilv1.RotateKeyRequest{Id: "auth-jwt"}); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.ScheduleKeyDeletion(ctx, &sigilv1.ScheduleKeyDeletionRequest{Id: "raw-old", Window: durationpb.New(7 * 24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := call(e.Client(t, "treasury.internal"), eth.OpSignTx, "treasury-1"); err != nil {
		t.Fatal(err)
	}
	if call(e.Client(t, "treasury.internal"), raw.OpSign, "treasury-1") == nil {
		t.Fatal("a treasury client signed raw")
	}
	etag := ""
	for range 2 {
		req, _ := http.NewRequest("GET", e.PublicURL+"/.well-known/jwks.json", nil)
		req.Header.Set("If-None-Match", etag)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		etag = resp.Header.Get("ETag")
		resp.Body.Close()
	}

	resp, err := http.Get(e.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	problems, err := promlint.New(strings.NewReader(string(body))).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, want := range []string{
		`sigil_key_generations{key="auth-jwt",namespace="root",purpose="jwt",state="pending"} 1`,
		`sigil_key_generations{key="auth-jwt",namespace="root",purpose="jwt",state="active"} 1`,
		`sigil_key_next_activation_timestamp_seconds{key="auth-jwt",namespace="root"}`,
		`sigil_key_deletion_timestamp_seconds{key="raw-old",namespace="root"}`,
		`sigil_jwks_requests_total{code="200",namespace="root",set="default"} 1`,
		`sigil_jwks_requests_total{code="304",namespace="root",set="default"} 1`,
		`sigil_authz_denials_total{operation="sign.raw"} 1`,
		`sigil_eth_daily_limit_wei{key="treasury-1",namespace="root"} 1000`,
		`sigil_eth_daily_spent_wei{key="treasury-1",namespace="root"} 1`,
		`sigil_audit_write_duration_seconds_count`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// The series an alert or a dashboard reads exist at zero before their
// first event; a sampled request's latency carries its trace as an
// exemplar (OpenMetrics).
func TestSeriesExistBeforeTheirFirstEvent(t *testing.T) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	tracing.Use(tp)
	t.Cleanup(func() { tracing.Use(nil); tp.Shutdown(context.Background()) })
	e := newMTLSEnv(t)
	scrape := func(accept string) string {
		req, _ := http.NewRequest("GET", e.AdminURL+"/metrics", nil)
		req.Header.Set("Accept", accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	body := scrape("text/plain")
	for _, want := range []string{
		`sigil_authz_denials_total{operation="eth.sign_tx"} 0`,
		`sigil_approval_steps_total{operation="eth.sign_tx",step="held"} 0`,
		`sigil_approval_requests{state="pending"} 0`,
		`sigil_grpc_requests_total{code="OK",method="/sigil.v1.SigningService/Sign"} 0`,
		`sigil_grpc_request_duration_seconds_count{method="/sigil.v1.JWTService/SignJWT"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics before any request lacks %s", want)
		}
	}
	keys := sigilv1.NewKeyServiceClient(e.Client(t, "spiffe://example.org/all/ops"))
	if _, err := keys.ListKeys(context.Background(), &sigilv1.ListKeysRequest{}); err != nil {
		t.Fatal(err)
	}
	if om := scrape("application/openmetrics-text; version=1.0.0"); !strings.Contains(om, `sigil_grpc_request_duration_seconds_bucket{method="/sigil.v1.KeyService/ListKeys"`) || !strings.Contains(om, `# {trace_id="`) {
		t.Errorf("no exemplar with a trace ID on the request latency:\n%.2000s", om)
	}
}

// Every metric the shipped alert rules and Grafana dashboard read is one
// /metrics serves (monitoring/; promtool checks and unit-tests the rules
// themselves, tests/monitoring).
func TestMonitoringReadsServedMetrics(t *testing.T) {
	n := notify.New(notify.Options{Hooks: []notify.Hook{{URL: "https://hooks.example.org/x", Secret: []byte("throwaway"), Events: notify.Events}}})
	e := newMTLSEnv(t, func(o *server.Options) { o.Collectors = append(o.Collectors, n) })
	keys := sigilv1.NewKeyServiceClient(e.Client(t, "spiffe://example.org/all/ops"))
	if _, err := keys.CreateKey(context.Background(), &sigilv1.CreateKeyRequest{Id: "treasury-1", Algorithm: "ES256K", Purpose: "eth",
		EthPolicy: &sigilv1.EthPolicy{ChainIds: []uint64{1}, DailyLimit: "1000"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(e.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	served := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (sigil_[a-z_]+) `).FindAllStringSubmatch(string(body), -1) {
		served[m[1]] = true
	}
	// A vector none of whose series exists yet (throttling, a store's
	// health when there is none here) is not in the exposition: its name
	// is taken from the code that registers it.
	err = filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && (d.Name() == "node_modules" || d.Name() == "testdata" || d.Name() == ".git"):
			return filepath.SkipDir
		case !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go"):
			return nil
		}
		src, _ := os.ReadFile(path)
		for _, m := range regexp.MustCompile(`Name: +"(sigil_[a-z_]+)"`).FindAllStringSubmatch(string(src), -1) {
			served[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	read := 0
	for _, f := range []string{"sigil-alerts.yaml", "sigil-dashboard.json"} {
		b, err := os.ReadFile(filepath.Join("..", "monitoring", f))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range regexp.MustCompile(`sigil_[a-z_]+`).FindAllString(string(b), -1) {
			read++
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count"), "_sum")
			if !served[name] && !served[base] {
				t.Errorf("%s reads %s, which /metrics does not serve", f, name)
			}
		}
	}
	if read < 20 {
		t.Fatalf("only %d metric names read in monitoring/", read)
	}
}
