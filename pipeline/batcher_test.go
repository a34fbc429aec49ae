package pipeline_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
)

func newBatcher(t *testing.T, e *env, mod func(*pipeline.BatcherConfig)) *pipeline.Batcher {
	t.Helper()
	cfg := pipeline.BatcherConfig{
		Topics:  e.topics,
		Group:   e.topics.Requests + ".batcher",
		MaxWait: 300 * time.Millisecond,
		Logger:  testLogger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	b, err := pipeline.NewBatcher(cfg, e.seeds...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkBatches asserts what every batch must be: within its currency's item
// limit, no address twice, total = sum of items, and every intent in exactly
// one batch. It returns the intent ids batched.
func checkBatches(t *testing.T, bs []events.BatchPlanned, limits map[string]int) map[string]events.BatchItem {
	t.Helper()
	seen := map[string]events.BatchItem{}
	ids := map[string]bool{}
	for _, b := range bs {
		if ids[b.BatchID] {
			t.Fatalf("batch %s planned twice", b.BatchID)
		}
		ids[b.BatchID] = true
		if b.IdempotencyKey != b.BatchID {
			t.Fatalf("batch %s has idempotency key %s", b.BatchID, b.IdempotencyKey)
		}
		if l := limits[b.Currency]; len(b.Items) > l {
			t.Fatalf("batch %s has %d %s items, limit %d", b.BatchID, len(b.Items), b.Currency, l)
		}
		if !b.Total.Equal(b.Sum()) {
			t.Fatalf("batch %s total %s != sum of items %s", b.BatchID, b.Total, b.Sum())
		}
		addrs := map[string]bool{}
		for _, it := range b.Items {
			if addrs[it.Address] {
				t.Fatalf("batch %s pays address %s twice", b.BatchID, it.Address)
			}
			addrs[it.Address] = true
			if _, dup := seen[it.IntentID]; dup {
				t.Fatalf("intent %s is in two batches", it.IntentID)
			}
			seen[it.IntentID] = it
		}
	}
	return seen
}

func TestBatcherGroupsChunksAndKeepsTotalsExact(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 3)
	out := e.follow(e.topics.Batches)
	intents := e.follow(e.topics.Intents)
	b := newBatcher(t, e, nil)
	runComponent(t, b.Run)

	// 2 accounts × 2 currencies; USDT_TRX batches hold 100 items, ETH 1000.
	// Every 7th intent of a group reuses one address, which must spread over batches.
	var in []events.PayoutRequested
	want := map[string]events.PayoutRequested{}
	for i := range 1200 {
		acct := []string{"acct-a", "acct-b"}[i%2]
		cur := []string{"USDT_TRX", "ETH"}[(i/2)%2]
		addr := fmt.Sprintf("addr-%d", i)
		if i%7 == 0 {
			addr = "addr-shared"
		}
		amount := fmt.Sprintf("%d.%06d", i%50+1, i)
		if cur == "ETH" {
			amount = fmt.Sprintf("0.%018d", i+1) // 18 decimals survive
		}
		p := intent(fmt.Sprintf("grp-%05d", i), acct, cur, amount, addr)
		in = append(in, p)
		want[p.IntentID] = p
	}
	e.produce(in...)

	recs := out.waitFor(t, time.Minute, "1200 batched intents", func(r []*kgo.Record) bool {
		return itemCount(batches(t, r)) >= len(in)
	})
	bs := batches(t, recs)
	got := checkBatches(t, bs, map[string]int{"USDT_TRX": 100, "ETH": 1000})
	if len(got) != len(in) {
		t.Fatalf("%d intents batched, want %d", len(got), len(in))
	}
	for id, it := range got {
		w := want[id]
		if !it.Amount.Equal(w.Amount) || it.Address != w.Address {
			t.Fatalf("intent %s batched as %s to %s, want %s to %s", id, it.Amount, it.Address, w.Amount, w.Address)
		}
	}
	groups := map[string]bool{}
	for _, batch := range bs {
		groups[batch.Account+"/"+batch.Currency] = true
		for _, it := range batch.Items {
			if w := want[it.IntentID]; w.Account != batch.Account || w.Currency != batch.Currency {
				t.Fatalf("intent %s of %s/%s in batch of %s/%s", it.IntentID, w.Account, w.Currency, batch.Account, batch.Currency)
			}
		}
	}
	if len(groups) != 4 {
		t.Fatalf("groups %v", groups)
	}
	// Every intent also has its BATCHED state, with its batch id.
	states := intents.waitFor(t, time.Minute, "an IntentState per intent", func(r []*kgo.Record) bool { return len(r) >= len(in) })
	for _, r := range states {
		_, ev, err := events.Decode(r)
		if err != nil {
			t.Fatal(err)
		}
		st := ev.(events.IntentState)
		if st.State != events.StatusBatched || st.BatchID == "" {
			t.Fatalf("state %+v", st)
		}
	}
}

func TestBatcherSendsBadInputToDLQAndPaysTheRest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	out := e.follow(e.topics.Batches)
	dlq := e.follow(e.topics.DLQ)
	b := newBatcher(t, e, func(c *pipeline.BatcherConfig) {
		c.Accounts = []string{"acct"}
		c.MaxRecordBytes = 2048
	})
	runComponent(t, b.Run)

	good := func(id string) *kgo.Record {
		v, _ := json.Marshal(intent(id, "acct", "USDT_TRX", "1.5", "T"+id))
		return &kgo.Record{Key: []byte(id), Value: v}
	}
	raw := func(id, value string) *kgo.Record {
		return &kgo.Record{Key: []byte(id), Value: []byte(value), Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("t-" + id)}}}
	}
	bad := map[string]struct {
		rec    *kgo.Record
		reason string
	}{
		"bad-json":      {raw("bad-json", `{"intentId":`), "malformed"},
		"bad-missing":   {raw("bad-missing", `{"intentId":"bad-missing","account":"acct","currency":"USDT_TRX","amount":"1"}`), "schema"},
		"bad-type":      {raw("bad-type", `{"intentId":"bad-type","account":"acct","currency":"USDT_TRX","amount":true,"address":"T"}`), "schema"},
		"bad-zero":      {raw("bad-zero", `{"intentId":"bad-zero","account":"acct","currency":"USDT_TRX","amount":"0","address":"T"}`), "schema"},
		"bad-zero-num":  {raw("bad-zero-num", `{"intentId":"bad-zero-num","account":"acct","currency":"USDT_TRX","amount":0,"address":"T"}`), "schema"},
		"bad-negative":  {raw("bad-negative", `{"intentId":"bad-negative","account":"acct","currency":"USDT_TRX","amount":-5,"address":"T"}`), "schema"},
		"bad-precise":   {raw("bad-precise", `{"intentId":"bad-precise","account":"acct","currency":"USDT_TRX","amount":"1.0000001","address":"T"}`), "precision"},
		"bad-currency":  {raw("bad-currency", `{"intentId":"bad-currency","account":"acct","currency":"DOGECOIN","amount":"1","address":"T"}`), "unknown_currency"},
		"bad-account":   {raw("bad-account", `{"intentId":"bad-account","account":"other","currency":"USDT_TRX","amount":"1","address":"T"}`), "unknown_account"},
		"bad-address":   {raw("bad-address", `{"intentId":"bad-address","account":"acct","currency":"USDT_TRX","amount":"1","address":""}`), "schema"},
		"bad-key":       {raw("bad-key", `{"intentId":"another-id","account":"acct","currency":"USDT_TRX","amount":"1","address":"T"}`), "key_mismatch"},
		"bad-oversized": {raw("bad-oversized", `{"intentId":"bad-oversized","account":"acct","currency":"USDT_TRX","amount":"1","address":"T","comment":"`+strings.Repeat("x", 3000)+`"}`), "oversized"},
	}
	var recs []*kgo.Record
	for i := range 5 {
		recs = append(recs, good(fmt.Sprintf("good-%d", i)))
	}
	for _, b := range bad {
		recs = append(recs, b.rec)
	}
	for i := 5; i < 10; i++ {
		recs = append(recs, good(fmt.Sprintf("good-%d", i)))
	}
	e.produceRaw(recs...)

	dead := dlq.waitFor(t, time.Minute, "every bad record in the DLQ", func(r []*kgo.Record) bool { return len(r) >= len(bad) })
	reasons := dlqReasons(dead)
	for key, b := range bad {
		if reasons[key] != b.reason {
			t.Errorf("%s: DLQ reason %q, want %q", key, reasons[key], b.reason)
		}
	}
	for _, r := range dead {
		orig := bad[string(r.Key)].rec
		if string(r.Value) != string(orig.Value) {
			t.Errorf("%s: DLQ value changed", r.Key)
		}
		h := map[string]string{}
		for _, x := range r.Headers {
			h[x.Key] = string(x.Value)
		}
		if h["trace"] != "t-"+string(r.Key) || h["payoutd-dlq-error"] == "" || h["payoutd-dlq-source-topic"] != e.topics.Requests ||
			h["payoutd-dlq-source-partition"] != "0" || h["payoutd-dlq-source-offset"] == "" {
			t.Errorf("%s: DLQ headers %v", r.Key, h)
		}
	}
	paid := out.waitFor(t, time.Minute, "the good intents batched", func(r []*kgo.Record) bool { return itemCount(batches(t, r)) >= 10 })
	if n := itemCount(batches(t, paid)); n != 10 {
		t.Fatalf("%d intents batched, want the 10 good ones", n)
	}
}

func TestBatcherPaysDuplicatesOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	out := e.follow(e.topics.Batches)
	dlq := e.follow(e.topics.DLQ)
	var in []events.PayoutRequested
	for i := range 50 {
		in = append(in, intent(fmt.Sprintf("dup-%02d", i), "acct", "BTC", "0.00000001", fmt.Sprintf("bc1q%02d", i)))
	}
	batchedIDs := func(r []*kgo.Record) map[string]int {
		n := map[string]int{}
		for _, b := range batches(t, r) {
			for _, it := range b.Items {
				n[it.IntentID]++
			}
		}
		return n
	}

	// Same window: each intent twice in a row.
	stop := runComponent(t, newBatcher(t, e, nil).Run)
	var twice []events.PayoutRequested
	for _, p := range in[:20] {
		twice = append(twice, p, p)
	}
	e.produce(twice...)
	out.waitFor(t, time.Minute, "first 20 batched", func(r []*kgo.Record) bool { return len(batchedIDs(r)) >= 20 })

	// Across windows: the same 20 again, plus 15 new ones.
	e.produce(in[:35]...)
	out.waitFor(t, time.Minute, "35 batched", func(r []*kgo.Record) bool { return len(batchedIDs(r)) >= 35 })

	// Across a restart: a new batcher rebuilds its index from the intents topic.
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	runComponent(t, newBatcher(t, e, nil).Run)
	e.produce(in...)
	out.waitFor(t, time.Minute, "all 50 batched", func(r []*kgo.Record) bool { return len(batchedIDs(r)) >= 50 })
	// 20 in the same window, 20 across windows, 35 across the restart.
	dead := dlq.waitFor(t, time.Minute, "75 duplicates in the DLQ", func(r []*kgo.Record) bool { return len(r) >= 75 })
	for _, r := range dead {
		if reason := dlqReasons([]*kgo.Record{r})[string(r.Key)]; reason != "duplicate" {
			t.Fatalf("%s in DLQ for %q", r.Key, reason)
		}
	}
	for id, n := range batchedIDs(out.snapshot()) {
		if n != 1 {
			t.Fatalf("intent %s batched %d times", id, n)
		}
	}
	if n := len(dlq.snapshot()); n != 75 {
		t.Fatalf("%d records in the DLQ, want 75", n)
	}
}

