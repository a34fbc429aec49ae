package status_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/kafkatest"
	"github.com/payoutd/payoutd/internal/status"
	"github.com/payoutd/payoutd/pipeline"
)

const (
	b1 = "11111111-1111-5111-8111-111111111111"
	b2 = "22222222-2222-5222-8222-222222222222"
	b3 = "33333333-3333-5333-8333-333333333333"
)

func amount(t *testing.T, s string) events.Amount {
	t.Helper()
	a, err := events.ParseAmount(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// history writes a small day of payoutd's life to the topics.
func history(t *testing.T) (*kafkatest.Cluster, events.Topics, time.Time) {
	t.Helper()
	c := kafkatest.Start(t)
	topics := kafkatest.Topics(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := topics.Ensure(ctx, c.Admin(t), 0, 2, 1); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	req := func(id, addr string, min int) events.PayoutRequested {
		ts := at(min)
		return events.PayoutRequested{IntentID: id, Account: "acc", Currency: "USDT_TRX", Amount: amount(t, "5"), Address: addr, RequestedAt: &ts}
	}
	item := func(id, addr string) events.BatchItem {
		return events.BatchItem{IntentID: id, Address: addr, Amount: amount(t, "5")}
	}
	outcome := func(id, batch, payout, addr string, min int) events.IntentOutcome {
		return events.IntentOutcome{IntentID: id, BatchID: batch, PayoutID: payout, Account: "acc", Currency: "USDT_TRX",
			Amount: amount(t, "5"), Address: addr, PayoutState: "PARTIAL", ResolvedAt: at(min)}
	}
	var recs []*kgo.Record
	add := func(topic string, e events.Event) {
		r, err := events.NewRecord(topic, "test", e)
		if err != nil {
			t.Fatal(err)
		}
		r.Timestamp = e.Time()
		recs = append(recs, r)
	}
	add(topics.Requests, req("i1", "TADDR1", 0))
	add(topics.Requests, req("i2", "TADDR2", 0))
	add(topics.Requests, req("i4", "TADDR4", 0))
	// i3 was refused: the DLQ keeps the original record and says why.
	bad, _ := events.NewRecord(topics.DLQ, "payoutd/produce", req("i3", "TADDR3", 1))
	bad.Timestamp = at(1)
	bad.Headers = append(bad.Headers, kgo.RecordHeader{Key: pipeline.HeaderDLQReason, Value: []byte("precision")},
		kgo.RecordHeader{Key: pipeline.HeaderDLQError, Value: []byte("amount: at most 6 decimals for USDT_TRX")})
	recs = append(recs, bad)
	add(topics.Batches, events.BatchPlanned{BatchID: b1, IdempotencyKey: b1, Account: "acc", Currency: "USDT_TRX",
		Items: []events.BatchItem{item("i1", "TADDR1"), item("i2", "TADDR2")}, Total: amount(t, "10"), PlannedAt: at(2)})
	add(topics.Batches, events.BatchPlanned{BatchID: b2, IdempotencyKey: b2, Account: "acc", Currency: "USDT_TRX",
		Items: []events.BatchItem{item("i4", "TADDR4")}, Total: amount(t, "5"), PlannedAt: at(2)})
	// The webhook is faster than the submitter's commit.
	add(topics.Outcomes, events.PayoutStatusChanged{PayoutStatus: events.PayoutStatus{PayoutID: "p1", BatchID: b1,
		State: "IN_PROGRESS", Source: events.FromWebhook, OccurredAt: at(3)}})
	add(topics.Outcomes, events.PayoutSubmitted{BatchID: b1, PayoutID: "p1", IdempotencyKey: b1, Account: "acc", Currency: "USDT_TRX",
		ItemCount: 2, Total: amount(t, "10"), State: "CREATION_IN_PROGRESS", SubmittedAt: at(4)})
	add(topics.Outcomes, events.PayoutStatusChanged{PayoutStatus: events.PayoutStatus{PayoutID: "p1", BatchID: b1,
		State: "PARTIAL", Terminal: true, Source: events.FromWebhook, OccurredAt: at(5)}})
	add(topics.Outcomes, events.IntentSettled{IntentOutcome: outcome("i1", b1, "p1", "TADDR1", 6)})
	add(topics.Outcomes, events.IntentFailed{IntentOutcome: outcome("i2", b1, "p1", "TADDR2", 6), Reason: "withdrawal failed"})
	// b2's create got no answer and the look-up could not find it yet.
	add(topics.BatchStates, events.BatchState{BatchID: b2, State: events.BatchUndecided, Reason: "create timed out", UpdatedAt: at(7)})
	add(topics.Outcomes, events.PayoutUndecided{BatchID: b2, IdempotencyKey: b2, Account: "acc", Currency: "USDT_TRX", ItemCount: 1,
		Total: amount(t, "5"), Reason: "create timed out; look-up answered 004", Attempt: 1, Since: at(7), RetryAt: at(9), UndecidedAt: at(7)})
	// b3's payout contradicts it: quarantined until a person decides.
	add(topics.BatchStates, events.BatchState{BatchID: b3, State: events.BatchQuarantined, Reason: "total differs", UpdatedAt: at(8)})
	add(topics.Outcomes, events.Alert{Kind: "BATCH_CONTRADICTED", BatchID: b3, Message: "payout total differs", RaisedAt: at(8)})
	add(topics.BatchStates, events.BatchState{BatchID: b1, State: events.BatchSubmitted, PayoutID: "p1", UpdatedAt: at(4)})
	add(topics.Outcomes, events.PayoutSubmitted{BatchID: b3, PayoutID: "p3", IdempotencyKey: b3, Account: "acc", Currency: "BTC",
		ItemCount: 1, Total: amount(t, "1"), State: "CONFIRMED", SubmittedAt: at(8)})

	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if err := c.Client(t).ProduceSync(ctx2, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return c, topics, t0
}

func TestFollowOnePayment(t *testing.T) {
	t.Parallel()
	c, topics, _ := history(t)
	cfg := status.Config{Kafka: []kgo.Opt{kgo.SeedBrokers(c.Seeds...)}, Topics: topics}
	ctx := context.Background()

	for _, tc := range []struct {
		query, kind, outcome string
		intents, payouts     []string
		wantWhat, notWhat    []string
	}{
		{query: "i1", kind: "intent", outcome: "SETTLED", intents: []string{"i1"}, payouts: []string{"p1"},
			wantWhat: []string{"payout.requested.v1", "batch.planned.v1", "payout.submitted.v1", "payout.status-changed.v1", "intent.settled.v1"},
			notWhat:  []string{"intent.failed.v1"}},
		{query: "TADDR2", kind: "address", outcome: "FAILED", intents: []string{"i2"}, payouts: []string{"p1"},
			wantWhat: []string{"payout.requested.v1", "intent.failed.v1"}, notWhat: []string{"intent.settled.v1"}},
		{query: "p1", kind: "payout", outcome: "PARTIAL", payouts: []string{"p1"},
			wantWhat: []string{"payout.submitted.v1", "payout.status-changed.v1"}},
		{query: "i3", kind: "intent", outcome: "REJECTED_REQUEST", intents: []string{"i3"}, wantWhat: []string{"dlq"}},
		{query: b2, kind: "batch", wantWhat: []string{"batch.planned.v1", "batch.state.v1", "payout.undecided.v1"}},
		{query: "nobody", kind: ""},
	} {
		t.Run(tc.query, func(t *testing.T) {
			tl, err := status.Follow(ctx, cfg, tc.query)
			if err != nil {
				t.Fatal(err)
			}
			if tl.Kind != tc.kind || tl.Outcome != tc.outcome {
				t.Fatalf("kind %q outcome %q, want %q %q; steps %+v", tl.Kind, tl.Outcome, tc.kind, tc.outcome, tl.Steps)
			}
			if tc.intents != nil && !slices.Equal(tl.Intents, tc.intents) || tc.payouts != nil && !slices.Equal(tl.Payouts, tc.payouts) {
				t.Fatalf("intents %v payouts %v, want %v %v", tl.Intents, tl.Payouts, tc.intents, tc.payouts)
			}
			var whats []string
			for i, s := range tl.Steps {
				whats = append(whats, s.What)
				if i > 0 && s.At.Before(tl.Steps[i-1].At) {
					t.Fatalf("steps out of time order: %+v", tl.Steps)
				}
			}
			for _, w := range tc.wantWhat {
				if !slices.Contains(whats, w) {
					t.Errorf("timeline of %s lacks %s: %v", tc.query, w, whats)
				}
			}
			for _, w := range tc.notWhat {
				if slices.Contains(whats, w) {
					t.Errorf("timeline of %s shows another intent's %s: %v", tc.query, w, whats)
				}
			}
		})
	}
}

func TestSummaryShowsWhatIsStuckAndWhatFailed(t *testing.T) {
	t.Parallel()
	c, topics, t0 := history(t)
	now := t0.Add(time.Hour)
	sum, err := status.Summarize(context.Background(), status.Config{Kafka: []kgo.Opt{kgo.SeedBrokers(c.Seeds...)},
		Topics: topics, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.OpenPayouts) != 1 || sum.OpenPayouts[0].PayoutID != "p3" || sum.OpenByState["CONFIRMED"] != 1 ||
		sum.OpenPayouts[0].Age != 52*time.Minute {
		t.Errorf("open payouts %+v by state %v", sum.OpenPayouts, sum.OpenByState)
	}
	if len(sum.Batches) != 2 || sum.Batches[0].BatchID != b2 || sum.Batches[0].State != "UNDECIDED" ||
		sum.Batches[0].Reason != "create timed out; look-up answered 004" || sum.Batches[0].NextTry == "" ||
		sum.Batches[1].BatchID != b3 || sum.Batches[1].State != "QUARANTINED" || sum.Batches[1].Reason != "total differs" {
		t.Errorf("waiting batches %+v", sum.Batches)
	}
	if sum.DLQ["precision"] != 1 || len(sum.Rejected) != 1 || sum.Rejected[0].IntentID != "i3" {
		t.Errorf("DLQ %v %+v", sum.DLQ, sum.Rejected)
	}
	if len(sum.Alerts) != 1 || sum.Alerts[0].BatchID != b3 {
		t.Errorf("alerts %+v", sum.Alerts)
	}
}

// BenchmarkFollowLookup measures one lookup of a payment in a history of
// `payouts` payouts (a request, a batch, a submission, a terminal status and
// a settlement each): Follow reads the topics twice, so its time grows with
// the history it is given (Config.Since bounds it).
func BenchmarkFollowLookup(b *testing.B) {
	const payouts = 20_000
	c := kafkatest.Start(b)
	topics := kafkatest.Topics(b)
	ctx := context.Background()
	if _, err := topics.Ensure(ctx, c.Admin(b), 0, 4, 1); err != nil {
		b.Fatal(err)
	}
	at := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	amt, _ := events.ParseAmount("5")
	cl := c.Client(b, kgo.ProducerLinger(5*time.Millisecond))
	var firstErr error
	produce := func(topic string, e events.Event) {
		r, err := events.NewRecord(topic, "bench", e)
		if err != nil {
			b.Fatal(err)
		}
		r.Timestamp = at
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil && firstErr == nil {
				firstErr = err
			}
		})
	}
	for i := range payouts {
		intent, batch, payout := fmt.Sprintf("i%06d", i), fmt.Sprintf("%08d-0000-5000-8000-000000000000", i), fmt.Sprintf("p%06d", i)
		addr := "T" + intent
		produce(topics.Requests, events.PayoutRequested{IntentID: intent, Account: "acc", Currency: "USDT_TRX", Amount: amt, Address: addr, RequestedAt: &at})
		item := events.BatchItem{IntentID: intent, Address: addr, Amount: amt}
		produce(topics.Batches, events.BatchPlanned{BatchID: batch, IdempotencyKey: batch, Account: "acc", Currency: "USDT_TRX",
			Items: []events.BatchItem{item}, Total: amt, PlannedAt: at})
		produce(topics.Outcomes, events.PayoutSubmitted{BatchID: batch, PayoutID: payout, IdempotencyKey: batch, Account: "acc",
			Currency: "USDT_TRX", ItemCount: 1, Items: []events.BatchItem{item}, Total: amt, State: "CONFIRMED", SubmittedAt: at})
		produce(topics.Outcomes, events.PayoutStatusChanged{PayoutStatus: events.PayoutStatus{PayoutID: payout, BatchID: batch,
			State: "COMPLETED", Terminal: true, Source: events.FromWebhook, OccurredAt: at}})
		produce(topics.Outcomes, events.IntentSettled{IntentOutcome: events.IntentOutcome{IntentID: intent, BatchID: batch, PayoutID: payout,
			Account: "acc", Currency: "USDT_TRX", Amount: amt, Address: addr, PayoutState: "COMPLETED", ResolvedAt: at}})
	}
	if err := cl.Flush(ctx); err != nil || firstErr != nil {
		b.Fatal(err, firstErr)
	}
	cfg := status.Config{Kafka: []kgo.Opt{kgo.SeedBrokers(c.Seeds...)}, Topics: topics}
	b.ResetTimer()
	for b.Loop() {
		tl, err := status.Follow(ctx, cfg, "i012345")
		if err != nil || tl.Outcome != "SETTLED" {
			b.Fatalf("%+v %v", tl, err)
		}
	}
	b.ReportMetric(float64(payouts*5), "records")
}
