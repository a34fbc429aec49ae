package tracing_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/payoutd/payoutd/internal/kafkatest"
	"github.com/payoutd/payoutd/internal/tracing"
)

func inMemory(t *testing.T) (*tracing.Tracing, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tracing.New(tp, tp.Shutdown), exp
}

func TestOffByDefault(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	tr, err := tracing.FromEnv(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	if tr.Enabled() || tr.KafkaHooks() != nil || tr.HTTPClient().Transport != nil {
		t.Fatal("tracing is on without OTEL_TRACES_EXPORTER")
	}
	h := http.NotFoundHandler()
	if got := tr.Handler(h, "x"); got == nil {
		t.Fatal("no handler")
	}
	t.Setenv("OTEL_TRACES_EXPORTER", "zipkin")
	if _, err := tracing.FromEnv(context.Background(), "test"); err == nil {
		t.Fatal("an exporter payoutd cannot use was accepted")
	}
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	if tr, err := tracing.FromEnv(context.Background(), "test"); err != nil || !tr.Enabled() {
		t.Fatalf("console exporter: %v", err)
	}
}

// An intent's record produced with a trace context is received, through
// Kafka, in the same trace: the consumer side continues the producer's trace.
func TestRecordsCarryTheTraceAcrossKafka(t *testing.T) {
	t.Parallel()
	tr, exp := inMemory(t)
	c := kafkatest.Start(t)
	topic := kafkatest.Name(t, "traced")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Admin(t).CreateTopic(ctx, 1, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	root, span := tr.Tracer().Start(ctx, "upstream sends an intent")
	prod := c.Client(t, kgo.WithHooks(tr.KafkaHooks()...), kgo.DefaultProduceTopic(topic))
	rec := &kgo.Record{Key: []byte("intent-1"), Value: []byte("{}"), Context: root}
	if err := prod.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	span.End()
	want := span.SpanContext().TraceID()

	cons := c.Client(t, kgo.WithHooks(tr.KafkaHooks()...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var got *kgo.Record
	for got == nil {
		f := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("no record")
		}
		f.EachRecord(func(r *kgo.Record) { got = r })
	}
	if tp := tracing.Traceparent(got); tracing.SpanContext(tp).TraceID() != want {
		t.Fatalf("record's traceparent %q is not in trace %s", tp, want)
	}
	if trace.SpanContextFromContext(got.Context).TraceID() != want {
		t.Fatal("the received record's context is not in the producer's trace")
	}
	cons.Close() // ends the receive spans
	names := map[string]bool{}
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID() == want {
			names[s.Name] = true
		}
	}
	if !names[topic+" publish"] || !names[topic+" receive"] {
		t.Fatalf("spans in the intent's trace: %v", names)
	}
}

// A batch's create call links to every intent's trace, and its HTTP request
// carries the create span's context to the server.
func TestLinksAndHTTPPropagation(t *testing.T) {
	t.Parallel()
	tr, exp := inMemory(t)
	_, a := tr.Tracer().Start(context.Background(), "intent a")
	_, b := tr.Tracer().Start(context.Background(), "intent b")
	a.End()
	b.End()
	tpOf := func(s trace.Span) string {
		sc := s.SpanContext()
		return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
	}
	var seen string
	srv := httptest.NewServer(tr.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Get(tracing.HeaderTraceparent)
	}), "calypso"))
	defer srv.Close()

	ctx, create := tr.Tracer().Start(context.Background(), "create mass payout",
		trace.WithLinks(tracing.Links([]string{tpOf(a), "garbage", tpOf(b), ""})...))
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, nil)
	resp, err := tr.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	create.End()
	if tracing.SpanContext(seen).TraceID() != create.SpanContext().TraceID() {
		t.Fatalf("the server saw traceparent %q, not the create's trace", seen)
	}
	for _, s := range exp.GetSpans() {
		if s.Name == "create mass payout" {
			if len(s.Links) != 2 || s.Links[0].SpanContext.TraceID() != a.SpanContext().TraceID() ||
				s.Links[1].SpanContext.TraceID() != b.SpanContext().TraceID() {
				t.Fatalf("create span links: %+v", s.Links)
			}
			if got := tracing.ContinueTrace(context.Background(), tpOf(a)); trace.SpanContextFromContext(got).TraceID() != a.SpanContext().TraceID() {
				t.Fatal("ContinueTrace does not continue the intent's trace")
			}
			return
		}
	}
	t.Fatal("no create span exported")
}
