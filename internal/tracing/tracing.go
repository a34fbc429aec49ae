// Package tracing follows a payment across every hop with OpenTelemetry: the
// Kafka clients (franz-go's kotel plugin), the Calypso client and the webhook
// ingress (otelhttp), and the W3C traceparent an intent's request record
// carries, which payoutd keeps beside the intent so that its batch's create
// call and its settlement join the intent's trace.
//
// It is off unless configured, by the standard variables only:
// OTEL_TRACES_EXPORTER (otlp or console; unset or none: off),
// OTEL_EXPORTER_OTLP_ENDPOINT and the other OTEL_EXPORTER_OTLP_* (read by
// the exporter), OTEL_SERVICE_NAME (default payoutd), OTEL_TRACES_SAMPLER.
// Off, every method is a no-op and nothing is added to any record or request.
package tracing

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kotel"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// HeaderTraceparent is the W3C trace context header, on records as on HTTP.
const HeaderTraceparent = "traceparent"

// Tracing is payoutd's tracer provider and the instrumentation built on it.
// The zero value and a nil *Tracing are off.
type Tracing struct {
	provider   trace.TracerProvider
	propagator propagation.TextMapPropagator
	shutdown   func(context.Context) error
	on         bool
}

// FromEnv sets tracing up as the OTEL_* variables say; off when they say
// nothing. version is the service version reported on every span.
func FromEnv(ctx context.Context, version string) (*Tracing, error) {
	kind := strings.ToLower(strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")))
	var exp sdktrace.SpanExporter
	var err error
	switch kind {
	case "", "none":
		return &Tracing{}, nil
	case "otlp":
		exp, err = otlptracehttp.New(ctx)
	case "console":
		exp, err = stdouttrace.New(stdouttrace.WithWriter(os.Stderr))
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: payoutd exports traces with otlp or console (or none)", kind)
	}
	if err != nil {
		return nil, fmt.Errorf("trace exporter %s: %w", kind, err)
	}
	name := os.Getenv("OTEL_SERVICE_NAME")
	if name == "" {
		name = "payoutd"
	}
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(name), semconv.ServiceVersion(version)))
	if err != nil {
		res = resource.Default()
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return New(tp, tp.Shutdown), nil
}

// New uses provider (tests pass one with an in-memory exporter); shutdown,
// if set, flushes it when the process ends.
func New(provider trace.TracerProvider, shutdown func(context.Context) error) *Tracing {
	return &Tracing{
		provider:   provider,
		propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		shutdown:   shutdown,
		on:         true,
	}
}

// Enabled reports whether spans are recorded.
func (t *Tracing) Enabled() bool { return t != nil && t.on }

// Tracer is payoutd's own tracer, for the spans of its steps.
func (t *Tracing) Tracer() trace.Tracer {
	if !t.Enabled() {
		return noop.NewTracerProvider().Tracer("payoutd")
	}
	return t.provider.Tracer("github.com/payoutd/payoutd")
}

// KafkaHooks are the franz-go hooks that give every produced record a
// publish span (and its traceparent header) and every fetched record a
// receive span continuing the producer's trace. Nil when off.
func (t *Tracing) KafkaHooks() []kgo.Hook {
	if !t.Enabled() {
		return nil
	}
	k := kotel.NewKotel(kotel.WithTracer(kotel.NewTracer(kotel.TracerProvider(t.provider), kotel.TracerPropagator(t.propagator))))
	return k.Hooks()
}

// HTTPClient is an HTTP client whose requests are client spans carrying
// the caller's trace context; a plain client when off.
func (t *Tracing) HTTPClient() *http.Client {
	if !t.Enabled() {
		return &http.Client{}
	}
	return &http.Client{Transport: otelhttp.NewTransport(http.DefaultTransport,
		otelhttp.WithTracerProvider(t.provider), otelhttp.WithPropagators(t.propagator))}
}

// Handler wraps h so that each request is a server span continuing the
// caller's trace; h itself when off.
func (t *Tracing) Handler(h http.Handler, operation string) http.Handler {
	if !t.Enabled() {
		return h
	}
	return otelhttp.NewHandler(h, operation, otelhttp.WithTracerProvider(t.provider), otelhttp.WithPropagators(t.propagator))
}

// Shutdown flushes spans not yet exported.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if !t.Enabled() || t.shutdown == nil {
		return nil
	}
	return t.shutdown(ctx)
}

// Traceparent returns the W3C traceparent a record carries, or "".
func Traceparent(r *kgo.Record) string {
	for i := len(r.Headers) - 1; i >= 0; i-- {
		if r.Headers[i].Key == HeaderTraceparent {
			return string(r.Headers[i].Value)
		}
	}
	return ""
}

// SpanContext parses a W3C traceparent; the zero SpanContext (not valid) if
// it is empty or malformed.
func SpanContext(traceparent string) trace.SpanContext {
	if traceparent == "" {
		return trace.SpanContext{}
	}
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{HeaderTraceparent: traceparent})
	return trace.SpanContextFromContext(ctx)
}

// ContinueTrace returns ctx carrying traceparent's span as its remote
// parent, so that spans started from it join that trace; ctx unchanged when
// traceparent is empty or malformed.
func ContinueTrace(ctx context.Context, traceparent string) context.Context {
	sc := SpanContext(traceparent)
	if !sc.IsValid() {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}

// Links are span links to each valid traceparent, e.g. from a batch's
// create span to every intent's trace.
func Links(traceparents []string) []trace.Link {
	var links []trace.Link
	for _, tp := range traceparents {
		if sc := SpanContext(tp); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	return links
}
