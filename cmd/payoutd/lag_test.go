package main

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/internal/kafkatest"
)

// A group that consumed every committed record of a transactional topic has
// no lag, although commit markers and aborted records follow its offset.
func TestLagCountsOnlyWhatAReadCommittedConsumerGets(t *testing.T) {
	t.Parallel()
	c := kafkatest.Start(t)
	topic := kafkatest.Name(t, "lag")
	group := kafkatest.Name(t, "group")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm := c.Admin(t)
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	txn := c.Client(t, kgo.TransactionalID(kafkatest.Name(t, "txn")), kgo.DefaultProduceTopic(topic))
	write := func(commit bool, values ...string) {
		t.Helper()
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if err := txn.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	write(true, "a", "b") // offsets 0, 1; commit marker 2
	commit := func(at int64) {
		t.Helper()
		os := kadm.Offsets{}
		os.Add(kadm.Offset{Topic: topic, Partition: 0, At: at, LeaderEpoch: -1})
		if _, err := adm.CommitOffsets(ctx, group, os); err != nil {
			t.Fatal(err)
		}
	}
	commit(2) // consumed a and b
	lr := newLagReader(adm, []kgo.Opt{kgo.SeedBrokers(c.Seeds...)})
	lagOf := func() (raw, seen int64) {
		t.Helper()
		l, err := adm.Lag(ctx, group)
		if err != nil {
			t.Fatal(err)
		}
		got, err := lr.Lag(ctx, group)
		if err != nil {
			t.Fatal(err)
		}
		return l[group].Lag.Total(), got[group][topic][0]
	}
	if raw, seen := lagOf(); raw != 1 || seen != 0 {
		t.Fatalf("caught up behind a commit marker: raw lag %d, lag %d; want 1 and 0", raw, seen)
	}
	write(false, "x", "y") // aborted: never delivered to read_committed
	if raw, seen := lagOf(); raw != 4 || seen != 0 {
		t.Fatalf("caught up behind an aborted transaction: raw lag %d, lag %d; want 4 and 0", raw, seen)
	}
	write(true, "c") // one record the group has not consumed
	if _, seen := lagOf(); seen != 1 {
		t.Fatalf("one committed record not consumed: lag %d, want 1", seen)
	}
}
