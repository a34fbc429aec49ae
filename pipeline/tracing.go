package pipeline

import (
	"context"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/tracing"
)

// requestTraceparent is the W3C trace context a request record carries,
// rewritten as version 00 (55 bytes, whatever the upstream sent), or "" when
// it carries none that parses: a BatchItem keeps only what can be linked.
func requestTraceparent(r *kgo.Record) string {
	sc := tracing.SpanContext(tracing.Traceparent(r))
	if !sc.IsValid() {
		return ""
	}
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sc.TraceFlags().String()
}

// tracerOr is t, or a tracer that records nothing when t is nil (tracing off).
func tracerOr(t trace.Tracer) trace.Tracer {
	if t == nil {
		return noop.NewTracerProvider().Tracer("payoutd")
	}
	return t
}

// continueIntentTraces puts each record about one of items' intents (keyed
// by its intent id on the intents or outcomes topic) in that intent's trace,
// so that its publish span joins it. parent is the context the record is
// produced under.
func continueIntentTraces(parent context.Context, recs []*kgo.Record, items []events.BatchItem, topics ...string) {
	byIntent := make(map[string]string, len(items))
	for _, it := range items {
		if it.Traceparent != "" {
			byIntent[it.IntentID] = it.Traceparent
		}
	}
	if len(byIntent) == 0 {
		return
	}
	for _, r := range recs {
		if r == nil || !slices.Contains(topics, r.Topic) {
			continue
		}
		if tp, ok := byIntent[string(r.Key)]; ok {
			r.Context = tracing.ContinueTrace(parent, tp)
		}
	}
}
