package pipeline_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/calypso/sandbox"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
)

func newSubmitter(t *testing.T, e *env, w *calypsoWorld, mod func(*pipeline.SubmitterConfig)) *pipeline.Submitter {
	t.Helper()
	cfg := pipeline.SubmitterConfig{
		Topics:      e.topics,
		Group:       e.topics.Batches + ".submitter",
		RetryDelay:  100 * time.Millisecond,
		LookupGrace: 2 * time.Second,
		Logger:      testLogger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := pipeline.NewSubmitter(cfg, w.accounts, e.seeds...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// outcomes decodes the outcome topic's events by type.
func outcomes(t *testing.T, recs []*kgo.Record) map[events.Type][]events.Event {
	t.Helper()
	out := map[events.Type][]events.Event{}
	for _, r := range recs {
		m, e, err := events.Decode(r)
		if err != nil {
			t.Fatalf("outcome record: %v", err)
		}
		out[m.Type] = append(out[m.Type], e)
	}
	return out
}

// settledBatches is the set of batch ids with a PayoutSubmitted or PayoutRejected.
func settledBatches(t *testing.T, recs []*kgo.Record) map[string]bool {
	out := map[string]bool{}
	for typ, evs := range outcomes(t, recs) {
		for _, e := range evs {
			switch typ {
			case events.TypePayoutSubmitted:
				out[e.(events.PayoutSubmitted).BatchID] = true
			case events.TypePayoutRejected:
				out[e.(events.PayoutRejected).BatchID] = true
			}
		}
	}
	return out
}

// requirePaidOnce checks the invariants at Calypso: every batch created
// exactly once, every intent in exactly one payout, totals exact.
func requirePaidOnce(t *testing.T, w *calypsoWorld, bs []events.BatchPlanned, wantIntents int) {
	t.Helper()
	byKey := map[string]events.BatchPlanned{}
	for _, b := range bs {
		byKey[b.IdempotencyKey] = b
	}
	payouts := w.sb.Payouts()
	perKey := map[string]int{}
	for _, p := range payouts {
		perKey[p.IdempotencyKey]++
	}
	for _, b := range bs {
		if n := perKey[b.IdempotencyKey]; n != 1 {
			t.Fatalf("batch %s is in %d payouts at Calypso", b.BatchID, n)
		}
	}
	for _, p := range payouts {
		b, ok := byKey[p.IdempotencyKey]
		if !ok {
			t.Fatalf("payout %s has no planned batch", p.ID)
		}
		if !p.Total.Decimal().Equal(b.Total.Decimal()) || len(p.Items) != len(b.Items) || p.Currency != b.Currency || p.Account != b.Account {
			t.Fatalf("payout %s (%s %s %d items) differs from batch %s (%s %s %d items)",
				p.ID, p.Total, p.Currency, len(p.Items), b.BatchID, b.Total, b.Currency, len(b.Items))
		}
	}
	in := w.payoutsByIntent()
	if len(in) != wantIntents {
		t.Fatalf("%d intents paid at Calypso, want %d", len(in), wantIntents)
	}
	for id, ps := range in {
		if len(ps) != 1 {
			t.Fatalf("intent %s is in payouts %v", id, ps)
		}
	}
}

func TestPipelinePaysTenThousandIntentsOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 3)
	accounts := []string{"acct-1", "acct-2", "acct-3"}
	currencies := []string{"USDT_TRX", "BTC", "ETH", "USDT"}
	w := newCalypso(t, accounts, currencies, "1000000000", nil)
	batchLog := e.follow(e.topics.Batches)
	outLog := e.follow(e.topics.Outcomes)
	runComponent(t, newBatcher(t, e, nil).Run)
	runComponent(t, newSubmitter(t, e, w, nil).Run)

	const n = 10_000
	var in []events.PayoutRequested
	for i := range n {
		cur := currencies[i%4]
		amount := fmt.Sprintf("%d.%02d", 1+i%97, i%100)
		if cur == "BTC" {
			amount = fmt.Sprintf("0.%08d", 1+i)
		}
		// Some addresses repeat within a group: they must land in different batches.
		in = append(in, intent(fmt.Sprintf("happy-%05d", i), accounts[(i/4)%3], cur, amount, fmt.Sprintf("addr-%d", i%3001)))
	}
	e.produce(in...)

	recs := batchLog.waitFor(t, 2*time.Minute, "all intents batched", func(r []*kgo.Record) bool {
		return itemCount(batches(t, r)) >= n
	})
	bs := batches(t, recs)
	checkBatches(t, bs, map[string]int{"USDT_TRX": 100, "BTC": 100, "ETH": 1000, "USDT": 1000})
	outLog.waitFor(t, 2*time.Minute, "a PayoutSubmitted per batch", func(r []*kgo.Record) bool {
		return len(settledBatches(t, r)) >= len(bs)
	})
	subs := outcomes(t, outLog.snapshot())[events.TypePayoutSubmitted]
	if len(subs) != len(bs) {
		t.Fatalf("%d PayoutSubmitted for %d batches", len(subs), len(bs))
	}
	requirePaidOnce(t, w, bs, n)
	t.Logf("%d intents in %d batches over %d groups", n, len(bs), 12)
}

func TestCrashesPayEveryIntentOnce(t *testing.T) {
	t.Parallel()
	for _, point := range []pipeline.CrashPoint{pipeline.CrashWindowOpen, pipeline.CrashMidTxn, pipeline.CrashAfterCommit, pipeline.CrashAfterCreate} {
		t.Run(string(point), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, 2)
			w := newCalypso(t, []string{"acct"}, []string{"USDT_TRX"}, "1000000", nil)
			batchLog := e.follow(e.topics.Batches)
			outLog := e.follow(e.topics.Outcomes)

			// Stable transactional ids: the restarted instance fences its
			// predecessor's open transaction, as a restarted pod would.
			bcfg := func(c *pipeline.BatcherConfig) { c.TransactionalID = e.topics.Requests + ".b1" }
			scfg := func(c *pipeline.SubmitterConfig) { c.TransactionalID = e.topics.Batches + ".s1" }
			b, s := newBatcher(t, e, bcfg), newSubmitter(t, e, w, scfg)
			if point == pipeline.CrashAfterCreate {
				s.CrashAt(point)
			} else {
				b.CrashAt(point)
			}
			bDone, sDone := make(chan error, 1), make(chan error, 1)
			stopB := runComponent(t, func(ctx context.Context) error { err := b.Run(ctx); bDone <- err; return err })
			stopS := runComponent(t, func(ctx context.Context) error { err := s.Run(ctx); sDone <- err; return err })

			var in []events.PayoutRequested
			for i := range 300 {
				in = append(in, intent(fmt.Sprintf("crash-%s-%03d", point, i), "acct", "USDT_TRX", "2.5", fmt.Sprintf("T%03d", i)))
			}
			e.produce(in...)

			// Wait for the crash, then restart the crashed component.
			select {
			case err := <-bDone:
				if err != pipeline.ErrCrashed {
					t.Fatalf("batcher ended with %v", err)
				}
				_ = stopB()
				runComponent(t, newBatcher(t, e, bcfg).Run)
			case err := <-sDone:
				if err != pipeline.ErrCrashed {
					t.Fatalf("submitter ended with %v", err)
				}
				_ = stopS()
				runComponent(t, newSubmitter(t, e, w, scfg).Run)
			case <-time.After(time.Minute):
				t.Fatal("no crash within a minute")
			}

			recs := batchLog.waitFor(t, 2*time.Minute, "every intent batched", func(r []*kgo.Record) bool {
				return itemCount(batches(t, r)) >= len(in)
			})
			bs := batches(t, recs)
			checkBatches(t, bs, map[string]int{"USDT_TRX": 100})
			outLog.waitFor(t, 2*time.Minute, "every batch submitted", func(r []*kgo.Record) bool {
				return len(settledBatches(t, r)) >= len(bs)
			})
			requirePaidOnce(t, w, bs, len(in))
		})
	}
}

