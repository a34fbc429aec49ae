package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/payoutd/payoutd/internal/tracing"
)

// startTracing sets tracing up from the standard OTEL_* variables (off when
// they say nothing). A value payoutd cannot use is a configuration error,
// exit 2, naming the variable. The returned stop flushes what is left.
func startTracing(ctx context.Context, log *slog.Logger) (*tracing.Tracing, func(), error) {
	v, _, _ := buildVersion()
	tr, err := tracing.FromEnv(ctx, v)
	if err != nil {
		return nil, nil, &failure{code: exitUsage, msg: "invalid configuration: " + err.Error()}
	}
	if tr.Enabled() {
		log.Info("tracing on", "exporter", os.Getenv("OTEL_TRACES_EXPORTER"))
	}
	return tr, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tr.Shutdown(ctx); err != nil {
			log.Warn("flushing traces failed", "error", err)
		}
	}, nil
}

// tracerOf is the tracer the pipeline's components take: nil when off, so
// that they add nothing.
func tracerOf(tr *tracing.Tracing) trace.Tracer {
	if !tr.Enabled() {
		return nil
	}
	return tr.Tracer()
}
