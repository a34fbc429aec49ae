package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
)

// longComment is 256 four-byte characters (1 KiB) that do not compress: a
// limit is checked on what the broker receives, compressed.
func longComment(seed int) string {
	rng := rand.New(rand.NewPCG(uint64(seed), 11))
	var b strings.Builder
	for range 256 {
		b.WriteRune(rune(0x20000 + rng.IntN(0xA6DF)))
	}
	return b.String()
}

// recordBytes is what Kafka counts of a record against its limit.
func recordBytes(r *kgo.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// Scenario 7: a valid window whose one group encodes to more than Kafka's
// record limit (1000 ETH intents with 256-character comments of 4-byte
// characters, 1.2 MB) used to abort and retry forever. It is planned in
// chunks that fit, and every intent is batched once, with no abort.
func TestBatcherChunksABatchLargerThanKafkaTakes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	out := e.follow(e.topics.Batches)
	b := newBatcher(t, e, func(c *pipeline.BatcherConfig) { c.MaxWait = 2 * time.Second })
	runComponent(t, b.Run)

	var in []events.PayoutRequested
	for i := range 1000 {
		p := intent(fmt.Sprintf("big-%04d", i), "acct", "ETH", "0.000000000000000001", fmt.Sprintf("0x%040d", i))
		p.Comment = longComment(i)
		in = append(in, p)
	}
	e.produce(in...)

	recs := out.waitFor(t, 2*time.Minute, "1000 intents batched", func(r []*kgo.Record) bool { return itemCount(batches(t, r)) >= 1000 })
	bs := batches(t, recs)
	got := checkBatches(t, bs, map[string]int{"ETH": 1000})
	if len(got) != 1000 || len(bs) < 2 {
		t.Fatalf("%d intents in %d batches, want 1000 in at least 2", len(got), len(bs))
	}
	for _, r := range recs {
		if n := recordBytes(r); n > events.MaxMessageBytes {
			t.Fatalf("batch record of %d bytes, Kafka's limit is %d", n, events.MaxMessageBytes)
		}
	}
	if n := b.Stats.Aborts.Load(); n != 0 {
		t.Fatalf("%d windows aborted", n)
	}
}

// Scenario 7, the deterministic refusal: a topic whose limit is below what
// a request becomes refuses its batch for good. That request goes to the
// DLQ (too_large) with Kafka's error, and the others of its window are
// batched, instead of the window aborting forever with error=<nil>.
func TestBatcherSendsWhatKafkaRefusesForGoodToDLQ(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	limit := "1500"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.cluster.Admin(t).AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: &limit}}, e.topics.Batches); err != nil {
		t.Fatal(err)
	}
	e.cluster.WaitTopicConfig(t, e.topics.Batches, "max.message.bytes", limit)
	out := e.follow(e.topics.Batches)
	dlq := e.follow(e.topics.DLQ)
	b := newBatcher(t, e, nil)
	runComponent(t, b.Run)

	var recs []*kgo.Record
	for i := range 6 {
		id := fmt.Sprintf("fits-%d", i)
		v, _ := json.Marshal(intent(id, "acct", "TRX", "1", "T"+id))
		recs = append(recs, &kgo.Record{Key: []byte(id), Value: v})
	}
	huge := intent("huge", "acct", "TRX", "1", "Thuge")
	huge.Comment = longComment(1)
	v, _ := json.Marshal(huge)
	recs = append(recs[:3], append([]*kgo.Record{{Key: []byte("huge"), Value: v}}, recs[3:]...)...)
	e.produceRaw(recs...)

	dead := dlq.waitFor(t, time.Minute, "the refused request in the DLQ", func(r []*kgo.Record) bool { return len(r) >= 1 })
	if reasons := dlqReasons(dead); len(dead) != 1 || reasons["huge"] != "too_large" {
		t.Fatalf("DLQ %v, want only huge (too_large)", reasons)
	}
	for _, x := range dead[0].Headers {
		if x.Key == "payoutd-dlq-error" && !strings.Contains(strings.ToUpper(string(x.Value)), "MESSAGE_TOO_LARGE") {
			t.Errorf("DLQ error %q does not carry Kafka's error", x.Value)
		}
	}
	paid := out.waitFor(t, time.Minute, "the 6 others batched", func(r []*kgo.Record) bool { return itemCount(batches(t, r)) >= 6 })
	checkBatches(t, batches(t, paid), map[string]int{"TRX": 100})
	if n := itemCount(batches(t, paid)); n != 6 {
		t.Fatalf("%d intents batched, want 6", n)
	}
}