func TestCalypsoFaultsAreRetriedAndPaidOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	w := newCalypso(t, []string{"acct"}, []string{"BTC"}, "1000", func(c *sandbox.Config) {
		c.Faults = sandbox.Faults{Seed: 7, API5xx: 0.15, API429: 0.15, ConnReset: 0.1, LostResponse: 0.1, SlowResponse: 0.05, SlowDelay: 300 * time.Millisecond}
	})
	// Slow answers outlast a 150ms attempt: the client times out and tries again.
	w.connect(t, []string{"acct"}, 150*time.Millisecond)
	batchLog := e.follow(e.topics.Batches)
	outLog := e.follow(e.topics.Outcomes)
	runComponent(t, newBatcher(t, e, nil).Run)
	s := newSubmitter(t, e, w, func(c *pipeline.SubmitterConfig) { c.CheckBalance = true; c.PrecalculateFees = true })
	runComponent(t, s.Run)

	var in []events.PayoutRequested
	for i := range 1000 {
		in = append(in, intent(fmt.Sprintf("fault-%04d", i), "acct", "BTC", "0.0001", fmt.Sprintf("bc1q%04d", i)))
	}
	e.produce(in...)
	bs := batches(t, batchLog.waitFor(t, time.Minute, "all batched", func(r []*kgo.Record) bool { return itemCount(batches(t, r)) >= len(in) }))
	outLog.waitFor(t, 2*time.Minute, "every batch submitted", func(r []*kgo.Record) bool { return len(settledBatches(t, r)) >= len(bs) })
	if n := len(outcomes(t, outLog.snapshot())[events.TypePayoutRejected]); n != 0 {
		t.Fatalf("%d batches rejected under transient faults", n)
	}
	requirePaidOnce(t, w, bs, len(in))
	faults := 0
	for path, outcomes := range w.sb.Requests() {
		for outcome, n := range outcomes {
			if strings.HasPrefix(outcome, "fault:") {
				faults += n
				t.Logf("%s %s: %d", path, outcome, n)
			}
		}
	}
	if faults < 10 {
		t.Fatalf("only %d faults injected; the test proves little", faults)
	}
	t.Logf("submitter waited out %d failed calls, recovered %d creates by idempotency key", s.Stats.CalypsoErrs.Load(), s.Stats.Recovered.Load())
}

