package main

import (
	"context"
	"io"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel"
	"google.golang.org/grpc/grpclog"
)

// captureLibraryLogs sends what libraries log through log, so the server
// writes one JSON line per event, its own or theirs: the standard
// library's log package (slog's default), gRPC's warnings and errors,
// and OpenTelemetry's export errors.
func captureLibraryLogs(log *slog.Logger) {
	slog.SetDefault(log) // also the log package's output
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, lineWriter{log, slog.LevelWarn, "grpc"}, lineWriter{log, slog.LevelError, "grpc"}))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("opentelemetry", "source", "otel", "err", err) }))
}

// lineWriter logs each line written to it at level, naming its source.
type lineWriter struct {
	log    *slog.Logger
	level  slog.Level
	source string
}

func (w lineWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if line != "" {
			w.log.Log(context.Background(), w.level, line, "source", w.source)
		}
	}
	return len(p), nil
}
