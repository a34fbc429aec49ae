package pipeline_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/pipeline"
)

func TestEphemeralTransactionalID(t *testing.T) {
	t.Parallel()
	for id, want := range map[string]bool{
		"payoutd-tracker-7d9f8c6b5-x2k4q": true,  // a Deployment's pod
		"payoutd-tracker-5c8bd9fbd-bt9zm": true,  // another
		"payoutd-tracker-payoutd-1":       false, // a StatefulSet's ordinal
		"payoutd-tracker-worker-01":       false,
		"payoutd-tracker":                 false,
		"payoutd-tracker-ip-10-0-3-17":    false, // an EC2 host name
	} {
		if got := pipeline.EphemeralTransactionalID(id); got != want {
			t.Errorf("EphemeralTransactionalID(%q) = %v, want %v", id, got, want)
		}
	}
}

// A restore handles changelog partitions that are empty, trimmed to
// nothing, or trimmed part way, and reads exactly the open entries left.
func TestTrackerRestoresEmptyAndTrimmedChangelogs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := e.cluster.Client(t)
	heard := time.Now().UTC()
	// Partition 0 stays empty. Partition 1: two entries, then trimmed to
	// nothing. Partition 2: an entry trimmed away, then two that stay.
	write := func(p int32, id string) {
		t.Helper()
		r := &kgo.Record{Topic: e.topics.TrackerState, Partition: p, Key: []byte(id), Value: pipeline.TrackerStoreEntry(id, "b-"+id, whAccount, 2, heard)}
		if err := e.cluster.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner())).ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	write(1, "gone-1")
	write(1, "gone-2")
	write(2, "gone-3")
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, e.topics.TrackerState)
	if err != nil {
		t.Fatal(err)
	}
	trim := kadm.Offsets{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Partition != 0 {
			trim.Add(kadm.Offset{Topic: o.Topic, Partition: o.Partition, At: o.Offset})
		}
	})
	// Apache Kafka trims only topics with a delete policy: allow it, as a
	// retention on the changelog would.
	policy := "compact,delete"
	if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "cleanup.policy", Value: &policy}}, e.topics.TrackerState); err != nil {
		t.Fatal(err)
	}
	// A KRaft broker applies an altered config asynchronously: trimming
	// before it did is refused (POLICY_VIOLATION).
	e.cluster.WaitTopicConfig(t, e.topics.TrackerState, "cleanup.policy", policy)
	res, err := adm.DeleteRecords(ctx, trim)
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	write(2, "open-1")
	write(2, "open-2")

	client, err := calypso.NewClient(calypso.Config{BaseURL: "http://127.0.0.1:1", Account: whAccount, APIKey: "k", APISecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	health := pipeline.NewHealth()
	tr, err := pipeline.NewTracker(pipeline.TrackerConfig{Topics: e.topics, Group: e.topics.Outcomes + ".tracker", PollAfter: time.Hour,
		Health: health, Logger: testLogger(t)}, pipeline.Accounts{whAccount: client}, e.seeds...)
	if err != nil {
		t.Fatal(err)
	}
	runComponent(t, tr.Run)
	waitUntil(t, 30*time.Second, "three partitions restored and ready", func() bool {
		ok, _ := health.Check()
		return ok && tr.Stats.Partitions.Load() == 3 && tr.Stats.Open.Load() == 2
	})
	if n := tr.Stats.Loaded.Load(); n != 2 {
		t.Fatalf("%d entries restored, want the 2 open ones", n)
	}
	// The restored payouts keep when they were first heard of, which the
	// oldest-open-payout gauge reports.
	waitUntil(t, 10*time.Second, "the oldest open payout's time published", func() bool {
		ns := tr.Stats.OldestOpen.Load()
		return ns != 0 && time.Since(time.Unix(0, ns)) < time.Hour
	})
	if n := tr.Stats.Restored.Load(); n != 2 {
		t.Fatalf("%d changelog records read, want 2: trimmed records must not be waited for", n)
	}
}
