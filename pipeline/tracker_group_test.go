package pipeline_test

import (
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso/sandbox"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
)

// Several tracker instances share the outcomes topic's partitions; while
// payouts flow (webhooks dropped, duplicated, reordered), instances join and
// leave, so partitions move between them mid-stream with their stores.
// Every payout and every intent is resolved exactly once — counted in
// records, not just ids — and as Calypso says.
func TestTrackerInstancesSharePartitionsAndResolveOnce(t *testing.T) {
	t.Parallel()
	w := newWebhookWorld(t, worldOptions{sandbox: func(c *sandbox.Config) {
		c.Faults = sandbox.Faults{Seed: 12, DropWebhook: 0.3, DuplicateWebhook: 0.2, ReorderWebhook: 0.2,
			Outcomes: sandbox.OutcomeMix{Completed: 0.5, Partial: 0.3, Failed: 0.2}}
	}})
	set := mustSchemas(t)
	group := w.topics.Outcomes + ".tracker"
	instance := func(name string) (*pipeline.Tracker, func() error) {
		tr, err := pipeline.NewTracker(pipeline.TrackerConfig{Topics: w.topics, Group: group, TransactionalID: group + "-" + name,
			PollAfter: 300 * time.Millisecond, RetryDelay: 50 * time.Millisecond, MaxRetryDelay: 2 * time.Second, Workers: 4, Logger: testLogger(t)},
			pipeline.Accounts{whAccount: w.client}, w.seeds...)
		if err != nil {
			t.Fatal(err)
		}
		return tr, runComponent(t, tr.Run)
	}
	a, stopA := instance("a")
	b, stopB := instance("b")
	trackers := []*pipeline.Tracker{a, b}

	const payouts = 60
	var (
		mu      sync.Mutex
		batches = map[string]events.BatchPlanned{} // by payout id
	)
	create := func(from, to int) {
		var wg sync.WaitGroup
		next := make(chan int)
		for range 4 {
			wg.Go(func() {
				for i := range next {
					bp, id := w.payout(t, i%3+1, "")
					mu.Lock()
					batches[id] = bp
					mu.Unlock()
				}
			})
		}
		for i := from; i < to; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	resolved := func(recs []*kgo.Record) int {
		ids, _ := intentOutcomes(decodeAll(t, set, recs))
		return len(ids)
	}

	create(0, 20)
	c, stopC := instance("c") // partitions move to the newcomer
	trackers = append(trackers, c)
	create(20, 40)
	w.outcomes.waitFor(t, time.Minute, "some intents resolved", func(recs []*kgo.Record) bool { return resolved(recs) > 10 })
	if err := stopA(); err != nil { // and away from a leaver
		t.Fatal(err)
	}
	create(40, 50)
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	d, _ := instance("d")
	trackers = append(trackers, d)
	create(50, payouts)

	intents := 0
	for _, bp := range batches {
		intents += len(bp.Items)
	}
	deadline := time.Now().Add(2 * time.Minute)
	w.outcomes.waitFor(t, 3*time.Minute, "every intent resolved", func(recs []*kgo.Record) bool {
		if resolved(recs) == intents {
			return true
		}
		if time.Now().Before(deadline) {
			return false
		}
		// Say what is stuck before failing.
		ids, _ := intentOutcomes(decodeAll(t, set, recs))
		for id, bp := range batches {
			if len(ids[bp.Items[0].IntentID]) == 0 {
				p, _ := w.sb.Payout(id)
				t.Logf("payout %s (batch %s) unresolved; Calypso says %s", id, bp.BatchID, p.State)
			}
		}
		for i, tr := range trackers {
			t.Logf("tracker %d: open %d, partitions %d, errors %d, aborts %d", i, tr.Stats.Open.Load(), tr.Stats.Partitions.Load(),
				tr.Stats.Errors.Load(), tr.Stats.Aborts.Load())
		}
		t.FailNow()
		return false
	})
	fb := fence(t, w)
	recs := w.outcomes.waitFor(t, time.Minute, "the fence resolved", func(recs []*kgo.Record) bool {
		ids, _ := intentOutcomes(decodeAll(t, set, recs))
		return len(ids[fb.Items[0].IntentID]) > 0
	})
	_ = stopC

	ds := decodeAll(t, set, recs)
	records := map[string]int{}
	for _, d := range ds {
		switch e := d.ev.(type) {
		case events.IntentSettled:
			records[e.IntentID]++
		case events.IntentFailed:
			records[e.IntentID]++
		}
	}
	terms, states, _ := payoutTerminals(ds)
	_, last := intentOutcomes(ds)
	for id, bp := range batches {
		p, _ := w.sb.Payout(id)
		if len(terms[id]) != 1 || states[id] != p.State {
			t.Fatalf("payout %s: %d distinct terminal events, ended %s, Calypso says %s", id, len(terms[id]), states[id], p.State)
		}
		failed := map[string]bool{}
		for _, it := range p.Items {
			failed[it.Comment] = it.State == "FAILED"
		}
		for _, it := range bp.Items {
			if records[it.IntentID] != 1 {
				t.Fatalf("intent %s has %d outcome records", it.IntentID, records[it.IntentID])
			}
			if _, f := last[it.IntentID].(events.IntentFailed); f != failed[it.IntentID] {
				t.Fatalf("intent %s of %s payout %s: failed=%v, Calypso says %v", it.IntentID, p.State, id, f, failed[it.IntentID])
			}
		}
	}
	assertStatesForward(t, intentStates(t, w.intents.snapshot()))
	var resolvedBy []int64
	var restores int64
	for _, tr := range trackers {
		resolvedBy = append(resolvedBy, tr.Stats.Resolved.Load())
		restores += tr.Stats.Restores.Load()
	}
	t.Logf("%d payouts, %d intents; resolved per instance %v; %d restores", payouts, intents, resolvedBy, restores)
}
