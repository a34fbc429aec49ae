package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
)

// batchedTimes counts how often each intent id is in a batch.
func batchedTimes(t *testing.T, recs []*kgo.Record) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, b := range batches(t, recs) {
		for _, it := range b.Items {
			n[it.IntentID]++
		}
	}
	return n
}

// waitHealth waits until the batcher's health part matches cond.
func waitHealth(t *testing.T, h *pipeline.Health, what string, cond func(pipeline.PartHealth) bool) pipeline.PartHealth {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		_, parts := h.Check()
		for _, p := range parts {
			if p.Part == "batcher" && cond(p) {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for the batcher's health to be %s; have %+v", what, parts)
		}
		time.Sleep(20 * time.Millisecond) // polling a state, with a deadline
	}
}

// Scenario 8: an intents partition emptied by retention or delete-records
// (log start = end) made the rebuild wait forever, and nothing was batched.
func TestBatcherRebuildsFromAnEmptiedIntentsPartition(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	out := e.follow(e.topics.Batches)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := e.cluster.Client(t, kgo.DefaultProduceTopic(e.topics.Intents))
	for i := range 5 {
		st := events.IntentState{IntentID: fmt.Sprintf("gone-%d", i), State: events.StatusBatched, UpdatedAt: time.Now()}
		r, _ := events.NewRecord(e.topics.Intents, "test", st)
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	adm := e.cluster.Admin(t)
	ends, err := adm.ListEndOffsets(ctx, e.topics.Intents)
	if err != nil {
		t.Fatal(err)
	}
	del, err := adm.DeleteRecords(ctx, ends.Offsets())
	if err != nil || del.Error() != nil {
		t.Fatalf("delete records: %v %v", err, del.Error())
	}

	health := pipeline.NewHealth()
	runComponent(t, newBatcher(t, e, func(c *pipeline.BatcherConfig) { c.Health = health }).Run)
	e.produce(intent("after-trim", "acct", "TRX", "1", "T1"))
	out.waitFor(t, time.Minute, "the intent batched", func(r []*kgo.Record) bool { return batchedTimes(t, r)["after-trim"] == 1 })
	waitHealth(t, health, "ready", func(p pipeline.PartHealth) bool { return p.Ready })
}

// Scenarios 10 and 9: a transaction left open on the intents topic by a crashed
// producer (its transactional id never reused) holds the last stable offset
// back below a committed window. The rebuild used to give up after 15s and
// trust it: the window's intent was then paid twice. Now the batcher is not
// ready and says why until the broker aborts that transaction, then it
// finds the intent batched and sends the duplicate to the DLQ.
func TestBatcherRebuildNeverProceedsPastAnOpenTransaction(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	out := e.follow(e.topics.Batches)
	dlq := e.follow(e.topics.DLQ)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A batcher is running, its index caught up...
	x := intent("x", "acct", "TRX", "1", "Tx")
	first := pipeline.NewHealth()
	stop := runComponent(t, newBatcher(t, e, func(c *pipeline.BatcherConfig) { c.Health = first }).Run)
	waitHealth(t, first, "ready", func(p pipeline.PartHealth) bool { return p.Ready })

	// ...when a producer begins a transaction on the intents topic and is
	// never heard of again; the broker aborts it after 25s.
	crashed := e.cluster.Client(t, kgo.TransactionalID(e.topics.Intents+".crashed"), kgo.TransactionTimeout(25*time.Second),
		kgo.DefaultProduceTopic(e.topics.Intents))
	if err := crashed.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	ghost, _ := events.NewRecord(e.topics.Intents, "test", events.IntentState{IntentID: "ghost", State: events.StatusBatched, UpdatedAt: time.Now()})
	if err := crashed.ProduceSync(ctx, ghost).FirstErr(); err != nil {
		t.Fatal(err)
	}

	// The batcher batches X after it, then stops.
	e.produce(x)
	out.waitFor(t, time.Minute, "x batched", func(r []*kgo.Record) bool { return batchedTimes(t, r)["x"] == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// The next batcher must not trust the held-back stable offset.
	health := pipeline.NewHealth()
	b := newBatcher(t, e, func(c *pipeline.BatcherConfig) { c.Health = health; c.RebuildWait = time.Second })
	runComponent(t, b.Run)
	e.produce(x)
	p := waitHealth(t, health, "not ready, saying why", func(p pipeline.PartHealth) bool {
		return !p.Ready && strings.Contains(p.Reason, "stable offset")
	})
	t.Logf("while the transaction is open: %s", p.Reason)
	if b.Stats.Ready.Load() != 0 {
		t.Error("the batcher_ready gauge says ready while /readyz does not")
	}
	dead := dlq.waitFor(t, 2*time.Minute, "the copy of x in the DLQ once the transaction is aborted", func(r []*kgo.Record) bool { return len(r) >= 1 })
	if reasons := dlqReasons(dead); reasons["x"] != "duplicate" {
		t.Fatalf("DLQ %v, want x as duplicate", reasons)
	}
	if n := batchedTimes(t, out.snapshot())["x"]; n != 1 {
		t.Fatalf("x batched %d times", n)
	}
	waitHealth(t, health, "ready", func(p pipeline.PartHealth) bool { return p.Ready })
	waitStat(t, "the batcher_ready gauge at 1", func() bool { return b.Stats.Ready.Load() == 1 })
}

// Scenario 11: a copy of an intent in another partition than Kafka's
// default partitioner gives its key (librdkafka's CRC32, Sarama's FNV-1a, a
// partition count changed) is invisible to that partition's dedup. It goes
// to the DLQ as wrong_partition, with the fix in its reason.
func TestBatcherRefusesRecordsInTheWrongPartition(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 4)
	out := e.follow(e.topics.Batches)
	dlq := e.follow(e.topics.DLQ)
	runComponent(t, newBatcher(t, e, nil).Run)

	p := intent("moved", "acct", "TRX", "1", "Tmoved")
	v, _ := json.Marshal(p)
	right := &kgo.Record{Key: []byte("moved"), Value: v}
	e.produceRaw(right)
	out.waitFor(t, time.Minute, "the intent batched", func(r []*kgo.Record) bool { return batchedTimes(t, r)["moved"] == 1 })

	cl := e.cluster.Client(t, kgo.DefaultProduceTopic(e.topics.Requests), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wrong := &kgo.Record{Key: []byte("moved"), Value: v, Partition: (right.Partition + 1) % 4}
	if err := cl.ProduceSync(ctx, wrong).FirstErr(); err != nil {
		t.Fatal(err)
	}
	dead := dlq.waitFor(t, time.Minute, "the misplaced copy in the DLQ", func(r []*kgo.Record) bool { return len(r) >= 1 })
	if reasons := dlqReasons(dead); reasons["moved"] != "wrong_partition" {
		t.Fatalf("DLQ %v, want wrong_partition", reasons)
	}
	for _, h := range dead[0].Headers {
		if h.Key == "payoutd-dlq-error" && !strings.Contains(string(h.Value), "murmur2") {
			t.Errorf("the reason does not say how to fix it: %s", h.Value)
		}
	}
	if n := batchedTimes(t, out.snapshot())["moved"]; n != 1 {
		t.Fatalf("batched %d times", n)
	}
}

// Scenario 12: each instance holds only its own partitions' entries, so
// memory per instance falls as instances are added; a revoked partition's
// entries are dropped.
func TestBatcherIndexHoldsOnlyOwnedPartitions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 4)
	out := e.follow(e.topics.Batches)
	var in []events.PayoutRequested
	for i := range 200 {
		in = append(in, intent(fmt.Sprintf("own-%03d", i), "acct", "TRX", "1", fmt.Sprintf("T%d", i)))
	}
	a := newBatcher(t, e, func(c *pipeline.BatcherConfig) { c.TransactionalID = e.topics.Requests + ".a" })
	runComponent(t, a.Run)
	e.produce(in...)
	out.waitFor(t, time.Minute, "200 batched", func(r []*kgo.Record) bool { return len(batchedTimes(t, r)) >= 200 })
	waitStat(t, "a's index holds all 200", func() bool { return a.Stats.IndexSize.Load() == 200 })

	b := newBatcher(t, e, func(c *pipeline.BatcherConfig) { c.TransactionalID = e.topics.Requests + ".b" })
	runComponent(t, b.Run)
	waitStat(t, "the partitions shared, each index holding its own", func() bool {
		na, nb := a.Stats.IndexSize.Load(), b.Stats.IndexSize.Load()
		return a.Stats.OwnedPartitions.Load() == 2 && b.Stats.OwnedPartitions.Load() == 2 && na+nb == 200 && na > 0 && nb > 0
	})
	t.Logf("index entries: a %d, b %d", a.Stats.IndexSize.Load(), b.Stats.IndexSize.Load())
}

func waitStat(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling counters, with a deadline
	}
}

var _ = kadm.NewClient
