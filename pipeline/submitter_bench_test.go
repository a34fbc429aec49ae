package pipeline_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso/sandbox"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
)

// calypsoBound is a sandbox whose every call of each of accounts is answered
// after latency, and a running submitter with the default rate limit.
func calypsoBound(b *testing.B, accounts []string, latency time.Duration) (*env, *calypsoWorld, *pipeline.Submitter) {
	b.Helper()
	e := newEnv(b, 8)
	w := newCalypso(b, accounts, []string{"USDT_TRX"}, "1000000000", func(c *sandbox.Config) {
		c.Faults.AccountLatency = map[string]time.Duration{}
		for _, a := range accounts {
			c.Faults.AccountLatency[a] = latency
		}
	})
	s, err := pipeline.NewSubmitter(pipeline.SubmitterConfig{Topics: e.topics, Group: e.topics.Batches + ".bench", Logger: testLogger(b)},
		w.accounts, e.seeds...)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	return e, w, s
}

func benchBatch(account string, i int) events.BatchPlanned {
	return plannedBatch(account, "USDT_TRX", batchItem(fmt.Sprintf("%s-%06d", account, i), fmt.Sprintf("T%s%06d", account, i), "1.5"))
}

func produceBatches(b *testing.B, e *env, bs []events.BatchPlanned) {
	b.Helper()
	var recs []*kgo.Record
	for _, bp := range bs {
		r, err := events.NewRecord(e.topics.Batches, "bench", bp)
		if err != nil {
			b.Fatal(err)
		}
		recs = append(recs, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.cluster.Client(b).ProduceSync(ctx, recs...).FirstErr(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSubmitterCalypsoBound measures creates per second with 8 accounts
// whose every Calypso call is answered after 200ms, at the default rate
// limit of 5 calls/s per account: the ceiling is 8 × 5 = 40 creates/s.
func BenchmarkSubmitterCalypsoBound(b *testing.B) {
	const perAccount = 40
	accounts := []string{"a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"}
	for b.Loop() {
		e, _, s := calypsoBound(b, accounts, 200*time.Millisecond)
		var bs []events.BatchPlanned
		for i := range perAccount {
			for _, a := range accounts {
				bs = append(bs, benchBatch(a, i))
			}
		}
		produceBatches(b, e, bs)
		// From the first wave on, so that joining the group is not counted.
		for s.Stats.Submitted.Load() < int64(len(accounts)) {
			time.Sleep(time.Millisecond)
		}
		start, from := time.Now(), s.Stats.Submitted.Load()
		for s.Stats.Submitted.Load() < int64(len(bs)) {
			time.Sleep(time.Millisecond)
		}
		rate := float64(int64(len(bs))-from) / time.Since(start).Seconds()
		b.ReportMetric(rate, "creates/s")
		b.ReportMetric(rate/40, "of-ceiling")
	}
}

// BenchmarkSubmitterIsolation measures how long the other accounts' batches
// take to be created while one account's calls hang: 7 accounts answering
// after 200ms, one never answering.
func BenchmarkSubmitterIsolation(b *testing.B) {
	accounts := []string{"hung", "a1", "a2", "a3", "a4", "a5", "a6", "a7"}
	for b.Loop() {
		e, w, s := calypsoBound(b, accounts, 200*time.Millisecond)
		// Warm up: every lane has created once.
		var warm []events.BatchPlanned
		for _, a := range accounts {
			warm = append(warm, benchBatch(a, 0))
		}
		produceBatches(b, e, warm)
		for s.Stats.Submitted.Load() < int64(len(warm)) {
			time.Sleep(time.Millisecond)
		}
		w.sb.HangAccount("hung", true)
		var bs []events.BatchPlanned
		for i := 1; i <= 3; i++ {
			bs = append(bs, benchBatch("hung", i)) // first on their partitions
		}
		for _, a := range accounts[1:] {
			bs = append(bs, benchBatch(a, 1))
		}
		start := time.Now()
		produceBatches(b, e, bs)
		want := int64(len(warm) + len(accounts) - 1)
		for s.Stats.Submitted.Load() < want {
			time.Sleep(time.Millisecond)
		}
		took := time.Since(start)
		b.ReportMetric(float64(took.Milliseconds()), "ms-others-created")
		b.ReportMetric(float64(took)/float64(400*time.Millisecond), "of-2x-latency")
		w.sb.HangAccount("hung", false)
	}
}
