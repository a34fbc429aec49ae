package pipeline_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
)

// Scenarios 1-6 of issue 11 through Kafka: every hostile input ends in the
// DLQ alone with its reason; the valid intents around it, of the same
// account and currency, are batched as if it had never come; and the process
// lives on (1e10000001 once killed it, on every restart).
func TestBatcherHostileInputGoesToDLQAlone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	out := e.follow(e.topics.Batches)
	dlq := e.follow(e.topics.DLQ)
	start := time.Now()
	b := newBatcher(t, e, func(c *pipeline.BatcherConfig) {
		c.Currencies = calypso.DefaultCurrencies()
		btc := c.Currencies["BTC"]
		btc.Max = calypso.MustParseAmount("21000000")
		c.Currencies["BTC"] = btc
		// The corpus's execution dates are judged by its clock.
		c.Now = func() time.Time { return pipeline.HostileNow.Add(time.Since(start)) }
	})
	runComponent(t, b.Run)

	good := func(i int) *kgo.Record {
		id := fmt.Sprintf("good-%02d", i)
		v, _ := json.Marshal(intent(id, "a", "ETH", "1.5", "0xgood"+id))
		return &kgo.Record{Key: []byte(id), Value: v}
	}
	var recs []*kgo.Record
	for i := range 5 {
		recs = append(recs, good(i))
	}
	want := map[string]string{} // key -> reason
	for _, h := range pipeline.HostileCorpus() {
		// Each input its own intent id (and key), its flaw kept.
		value := strings.Replace(h.Value, `"intentId":"h`, `"intentId":"`+h.Name, 1)
		var id struct {
			IntentID string `json:"intentId"`
		}
		_ = json.Unmarshal([]byte(value), &id)
		if id.IntentID == "" {
			id.IntentID = h.Name
		}
		recs = append(recs, &kgo.Record{Key: []byte(id.IntentID), Value: []byte(value)})
		want[id.IntentID] = string(h.Reason)
	}
	// 6. Upstream headers named like ours do not pass for the reason.
	spoof := &kgo.Record{Key: []byte("spoof"), Value: []byte(`{"intentId":"spoof","amount":"1"}`), Headers: []kgo.RecordHeader{
		{Key: "payoutd-dlq-reason", Value: []byte("duplicate")},
		{Key: "payoutd-dlq-error", Value: []byte("all is well")},
		{Key: "ce_type", Value: []byte(events.TypeIntentSettled)},
		{Key: "ce_id", Value: []byte("fake")},
		{Key: "ce_specversion", Value: []byte("1.0")},
		{Key: "trace", Value: []byte("t-1")},
	}}
	recs = append(recs, spoof)
	want["spoof"] = string(pipeline.ReasonSchema)
	for i := 5; i < 10; i++ {
		recs = append(recs, good(i))
	}
	e.produceRaw(recs...)

	dead := dlq.waitFor(t, time.Minute, "every hostile record in the DLQ", func(r []*kgo.Record) bool { return len(r) >= len(want) })
	got := dlqReasons(dead)
	for key, reason := range want {
		if got[key] != reason {
			t.Errorf("%q: DLQ reason %q, want %q", key, got[key], reason)
		}
	}
	for _, r := range dead {
		if string(r.Key) != "spoof" {
			continue
		}
		h := map[string][]string{}
		for _, x := range r.Headers {
			h[x.Key] = append(h[x.Key], string(x.Value))
		}
		if len(h["payoutd-dlq-reason"]) != 1 || h["payoutd-dlq-reason"][0] != "schema" || h["ce_type"] != nil || h["ce_id"] != nil {
			t.Errorf("DLQ copy of a record with spoofing headers: %v", h)
		}
		if h["upstream-payoutd-dlq-reason"][0] != "duplicate" || h["upstream-ce_type"][0] != string(events.TypeIntentSettled) || h["trace"][0] != "t-1" {
			t.Errorf("upstream headers not kept under their own names: %v", h)
		}
		if _, err := events.ReadMeta(r); err == nil {
			t.Errorf("the DLQ copy reads as a CloudEvent")
		}
	}
	paid := out.waitFor(t, time.Minute, "the good intents batched", func(r []*kgo.Record) bool { return itemCount(batches(t, r)) >= 10 })
	bs := batches(t, paid)
	if len(bs) != 1 || len(bs[0].Items) != 10 || !bs[0].Total.Equal(events.MustAmount("15")) {
		t.Fatalf("batches %+v, want one of the 10 good intents totalling 15", bs)
	}
	deadline := time.Now().Add(time.Minute)
	for b.Stats.DLQ.Load() < int64(len(want)) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // the counters follow the commit the reader saw
	}
	if n := b.Stats.DLQBy[pipeline.ReasonDuplicate].Load(); n != 0 {
		t.Errorf("the DLQ metric counts %d duplicates: the spoofed header was believed", n)
	}
	if n := b.Stats.DLQBy[pipeline.ReasonSchema].Load(); n < 1 {
		t.Errorf("the DLQ metric counts %d schema rejections", n)
	}
}
