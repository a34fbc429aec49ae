package replay_test

import (
	"context"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/kafkatest"
	"github.com/payoutd/payoutd/internal/replay"
	"github.com/payoutd/payoutd/pipeline"
)

func webhook(payoutID int, state string) []byte {
	return fmt.Appendf(nil, `{"requestId":"r","id":%d,"createdDate":"2026-11-24T10:00:00.123456","level":"SUCCESS","service":"PAYOUT",`+
		`"eventType":"PAYOUT_CHANGE_STATUS","data":{"type":"PAYOUT_CHANGE_STATUS","parentExternalId":"%d","payoutStatus":%q,`+
		`"currency":"USDT_TRX","idempotencyKey":"k","createdDate":"2026-11-24T09:00:00"}}`, payoutID, payoutID, state)
}

// archive writes a webhook as the ingress would: its raw bytes at rawAt and
// its typed events at typedAt.
func archive(t testing.TB, topics events.Topics, body []byte, rawAt, typedAt time.Time) []*kgo.Record {
	t.Helper()
	evs, err := pipeline.OutcomeEvents(body)
	if err != nil || len(evs) == 0 {
		t.Fatalf("webhook maps to no event: %v", err)
	}
	recs := []*kgo.Record{{Topic: topics.WebhooksRaw, Value: body, Timestamp: rawAt}}
	for _, e := range evs {
		r, err := events.NewRecord(topics.Outcomes, pipeline.SourceIngress, e)
		if err != nil {
			t.Fatal(err)
		}
		r.Timestamp = typedAt
		recs = append(recs, r)
	}
	return recs
}

func setup(t testing.TB) (*kafkatest.Cluster, events.Topics) {
	t.Helper()
	c := kafkatest.Start(t)
	topics := kafkatest.Topics(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := topics.Ensure(ctx, c.Admin(t), 0, 2, 1); err != nil {
		t.Fatal(err)
	}
	return c, topics
}

func produce(t testing.TB, c *kafkatest.Cluster, recs []*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Client(t).ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// A webhook archived just before --to whose typed event was written just
// after it is not "missing": both sides are read a slack beyond the edges,
// and the pair is counted as matched at the edge.
func TestEventsAcrossTheWindowEdgesArePaired(t *testing.T) {
	t.Parallel()
	c, topics := setup(t)
	to := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	from := to.Add(-10 * time.Minute)
	var recs []*kgo.Record
	recs = append(recs, archive(t, topics, webhook(1, "COMPLETED"), from.Add(time.Minute), from.Add(time.Minute))...)
	recs = append(recs, archive(t, topics, webhook(2, "COMPLETED"), to.Add(-time.Millisecond), to.Add(time.Second))...)
	recs = append(recs, archive(t, topics, webhook(3, "FAILED"), from.Add(-time.Second), from.Add(time.Millisecond))...)
	// Well outside the window and its slack: neither read nor judged.
	recs = append(recs, archive(t, topics, webhook(4, "COMPLETED"), to.Add(time.Hour/2), to.Add(time.Hour/2))...)
	produce(t, c, recs)

	var emitted int
	rep, err := replay.Run(context.Background(), replay.Config{Kafka: []kgo.Opt{kgo.SeedBrokers(c.Seeds...)}, Topics: topics,
		From: from, To: to, Emit: func(*kgo.Record) error { emitted++; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Differences() != 0 {
		t.Fatalf("differences at the edges: %+v", rep)
	}
	if rep.Webhooks != 2 || rep.Matched != 3 || rep.EdgeUnpaired != 2 || emitted != 2 {
		t.Fatalf("want 2 webhooks in the window, 3 matched of which 2 across an edge, 2 emitted; got %+v, emitted %d", rep, emitted)
	}
}

func TestMissingExtraAndDifferentAreNamed(t *testing.T) {
	t.Parallel()
	c, topics := setup(t)
	at := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	missing := archive(t, topics, webhook(10, "COMPLETED"), at, at)[:1] // typed event never written
	extra := archive(t, topics, webhook(11, "COMPLETED"), at, at)[1:]   // raw never archived
	different := archive(t, topics, webhook(12, "COMPLETED"), at, at)
	different[1].Value = []byte(string(different[1].Value) + " ")
	produce(t, c, append(append(missing, extra...), different...))

	rep, err := replay.Run(context.Background(), replay.Config{Kafka: []kgo.Opt{kgo.SeedBrokers(c.Seeds...)}, Topics: topics})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Missing) != 1 || rep.Missing[0].Key != "10" || len(rep.Extra) != 1 || rep.Extra[0].Key != "11" ||
		len(rep.Different) != 1 || rep.Different[0].Key != "12" {
		t.Fatalf("report: %+v", rep)
	}
}

// BenchmarkReplayPeakHeap reports the audit's peak live heap per webhook
// while it reads both topics: it streams, keeping a digest per event, so
// this stays flat as records grow.
func BenchmarkReplayPeakHeap(b *testing.B) {
	c, topics := setup(b)
	const n = 5000
	at := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, archive(b, topics, webhook(i+1, "COMPLETED"), at, at)...)
	}
	produce(b, c, recs)
	recs = nil
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	live := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	for b.Loop() {
		runtime.GC()
		base := live()
		var peak atomic.Uint64
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				if v := live(); v > peak.Load() {
					peak.Store(v)
				}
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
			}
		}()
		rep, err := replay.Run(context.Background(), replay.Config{Kafka: []kgo.Opt{kgo.SeedBrokers(c.Seeds...)}, Topics: topics})
		close(stop)
		<-done
		if err != nil || rep.Matched != n {
			b.Fatalf("%+v %v", rep, err)
		}
		b.ReportMetric(float64(peak.Load()-min(base, peak.Load()))/n, "peak-heap-B/webhook")
	}
}
