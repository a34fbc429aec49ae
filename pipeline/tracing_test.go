package pipeline_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/calypso/sandbox"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/replay"
	"github.com/payoutd/payoutd/internal/tracing"
	"github.com/payoutd/payoutd/pipeline"
)

// tracedWorld is the whole pipeline (batcher, submitter on a sandbox,
// ingress taking its webhooks, tracker) with tracing as tr says (off: the
// zero Tracing), the way `payoutd run` wires it.
type tracedWorld struct {
	*env
	upstream *kgo.Client // produces requests, with tr's Kafka hooks
	batches  *reader
	outcomes *reader
	intents  *reader
	all      []*reader // every topic payoutd writes
}

func newTracedWorld(t *testing.T, tr *tracing.Tracing, calypsoMod func(*sandbox.Config)) *tracedWorld {
	t.Helper()
	e := newEnv(t, 3)
	kafka := func() []kgo.Opt {
		return append(append([]kgo.Opt{}, e.seeds...), kgo.WithHooks(tr.KafkaHooks()...))
	}
	var tracer trace.Tracer
	if tr.Enabled() {
		tracer = tr.Tracer()
	}
	w := &tracedWorld{env: e, batches: e.follow(e.topics.Batches), outcomes: e.follow(e.topics.Outcomes), intents: e.follow(e.topics.Intents)}
	w.all = []*reader{w.batches, w.outcomes, w.intents, e.follow(e.topics.BatchStates), e.follow(e.topics.TrackerState),
		e.follow(e.topics.WebhooksRaw), e.follow(e.topics.DLQ)}
	w.upstream = e.cluster.Client(t, append(kafka(), kgo.DefaultProduceTopic(e.topics.Requests), kgo.ProducerLinger(0))...)

	health := pipeline.NewHealth()
	in, err := pipeline.NewIngress(pipeline.IngressConfig{Topics: e.topics, Keys: calypso.WebhookKeys{whPubKey: whSecret},
		AckTimeout: 15 * time.Second, Logger: testLogger(t), Health: health}, kafka()...)
	if err != nil {
		t.Fatal(err)
	}
	runComponent(t, in.Run)
	waitReady(t, health, pipeline.PartIngressDedup, time.Minute)
	hooks := httptest.NewServer(tr.Handler(in, "calypso webhook"))
	t.Cleanup(hooks.Close)

	scfg := sandbox.Config{
		Accounts: map[string]sandbox.Account{whAccount: {APIKey: "api-pub", APISecret: "api-secret",
			Balances: map[string]calypso.Amount{whCurrency: calypso.MustParseAmount("100000000")}}},
		TimeScale: 0.005,
		Webhook:   sandbox.WebhookConfig{URL: hooks.URL + pipeline.WebhookPath, RequestID: "sub-1", PublicKey: whPubKey, Secret: whSecret},
		Logger:    testLogger(t),
	}
	if calypsoMod != nil {
		calypsoMod(&scfg)
	}
	sb := sandbox.New(scfg)
	api := httptest.NewServer(sb)
	t.Cleanup(func() { api.Close(); sb.Close() })
	cl, err := calypso.NewClient(calypso.Config{BaseURL: api.URL, Account: whAccount, APIKey: "api-pub", APISecret: "api-secret", RateLimit: -1},
		calypso.WithHTTPClient(tr.HTTPClient()))
	if err != nil {
		t.Fatal(err)
	}
	accounts := pipeline.Accounts{whAccount: cl}

	b, err := pipeline.NewBatcher(pipeline.BatcherConfig{Topics: e.topics, Group: e.topics.Requests + ".batcher",
		MaxWait: 200 * time.Millisecond, Logger: testLogger(t), Tracer: tracer}, kafka()...)
	if err != nil {
		t.Fatal(err)
	}
	runComponent(t, b.Run)
	s, err := pipeline.NewSubmitter(pipeline.SubmitterConfig{Topics: e.topics, Group: e.topics.Batches + ".submitter",
		RetryDelay: 100 * time.Millisecond, LookupGrace: 2 * time.Second, Logger: testLogger(t), Tracer: tracer}, accounts, kafka()...)
	if err != nil {
		t.Fatal(err)
	}
	runComponent(t, s.Run)
	tk, err := pipeline.NewTracker(pipeline.TrackerConfig{Topics: e.topics, TransactionalID: e.topics.Outcomes + ".tracker",
		PollAfter: time.Minute, Logger: testLogger(t), Tracer: tracer}, accounts, kafka()...)
	if err != nil {
		t.Fatal(err)
	}
	runComponent(t, tk.Run)
	return w
}

