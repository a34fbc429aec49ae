package main

import (
	"strings"
	"testing"
	"time"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/kafkatest"
	"github.com/payoutd/payoutd/internal/tracing"
)

// An exporter payoutd cannot use is a configuration error naming the
// variable, before anything starts.
func TestTracingConfigErrorExits2(t *testing.T) {
	t.Parallel()
	env := []string{"OTEL_TRACES_EXPORTER=zipkin"}
	for name, args := range map[string][]string{
		"run": {"run", "--calypso-url=https://calypso.example", "--calypso-account=id=a,key=k,secret=s", "--webhook-key=pub=sec",
			"--kafka-brokers=127.0.0.1:1"},
		"dev": {"dev", "--intents=1"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := payoutd(t, 30*time.Second, env, args...)
			if r.code != exitUsage || !strings.Contains(r.stderr, "OTEL_TRACES_EXPORTER") {
				t.Fatalf("want exit %d naming OTEL_TRACES_EXPORTER:\n%s", exitUsage, r)
			}
		})
	}
}

// `payoutd dev` on the shared broker, with tracing on (console exporter) and
// off (no OTEL_*): on, each intent's IntentSettled is in the trace of its
// request record and the create spans are exported; off, no record on any
// topic carries a traceparent.
func TestDevTracesOnlyWhenConfigured(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  []string
	}{{"on", []string{"OTEL_TRACES_EXPORTER=console", "OTEL_SERVICE_NAME=payoutd-test"}}, {"off", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := kafkatest.Start(t)
			tt := newTestTopics(t)
			tt.cleanup(t, c)
			args := append([]string{"dev", "--intents=20", "--rate=1000", "--deadline=60s", "--partitions=2",
				"--kafka=" + strings.Join(c.Seeds, ","), "--group-prefix=" + kafkatest.Name(t, "dev")}, tt.flags()...)
			r := payoutd(t, 90*time.Second, tc.env, args...)
			if r.code != 0 {
				t.Fatalf("payoutd dev:\n%s", r)
			}
			// dev sends some intents twice: an intent is in the trace of one of its records.
			requestTraces := map[string]map[string]bool{}
			for _, rec := range readAll(t, c, tt.Requests) {
				if sc := tracing.SpanContext(tracing.Traceparent(rec)); sc.IsValid() {
					if requestTraces[string(rec.Key)] == nil {
						requestTraces[string(rec.Key)] = map[string]bool{}
					}
					requestTraces[string(rec.Key)][sc.TraceID().String()] = true
				}
			}
			var settled, inTrace, headers int
			for _, topic := range []string{tt.Requests, tt.Batches, tt.Intents, tt.Outcomes, tt.WebhooksRaw, tt.DLQ, tt.BatchStates, tt.TrackerState} {
				for _, rec := range readAll(t, c, topic) {
					if rec.Attrs.IsControl() {
						continue
					}
					tp := tracing.Traceparent(rec)
					if tp != "" {
						headers++
					}
					if m, err := events.ReadMeta(rec); err == nil && m.Type == events.TypeIntentSettled {
						settled++
						if sc := tracing.SpanContext(tp); sc.IsValid() && requestTraces[string(rec.Key)][sc.TraceID().String()] {
							inTrace++
						}
					}
				}
			}
			if settled == 0 {
				t.Fatal("no IntentSettled written")
			}
			switch tc.name {
			case "on":
				if inTrace != settled {
					t.Errorf("%d of %d IntentSettled are in the trace of their request record", inTrace, settled)
				}
				if !strings.Contains(r.stderr, "calypso create mass payout") {
					t.Errorf("no create span exported to stderr:\n%s", tail(r.stderr, 2000))
				}
			case "off":
				if headers != 0 {
					t.Errorf("%d records carry a traceparent with tracing off", headers)
				}
				if strings.Contains(r.stderr, "calypso create mass payout") {
					t.Error("spans exported with tracing off")
				}
			}
		})
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
