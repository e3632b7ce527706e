// Package jaegertest runs a real trace collector for tests: Jaeger
// (bin/jaeger, built from its Go module by make trace-deps) with an OTLP
// gRPC receiver, in-memory storage and its query API, on free loopback
// ports.
package jaegertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// Jaeger is a running collector.
type Jaeger struct {
	OTLP  string // host:port of the OTLP gRPC receiver
	Query string // http://host:port of the query API
}

func binary() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "bin", "jaeger")
}

// Start runs Jaeger for a test, killed when it ends; without bin/jaeger
// the test is skipped, or fails under CI=true.
func Start(tb testing.TB) *Jaeger {
	tb.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("jaeger is required under CI=true (make trace-deps): %v", err)
		}
		tb.Skipf("jaeger missing (make trace-deps): %v", err)
	}
	j, stop, err := Run(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(stop)
	return j
}

// Available reports why Jaeger cannot run, or nil.
func Available() error {
	_, err := os.Stat(binary())
	return err
}

// Run runs Jaeger with its files in dir, for the benchmark driver too;
// stop kills it.
func Run(dir string) (*Jaeger, func(), error) {
	otlp, err := freeAddr()
	var queryAddr, queryGRPC string
	if err == nil {
		queryAddr, err = freeAddr()
	}
	if err == nil {
		queryGRPC, err = freeAddr()
	}
	if err != nil {
		return nil, nil, err
	}
	j := &Jaeger{OTLP: otlp, Query: "http://" + queryAddr}
	cfg := filepath.Join(dir, "jaeger.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [jaeger_storage_exporter]}
  telemetry:
    metrics: {level: none}
    logs: {level: warn}
extensions:
  jaeger_storage:
    backends:
      mem: {memory: {max_traces: 10000}}
  jaeger_query:
    storage: {traces: mem}
    http: {endpoint: %q}
    grpc: {endpoint: %q}
receivers:
  otlp:
    protocols:
      grpc: {endpoint: %q}
processors:
  batch: {timeout: 100ms}
exporters:
  jaeger_storage_exporter: {trace_storage: mem}
`, queryAddr, queryGRPC, j.OTLP)), 0o600)
	cmd := exec.Command(binary(), "--config", cfg)
	out, err := os.Create(filepath.Join(dir, "jaeger.log"))
	if err != nil {
		return nil, nil, err
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait(); out.Close() }
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get(j.Query + "/api/services"); err == nil {
			resp.Body.Close()
			if c, err := net.Dial("tcp", j.OTLP); err == nil {
				c.Close()
				return j, stop, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			log, _ := os.ReadFile(out.Name())
			return nil, nil, fmt.Errorf("jaeger did not start:\n%s", log)
		}
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Span is a span as Jaeger's query API returns it.
type Span struct {
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
	Logs []struct {
		Fields []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"fields"`
	} `json:"logs"`
}

// Parent is the span s is a child of, "" for a root.
func (s Span) Parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// Trace waits until Jaeger holds trace id with at least min spans and
// returns them.
func (j *Jaeger) Trace(tb testing.TB, id string, min int) []Span {
	tb.Helper()
	var got []Span
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, j.Query+"/api/traces/"+id, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		var body struct {
			Data []struct {
				Spans []Span `json:"spans"`
			} `json:"data"`
		}
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		got = nil
		for _, d := range body.Data {
			got = append(got, d.Spans...)
		}
		if len(got) >= min {
			return got
		}
	}
	tb.Fatalf("trace %s: %d spans in Jaeger, want at least %d", id, len(got), min)
	return nil
}