// send produces intents as an upstream service would, under ctx (a traced
// upstream's records carry its trace context).
func (w *tracedWorld) send(t *testing.T, ctx context.Context, ins ...events.PayoutRequested) {
	t.Helper()
	for _, in := range ins {
		v, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = w.upstream.ProduceSync(pctx, &kgo.Record{Key: []byte(in.IntentID), Value: v, Context: ctx}).FirstErr()
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// settledRecords waits until every intent has its IntentSettled and returns
// those records by intent id.
func (w *tracedWorld) settledRecords(t *testing.T, ids ...string) map[string]*kgo.Record {
	t.Helper()
	out := map[string]*kgo.Record{}
	w.outcomes.waitFor(t, 90*time.Second, "every intent settled", func(recs []*kgo.Record) bool {
		for _, r := range recs {
			if m, _, err := events.Decode(r); err == nil && m.Type == events.TypeIntentSettled {
				out[string(r.Key)] = r
			}
		}
		for _, id := range ids {
			if out[id] == nil {
				return false
			}
		}
		return true
	})
	return out
}

// An intent sent with a trace context is followed through every hop: its
// BatchItem carries the traceparent, the batch's create span links to it
// and is the parent of the Calypso HTTP call, and the intent's IntentSettled
// is published in the intent's trace. An intent without one is paid the
// same, with nothing to link.
func TestTraceFollowsAnIntentFromRequestToSettlement(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tr := tracing.New(tp, tp.Shutdown)
	w := newTracedWorld(t, tr, nil)

	traced := intent("trace-intent-1", whAccount, whCurrency, "12.5", "TTraceAddr1")
	plain := intent("trace-intent-2", whAccount, whCurrency, "0.5", "TTraceAddr2")
	ctx, upstream := tr.Tracer().Start(context.Background(), "upstream sends an intent")
	w.send(t, ctx, traced)
	upstream.End()
	w.produce(plain) // by a producer that does not trace
	intentTrace := upstream.SpanContext().TraceID()

	settled := w.settledRecords(t, traced.IntentID, plain.IntentID)

	// The BatchItem carries the request record's traceparent.
	var batch events.BatchPlanned
	var item events.BatchItem
	for _, b := range batches(t, w.batches.snapshot()) {
		for _, it := range b.Items {
			if it.IntentID == traced.IntentID {
				batch, item = b, it
			}
			if it.IntentID == plain.IntentID && it.Traceparent != "" {
				t.Errorf("intent sent without a trace context has traceparent %q in its batch", it.Traceparent)
			}
		}
	}
	itemSC := tracing.SpanContext(item.Traceparent)
	if !itemSC.IsValid() || itemSC.TraceID() != intentTrace {
		t.Fatalf("the BatchItem of %s has traceparent %q, not one in the intent's trace %s", traced.IntentID, item.Traceparent, intentTrace)
	}

	// The intent's states (BATCHED by the batcher, SETTLED and any
	// SUBMITTED by the tracker) are published in its trace.
	states := map[events.IntentStatus]bool{}
	w.intents.waitFor(t, 30*time.Second, "the intent's SETTLED state", func(recs []*kgo.Record) bool {
		clear(states)
		for _, r := range recs {
			_, ev, err := events.Decode(r)
			if is, ok := ev.(events.IntentState); err == nil && ok && is.IntentID == traced.IntentID {
				states[is.State] = tracing.SpanContext(tracing.Traceparent(r)).TraceID() == intentTrace
			}
		}
		_, settled := states[events.StatusSettled]
		return settled
	})
	for st, in := range states {
		if !in {
			t.Errorf("the intent's %s state is not published in its trace", st)
		}
	}
	if _, ok := states[events.StatusBatched]; !ok {
		t.Error("no BATCHED state of the intent")
	}

	// The create span links to the intent's span context, and the Calypso
	// call is its child.
	var create *tracetest.SpanStub
	spans := exp.GetSpans()
	for i, s := range spans {
		if s.Name == "calypso create mass payout" && attr(s, "payoutd.batch.id") == batch.BatchID {
			create = &spans[i]
		}
	}
	if create == nil {
		t.Fatalf("no create span for batch %s among %d spans", batch.BatchID, len(spans))
	}
	if attr(*create, "payoutd.account") != whAccount || attr(*create, "payoutd.currency") != whCurrency {
		t.Errorf("create span attributes: %v", create.Attributes)
	}
	linked := false
	for _, l := range create.Links {
		linked = linked || l.SpanContext.TraceID() == itemSC.TraceID() && l.SpanContext.SpanID() == itemSC.SpanID()
	}
	if !linked {
		t.Errorf("the create span's links %v do not include the intent's span context %s/%s", create.Links, itemSC.TraceID(), itemSC.SpanID())
	}
	httpChild := false
	for _, s := range spans {
		if s.SpanKind == trace.SpanKindClient && s.Parent.SpanID() == create.SpanContext.SpanID() {
			httpChild = true
		}
	}
	if !httpChild {
		t.Error("no Calypso HTTP client span is a child of the create span")
	}

	// The IntentSettled is published in the intent's trace.
	rec := settled[traced.IntentID]
	if got := tracing.SpanContext(tracing.Traceparent(rec)); got.TraceID() != intentTrace {
		t.Errorf("IntentSettled of %s carries traceparent %q, not the intent's trace %s", traced.IntentID, tracing.Traceparent(rec), intentTrace)
	}
	published := false
	for _, s := range exp.GetSpans() {
		if s.Name == w.topics.Outcomes+" publish" && s.SpanContext.TraceID() == intentTrace && attr(s, "messaging.kafka.message.key") == traced.IntentID {
			published = true
		}
	}
	if !published {
		t.Error("no publish span of the intent's IntentSettled in the intent's trace")
	}
	if got := tracing.SpanContext(tracing.Traceparent(settled[plain.IntentID])); got.TraceID() == intentTrace {
		t.Error("an intent sent without a trace context settled in another intent's trace")
	}
}

// Off by default: without tracing, payoutd adds no traceparent header to
// any record and copies none into a BatchItem, even from a request that
// carries one.
func TestNoTraceHeadersWhenTracingIsOff(t *testing.T) {
	t.Parallel()
	w := newTracedWorld(t, &tracing.Tracing{}, nil)
	in := intent("untraced-intent-1", whAccount, whCurrency, "3", "TUntracedAddr1")
	v, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	const upstreamTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	w.produceRaw(&kgo.Record{Key: []byte(in.IntentID), Value: v,
		Headers: []kgo.RecordHeader{{Key: tracing.HeaderTraceparent, Value: []byte(upstreamTP)}}})
	w.settledRecords(t, in.IntentID)
	for _, b := range batches(t, w.batches.snapshot()) {
		for _, it := range b.Items {
			if it.Traceparent != "" {
				t.Errorf("batch %s item %s carries traceparent %q with tracing off", b.BatchID, it.IntentID, it.Traceparent)
			}
		}
	}
	for _, r := range w.all {
		for _, rec := range r.snapshot() {
			if tp := tracing.Traceparent(rec); tp != "" {
				t.Errorf("%s record %q carries traceparent %q with tracing off", rec.Topic, rec.Key, tp)
			}
		}
	}
}

// An intent of a batch Calypso refuses for good gets its IntentFailed from
// the submitter, published in the intent's own trace.
func TestTraceReachesTheIntentsOfARejectedBatch(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tr := tracing.New(tp, tp.Shutdown)
	// Calypso takes one recipient per payout, payoutd plans two: 001, for good.
	w := newTracedWorld(t, tr, func(c *sandbox.Config) {
		c.Currencies = map[string]calypso.CurrencyRule{whCurrency: {Decimals: 6, MaxItems: 1}}
	})
	want := map[string]trace.TraceID{}
	var recs []*kgo.Record
	for _, in := range []events.PayoutRequested{
		intent("rejected-trace-1", whAccount, whCurrency, "1", "TRejAddr1"),
		intent("rejected-trace-2", whAccount, whCurrency, "2", "TRejAddr2"),
	} {
		ctx, span := tr.Tracer().Start(context.Background(), "upstream sends an intent")
		defer span.End()
		v, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Key: []byte(in.IntentID), Value: v, Context: ctx})
		want[in.IntentID] = span.SpanContext().TraceID()
	}
	// Together, so that one window plans them into one batch.
	pctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.upstream.ProduceSync(pctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	got := map[string]trace.TraceID{}
	w.outcomes.waitFor(t, time.Minute, "both intents failed", func(recs []*kgo.Record) bool {
		for _, r := range recs {
			if m, _, err := events.Decode(r); err == nil && m.Type == events.TypeIntentFailed {
				got[string(r.Key)] = tracing.SpanContext(tracing.Traceparent(r)).TraceID()
			}
		}
		return len(got) == len(want)
	})
	for id, tid := range want {
		if got[id] != tid {
			t.Errorf("IntentFailed of %s is in trace %s, not the intent's %s", id, got[id], tid)
		}
	}
}

func attr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}

