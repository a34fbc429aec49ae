package pipeline

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/internal/kafkatest"
)

func TestDedupIndexHorizonAndTombstones(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	d := newDedupIndex(7 * 24 * time.Hour)
	d.add(0, "fresh", now.Add(-time.Hour))
	d.add(0, "old", now.Add(-8*24*time.Hour))
	if !d.has(0, "fresh", now) || d.has(0, "old", now) || d.has(0, "never", now) || d.has(1, "fresh", now) {
		t.Fatal("horizon not applied")
	}
	d.prune(now)
	if d.len() != 1 {
		t.Fatalf("prune left %d entries", d.len())
	}
	d.remove(0, "fresh")
	if d.has(0, "fresh", now) {
		t.Fatal("tombstone not applied")
	}
}

// BenchmarkDedupIndexMemory reports the heap one index entry costs.
func BenchmarkDedupIndexMemory(b *testing.B) {
	const n = 1_000_000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("intent-%036d", i) // as long as a UUID
	}
	now := time.Now()
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		d := newDedupIndex(time.Hour)
		for _, id := range ids {
			d.add(0, id, now)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/entry")
		runtime.KeepAlive(d)
	}
}

// BenchmarkDedupIndexRebuild reads 1,000,000 intent states from the intents
// topic into an empty index, as a batcher does on its first assignment.
func BenchmarkDedupIndexRebuild(b *testing.B) {
	const n = 1_000_000
	c := kafkatest.Start(b)
	topic := c.CreateTopic(b, "bench.intents", 4, nil)
	cl := c.Client(b, kgo.DefaultProduceTopic(topic), kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(100_000))
	ctx := context.Background()
	value := []byte(`{"intentId":"x","state":"BATCHED","batchId":"0b5e3c2a-6d4f-5a1b-8c7d-9e0f1a2b3c4d","updatedAt":"2026-11-24T09:00:02.5Z"}`)
	for i := range n {
		cl.Produce(ctx, &kgo.Record{Key: []byte("intent-" + strconv.Itoa(i)), Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				b.Error(err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		idx := newDedupIndex(time.Hour)
		start := time.Now()
		read, err := readIntents(ctx, []kgo.Opt{kgo.SeedBrokers(c.Seeds...)}, topic, idx, []int32{0, 1, 2, 3}, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		if read != n || idx.len() != n {
			b.Fatalf("read %d, index holds %d, want %d", read, idx.len(), n)
		}
		b.ReportMetric(time.Since(start).Seconds(), "s/rebuild")
	}
}

// Issue 11, scenario 13: a 100-year horizon reached before 1970, the
// cut-off wrapped, and pruning emptied the index: a duplicate was paid twice.
func TestDedupIndexLongHorizonDoesNotWrap(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	d := newDedupIndex(100 * 365 * 24 * time.Hour)
	d.add(3, "paid", now.Add(-24*time.Hour))
	d.prune(now)
	if !d.has(3, "paid", now) || d.len() != 1 {
		t.Fatalf("a 100-year horizon forgot an intent batched yesterday (%d entries)", d.len())
	}
	d.drop(3)
	if d.has(3, "paid", now) || d.len() != 0 {
		t.Fatal("a dropped partition's entries remain")
	}
}

// BenchmarkDedupIndexMemoryPerInstance reports the heap one batcher
// instance's index costs when 1,000,000 intents spread over 6 partitions
// are shared by 1 or 3 instances (each holds only its owned partitions).
func BenchmarkDedupIndexMemoryPerInstance(b *testing.B) {
	const n, partitions = 1_000_000, 6
	ids := make([]string, n)
	parts := make([]int32, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("intent-%036d", i) // as long as a UUID
		parts[i] = int32(kafkaPartitioner().Partition(&kgo.Record{Key: []byte(ids[i])}, partitions))
	}
	now := time.Now()
	for _, instances := range []int{1, 3} {
		b.Run(fmt.Sprintf("instances=%d", instances), func(b *testing.B) {
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				d := newDedupIndex(time.Hour)
				for i, id := range ids {
					if int(parts[i])%instances == 0 { // instance 0 of instances owns these partitions
						d.add(parts[i], id, now)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				heap := float64(after.HeapAlloc - before.HeapAlloc)
				b.ReportMetric(heap/(1<<20), "MiB/instance")
				b.ReportMetric(float64(d.len()), "entries/instance")
				b.ReportMetric(heap/float64(d.len()), "bytes/entry")
				runtime.KeepAlive(d)
			}
		})
	}
}
