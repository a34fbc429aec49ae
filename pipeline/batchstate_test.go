package pipeline

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/kafkatest"
)

// Scenario 4: the batch states of assigned partitions are read to the end,
// whether a partition is empty, trimmed by retention (its start offset past
// 0) and ending in a tombstone, or ending in a transaction's marker.
func TestRestoreBatchStatesReadsEveryPartitionToItsEnd(t *testing.T) {
	t.Parallel()
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "payouts.batches.state", 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rec := func(p int32, st events.BatchState) *kgo.Record {
		r, err := events.NewRecord(topic, "test", st)
		if err != nil {
			t.Fatal(err)
		}
		r.Partition = p
		return r
	}
	now := time.Now().UTC()
	plain := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	// Partition 0: three states, the first two trimmed away below.
	if err := plain.ProduceSync(ctx,
		rec(0, events.BatchState{BatchID: "old", State: events.BatchSubmitted, UpdatedAt: now}),
		rec(0, events.BatchState{BatchID: "b", State: events.BatchUndecided, UpdatedAt: now}),
		rec(0, events.BatchState{BatchID: "b", State: events.BatchSubmitted, PayoutID: "7", UpdatedAt: now}),
		&kgo.Record{Topic: topic, Partition: 0, Key: []byte("gone")},
	).FirstErr(); err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(plain)
	if _, err := adm.DeleteRecords(ctx, kadm.Offsets{topic: {0: {Topic: topic, Partition: 0, At: 2}}}); err != nil {
		t.Fatal(err)
	}
	// Partition 1: written in a committed transaction, so it ends in a
	// control record. Partition 2 stays empty.
	txn := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID(topic+".txn"))
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(ctx, rec(1, events.BatchState{BatchID: "q", State: events.BatchQuarantined, UpdatedAt: now})).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}

	states := newBatchStates()
	done := make(chan struct{})
	var quarantined []string
	var err error
	go func() {
		defer close(done)
		quarantined, err = states.restore(ctx, []kgo.Opt{kgo.SeedBrokers(c.Seeds...)}, topic, []int32{0, 1, 2})
	}()
	select {
	case <-done:
	case <-time.After(restoreTimeout + 10*time.Second):
		t.Fatal("restore did not return")
	}
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := states.get(0, "b"); !ok || st.State != events.BatchSubmitted || st.PayoutID != "7" {
		t.Fatalf("batch b: %+v %v", st, ok)
	}
	if _, ok := states.get(0, "old"); ok {
		t.Fatal("a state below the start offset was restored")
	}
	if st, ok := states.get(1, "q"); !ok || st.State != events.BatchQuarantined {
		t.Fatalf("batch q: %+v %v", st, ok)
	}
	if len(quarantined) != 1 || quarantined[0] != "q" {
		t.Fatalf("quarantined %v", quarantined)
	}
}