// Replay ignores trace headers (invariant 6 compares ce_ids and bodies): the
// ingress's events, written with tracing on, carry the traceparent kotel
// adds, and replaying their webhooks reproduces them exactly all the same.
func TestReplayIgnoresTraceHeaders(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tr := tracing.New(tp, tp.Shutdown)
	w := newTracedWorld(t, tr, nil)
	ctx, span := tr.Tracer().Start(context.Background(), "upstream sends an intent")
	in := intent("replay-trace-1", whAccount, whCurrency, "7", "TReplayAddr1")
	w.send(t, ctx, in)
	span.End()
	w.settledRecords(t, in.IntentID)

	var fromIngress, traced int
	for _, r := range w.outcomes.snapshot() {
		if m, err := events.ReadMeta(r); err == nil && m.Source == pipeline.SourceIngress {
			fromIngress++
			if tracing.SpanContext(tracing.Traceparent(r)).IsValid() {
				traced++
			}
		}
	}
	if fromIngress == 0 || traced != fromIngress {
		t.Fatalf("%d of the ingress's %d events carry a traceparent; want all", traced, fromIngress)
	}
	// A webhook still on its way (archived, its event not yet written) is a
	// passing difference; one a trace header causes stays.
	var rep replay.Report
	for deadline := time.Now().Add(30 * time.Second); ; {
		rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		var err error
		rep, err = replay.Run(rctx, replay.Config{Kafka: w.seeds, Topics: w.topics})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if rep.Differences() == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if rep.Differences() != 0 || rep.Matched == 0 || rep.Compared < fromIngress {
		t.Fatalf("replay of traced events: %d differences %v %v %v, %d matched, %d compared of %d", rep.Differences(),
			rep.Missing, rep.Extra, rep.Different, rep.Matched, rep.Compared, fromIngress)
	}
}
