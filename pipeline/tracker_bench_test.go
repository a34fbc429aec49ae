package pipeline_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/pipeline"
)

// BenchmarkTrackerStartup measures how long a tracker takes from its start
// until its stores are restored and it tracks again, and the heap its state
// takes, when the outcomes topic holds the history of many resolved payouts
// (the group's offsets at its end, as after running for years) and the
// changelog holds 1,000 open payouts of 10 intents each.
//
//   - compacted: the changelog holds only the open payouts, as after
//     compaction; the outcomes history is 1M records (PAYOUTD_BENCH_TRACKER_HISTORY).
//   - uncompacted-N: before compaction, the changelog also holds each of N
//     resolved payouts' entry and tombstone: the worst case a restore reads.
func BenchmarkTrackerStartup(b *testing.B) {
	history := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("PAYOUTD_BENCH_TRACKER_HISTORY")); err == nil {
		history = v
	}
	const open = 1000
	for _, resolved := range []int{0, 100_000} {
		name := "compacted"
		if resolved > 0 {
			name = fmt.Sprintf("uncompacted-%d", resolved)
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				benchTrackerStartup(b, history, open, resolved)
			}
		})
	}
}

func benchTrackerStartup(b *testing.B, history, open, resolved int) {
	e := newEnv(b, 4)
	ctx := context.Background()
	cl := e.cluster.Client(b, kgo.MaxBufferedRecords(500_000), kgo.ProducerLinger(10*time.Millisecond))
	produce := func(r *kgo.Record) {
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				b.Error(err)
			}
		})
	}
	// The history: records the tracker processed long ago. Their content
	// does not matter, since a start must not read them.
	for i := range history {
		produce(&kgo.Record{Topic: e.topics.Outcomes, Key: fmt.Appendf(nil, "old-%d", i), Value: []byte(`{}`)})
	}
	heard := time.Now().UTC()
	for i := range resolved {
		id := fmt.Sprintf("done-%d", i)
		produce(&kgo.Record{Topic: e.topics.TrackerState, Key: []byte(id), Value: pipeline.TrackerStoreEntry(id, "b-"+id, whAccount, 10, heard)})
		produce(&kgo.Record{Topic: e.topics.TrackerState, Key: []byte(id)}) // its tombstone
	}
	for i := range open {
		id := fmt.Sprintf("open-%d", i)
		produce(&kgo.Record{Topic: e.topics.TrackerState, Key: []byte(id), Value: pipeline.TrackerStoreEntry(id, "b-"+id, whAccount, 10, heard)})
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	// The group has processed the whole history.
	group := e.topics.Outcomes + ".tracker"
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, e.topics.Outcomes)
	if err != nil {
		b.Fatal(err)
	}
	if err := adm.CommitAllOffsets(ctx, group, ends.Offsets()); err != nil {
		b.Fatal(err)
	}

	client, err := calypso.NewClient(calypso.Config{BaseURL: "http://127.0.0.1:1", Account: whAccount, APIKey: "k", APISecret: "s"})
	if err != nil {
		b.Fatal(err)
	}
	cl.Close() // its buffers are not the tracker's
	runtime.GC()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)

	start := time.Now()
	tr, err := pipeline.NewTracker(pipeline.TrackerConfig{Topics: e.topics, Group: group, TransactionalID: group + "-bench",
		PollAfter: time.Hour, Logger: testLogger(b)}, pipeline.Accounts{whAccount: client}, e.seeds...)
	if err != nil {
		b.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- tr.Run(runCtx) }()
	deadline := time.Now().Add(5 * time.Minute)
	for tr.Stats.Loaded.Load() < int64(open) || tr.Stats.Partitions.Load() != 4 || tr.Stats.Open.Load() != int64(open) {
		if time.Now().After(deadline) {
			b.Fatalf("not restored after 5 minutes: %d entries loaded", tr.Stats.Loaded.Load())
		}
		time.Sleep(time.Millisecond)
	}
	took := time.Since(start)
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(took.Seconds(), "s/startup")
	b.ReportMetric(time.Duration(tr.Stats.RestoreNs.Load()).Seconds(), "s/restore")
	b.ReportMetric(float64(tr.Stats.Restored.Load()), "changelog-records")
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(open), "heap-B/open-payout")
	b.ReportMetric(float64(history), "history-records")
}
