package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
)

// prefill writes n valid intents over 3 accounts x 4 currencies.
func prefill(b *testing.B, e *env, n int) {
	cl := e.cluster.Client(b, kgo.DefaultProduceTopic(e.topics.Requests), kgo.MaxBufferedRecords(200_000), kgo.ProducerLinger(5*time.Millisecond))
	ctx := context.Background()
	currencies := []string{"USDT_TRX", "BTC", "ETH", "USDT"}
	for i := range n {
		id := fmt.Sprintf("bench-%08d", i)
		v, _ := json.Marshal(intent(id, fmt.Sprintf("acct-%d", i%3), currencies[i%4], "1.25", fmt.Sprintf("addr-%d", i)))
		cl.Produce(ctx, &kgo.Record{Key: []byte(id), Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				b.Error(err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkBatcher measures intents per second from a pre-filled requests
// topic to committed BatchPlanned records, against its ceiling: a plain
// read_committed consumer reading the same records on the same broker.
func BenchmarkBatcher(b *testing.B) {
	const n = 100_000
	for b.Loop() {
		e := newEnv(b, 4)
		prefill(b, e, n)

		start := time.Now()
		cl := e.cluster.Client(b, kgo.ConsumeTopics(e.topics.Requests), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		for read := 0; read < n; {
			f := cl.PollFetches(context.Background())
			read += len(f.Records())
		}
		plain := float64(n) / time.Since(start).Seconds()
		cl.Close()

		bt, err := pipeline.NewBatcher(pipeline.BatcherConfig{Topics: e.topics, Group: e.topics.Requests + ".bench",
			MaxWait: 500 * time.Millisecond, Logger: testLogger(b)}, e.seeds...)
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- bt.Run(ctx) }()
		for bt.Stats.Requests.Load() < n {
			time.Sleep(5 * time.Millisecond)
		}
		batcher := float64(n) / time.Since(start).Seconds()
		cancel()
		<-done
		b.ReportMetric(batcher, "intents/s")
		b.ReportMetric(plain, "plain-records/s")
		b.ReportMetric(batcher/plain, "ratio")
		b.ReportMetric(float64(bt.Stats.Commits.Load()), "txns")
	}
}

// BenchmarkSubmitter measures batches and intents per second from planned
// batches to PayoutSubmitted, against a sandbox that answers at once.
func BenchmarkSubmitter(b *testing.B) {
	const batchCount, items = 500, 100
	for b.Loop() {
		e := newEnv(b, 4)
		w := newCalypso(b, []string{"acct"}, []string{"USDT_TRX"}, "1000000000", nil)
		cl := e.cluster.Client(b, kgo.DefaultProduceTopic(e.topics.Batches))
		ctx := context.Background()
		for i := range batchCount {
			bp := events.BatchPlanned{Account: "acct", Currency: "USDT_TRX", PlannedAt: time.Now()}
			for j := range items {
				bp.Items = append(bp.Items, events.BatchItem{IntentID: fmt.Sprintf("b%d-i%d", i, j), Address: fmt.Sprintf("T%d", j),
					Amount: events.MustAmount("1.5"), Source: events.Offset{Topic: "t", Offset: int64(j)}})
			}
			bp.Total = bp.Sum()
			bp.BatchID = fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
			bp.IdempotencyKey = bp.BatchID
			r, err := events.NewRecord(e.topics.Batches, "bench", bp)
			if err != nil {
				b.Fatal(err)
			}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				b.Fatal(err)
			}
		}
		// No rate limit: this measures the submitter, not Calypso's allowance.
		s, err := pipeline.NewSubmitter(pipeline.SubmitterConfig{Topics: e.topics, Group: e.topics.Batches + ".bench", Rate: -1, Logger: testLogger(b)}, w.accounts, e.seeds...)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- s.Run(rctx) }()
		for s.Stats.Submitted.Load() < batchCount {
			time.Sleep(5 * time.Millisecond)
		}
		secs := time.Since(start).Seconds()
		cancel()
		<-done
		b.ReportMetric(batchCount/secs, "batches/s")
		b.ReportMetric(batchCount*items/secs, "intents/s")
	}
}