func TestPermanentRejectionFailsEveryIntent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	// Calypso allows one recipient per USDT_TRX payout, payoutd plans 100:
	// every create is refused with 001, for good.
	w := newCalypso(t, []string{"acct"}, []string{"USDT_TRX"}, "1000", func(c *sandbox.Config) {
		c.Currencies = map[string]calypso.CurrencyRule{"USDT_TRX": {Decimals: 6, MaxItems: 1}}
	})
	outLog := e.follow(e.topics.Outcomes)
	intents := e.follow(e.topics.Intents)
	runComponent(t, newBatcher(t, e, nil).Run)
	runComponent(t, newSubmitter(t, e, w, nil).Run)

	e.produce(intent("rej-1", "acct", "USDT_TRX", "1", "Ta"), intent("rej-2", "acct", "USDT_TRX", "2", "Tb"))
	recs := outLog.waitFor(t, time.Minute, "rejection and two failed intents", func(r []*kgo.Record) bool {
		o := outcomes(t, r)
		return len(o[events.TypePayoutRejected]) == 1 && len(o[events.TypeIntentFailed]) == 2
	})
	rej := outcomes(t, recs)[events.TypePayoutRejected][0].(events.PayoutRejected)
	if rej.Code != "001" || rej.ItemCount != 2 || !rej.Total.Equal(events.MustAmount("3")) {
		t.Fatalf("rejection %+v", rej)
	}
	intents.waitFor(t, time.Minute, "both intents FAILED", func(r []*kgo.Record) bool {
		failed := 0
		for _, x := range r {
			_, ev, _ := events.Decode(x)
			if st, ok := ev.(events.IntentState); ok && st.State == events.StatusFailed && st.Code == "001" {
				failed++
			}
		}
		return failed == 2
	})
	if len(w.sb.Payouts()) != 0 {
		t.Fatal("a rejected batch was paid")
	}
}

func TestUnfundedCurrencyIsDeferredWithoutBlockingOthers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)                                                       // one partition: the deferred batch sits in front of the others
	w := newCalypso(t, []string{"acct"}, []string{"USDT_TRX"}, "1000", nil) // no BTC balance
	outLog := e.follow(e.topics.Outcomes)
	runComponent(t, newBatcher(t, e, nil).Run)
	s := newSubmitter(t, e, w, func(c *pipeline.SubmitterConfig) {
		c.CheckBalance = true
		c.DeferDelay = 200 * time.Millisecond
		c.MaxDeferDelay = 400 * time.Millisecond
	})
	runComponent(t, s.Run)

	e.produce(intent("unfunded-1", "acct", "BTC", "0.5", "bc1a"), intent("unfunded-2", "acct", "BTC", "0.25", "bc1b"))
	outLog.waitFor(t, time.Minute, "the BTC batch deferred", func(r []*kgo.Record) bool {
		return len(outcomes(t, r)[events.TypePayoutDeferred]) >= 1
	})
	e.produce(intent("funded-1", "acct", "USDT_TRX", "7", "Tz"))
	outLog.waitFor(t, time.Minute, "the USDT_TRX batch submitted while BTC waits", func(r []*kgo.Record) bool {
		for _, ev := range outcomes(t, r)[events.TypePayoutSubmitted] {
			if ev.(events.PayoutSubmitted).Currency == "USDT_TRX" {
				return true
			}
		}
		return false
	})
	if p := w.payoutsByIntent(); len(p["unfunded-1"]) != 0 {
		t.Fatal("unfunded batch paid before funding")
	}

	// Funds arrive: the BTC batch goes through, once.
	if err := w.sb.SetBalance("acct", "BTC", calypso.MustParseAmount("1")); err != nil {
		t.Fatal(err)
	}
	outLog.waitFor(t, time.Minute, "the BTC batch submitted", func(r []*kgo.Record) bool {
		for _, ev := range outcomes(t, r)[events.TypePayoutSubmitted] {
			if ev.(events.PayoutSubmitted).Currency == "BTC" {
				return true
			}
		}
		return false
	})
	paid := w.payoutsByIntent()
	for _, id := range []string{"unfunded-1", "unfunded-2", "funded-1"} {
		if len(paid[id]) != 1 {
			t.Fatalf("intent %s in payouts %v", id, paid[id])
		}
	}
	d := outcomes(t, outLog.snapshot())[events.TypePayoutDeferred][0].(events.PayoutDeferred)
	if d.Reason != events.DeferInsufficientBalance || !d.Required.Equal(events.MustAmount("0.75")) || d.Attempt != 1 {
		t.Fatalf("deferral %+v", d)
	}
}

func TestRebalancesMidStreamPayOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 4)
	w := newCalypso(t, []string{"acct"}, []string{"USDT_TRX", "TRX"}, "100000000", nil)
	batchLog := e.follow(e.topics.Batches)
	outLog := e.follow(e.topics.Outcomes)
	b1, s1 := newBatcher(t, e, nil), newSubmitter(t, e, w, nil)
	stopB1, stopS1 := runComponent(t, b1.Run), runComponent(t, s1.Run)

	var in []events.PayoutRequested
	for i := range 3000 {
		in = append(in, intent(fmt.Sprintf("reb-%04d", i), "acct", []string{"USDT_TRX", "TRX"}[i%2], "0.5", fmt.Sprintf("T%04d", i)))
	}
	// Each phase sends a third of the intents plus the previous phase's again.
	e.produce(in[:1000]...)
	runComponent(t, newBatcher(t, e, nil).Run)
	runComponent(t, newSubmitter(t, e, w, nil).Run)
	e.produce(in[:2000]...)
	batchLog.waitFor(t, time.Minute, "the second third batched", func(r []*kgo.Record) bool { return itemCount(batches(t, r)) >= 2000 })
	if err := stopB1(); err != nil {
		t.Fatal(err)
	}
	if err := stopS1(); err != nil {
		t.Fatal(err)
	}
	e.produce(in[1000:]...)

	bs := batches(t, batchLog.waitFor(t, 2*time.Minute, "all batched", func(r []*kgo.Record) bool { return itemCount(batches(t, r)) >= len(in) }))
	checkBatches(t, bs, map[string]int{"USDT_TRX": 100, "TRX": 100})
	outLog.waitFor(t, 2*time.Minute, "every batch submitted", func(r []*kgo.Record) bool { return len(settledBatches(t, r)) >= len(bs) })
	requirePaidOnce(t, w, bs, len(in))
}

// Invariant 5: a batch whose total is not its items' sum is never paid; it
// goes to the DLQ, and the batches behind it are paid.
func TestSubmitterNeverPaysABatchWhoseTotalIsWrong(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	w := newCalypso(t, []string{"acct"}, []string{"TRX"}, "1000", nil)
	outLog := e.follow(e.topics.Outcomes)
	dlq := e.follow(e.topics.DLQ)
	runComponent(t, newSubmitter(t, e, w, nil).Run)

	batch := func(id string, total string) *kgo.Record {
		b := events.BatchPlanned{BatchID: id, IdempotencyKey: id, Account: "acct", Currency: "TRX", PlannedAt: time.Now(),
			Items: []events.BatchItem{
				{IntentID: id + "-a", Address: "Ta", Amount: events.MustAmount("1"), Source: events.Offset{Topic: "t"}},
				{IntentID: id + "-b", Address: "Tb", Amount: events.MustAmount("2"), Source: events.Offset{Topic: "t", Offset: 1}},
			}, Total: events.MustAmount(total)}
		r, err := events.NewRecord(e.topics.Batches, "test", b)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	const bad, good = "00000000-0000-4000-8000-0000000000ba", "00000000-0000-4000-8000-000000000090"
	cl := e.cluster.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.ProduceSync(ctx, batch(bad, "30"), batch(good, "3")).FirstErr(); err != nil {
		t.Fatal(err)
	}
	dead := dlq.waitFor(t, time.Minute, "the bad batch in the DLQ", func(r []*kgo.Record) bool { return len(r) >= 1 })
	if reason := dlqReasons(dead)[bad]; reason != string(pipeline.ReasonBadBatch) {
		t.Fatalf("DLQ reason %q", reason)
	}
	outLog.waitFor(t, time.Minute, "the good batch submitted", func(r []*kgo.Record) bool { return settledBatches(t, r)[good] })
	if settledBatches(t, outLog.snapshot())[bad] {
		t.Fatal("the bad batch has an outcome")
	}
	if _, ok := w.sb.PayoutByIdempotencyKey(bad); ok {
		t.Fatal("the bad batch was paid")
	}
}