func TestBatcherShutdownClosesTheOpenWindow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	out := e.follow(e.topics.Batches)
	b := newBatcher(t, e, func(c *pipeline.BatcherConfig) { c.MaxWait = time.Hour })
	stop := runComponent(t, b.Run)
	var in []events.PayoutRequested
	for i := range 10 {
		in = append(in, intent(fmt.Sprintf("shut-%d", i), "acct", "TRX", "1", fmt.Sprintf("T%d", i)))
	}
	e.produce(in...)
	deadline := time.Now().Add(time.Minute)
	for b.Stats.Buffered.Load() < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("window holds %d records, want 10", b.Stats.Buffered.Load())
		}
		time.Sleep(10 * time.Millisecond) // polling a gauge, not hoping for timing
	}
	if got := len(out.snapshot()); got != 0 {
		t.Fatalf("%d batches before shutdown with an hour-long window", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	recs := out.waitFor(t, time.Minute, "the open window written at shutdown", func(r []*kgo.Record) bool { return itemCount(batches(t, r)) >= 10 })
	checkBatches(t, batches(t, recs), map[string]int{"TRX": 100})
}

func TestBatcherCountsDLQByReason(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	dlq := e.follow(e.topics.DLQ)
	b := newBatcher(t, e, nil)
	runComponent(t, b.Run)
	p := intent("by-reason-1", "acct", "BTC", "0.1", "bc1")
	e.produce(p, p)
	e.produceRaw(&kgo.Record{Key: []byte("x"), Value: []byte("not json")})
	dlq.waitFor(t, time.Minute, "two DLQ records", func(r []*kgo.Record) bool { return len(r) >= 2 })
	deadline := time.Now().Add(time.Minute)
	for b.Stats.DLQ.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // the counters follow the commit the reader saw
	}
	for reason, want := range map[pipeline.Reason]int64{pipeline.ReasonDuplicate: 1, pipeline.ReasonMalformed: 1, pipeline.ReasonSchema: 0} {
		if got := b.Stats.DLQBy[reason].Load(); got != want {
			t.Errorf("DLQ %s: %d, want %d", reason, got, want)
		}
	}
}
