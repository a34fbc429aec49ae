package pipeline_test

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/calypso/sandbox"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
)

// payoutTerminals returns, per payout, the distinct ce_ids of its terminal
// status events and whether one came from a poll.
func payoutTerminals(ds []decoded) (ids map[string]map[string]bool, states map[string]calypso.State, polled map[string]bool) {
	ids, states, polled = map[string]map[string]bool{}, map[string]calypso.State{}, map[string]bool{}
	for _, d := range ds {
		st, ok := events.StatusOf(d.ev)
		if !ok || !st.Terminal {
			continue
		}
		if ids[st.PayoutID] == nil {
			ids[st.PayoutID] = map[string]bool{}
		}
		ids[st.PayoutID][d.meta.ID] = true
		states[st.PayoutID] = calypso.State(st.State)
		if st.Source == events.FromPoll {
			polled[st.PayoutID] = true
		}
	}
	return ids, states, polled
}

// With webhooks dropped, duplicated and reordered over 200 payouts, every
// payout and every intent reaches exactly one terminal outcome, the
// dropped ones through polling, and each matches what Calypso did.
func TestTrackerFaultsEveryPayoutAndIntentResolvedOnce(t *testing.T) {
	t.Parallel()
	w := newWebhookWorld(t, worldOptions{
		pollAfter: time.Second,
		sandbox: func(c *sandbox.Config) {
			c.Faults = sandbox.Faults{
				Seed: 5, DropWebhook: 0.3, DuplicateWebhook: 0.3, ReorderWebhook: 0.3,
				Outcomes: sandbox.OutcomeMix{Completed: 0.6, Partial: 0.2, Failed: 0.2},
			}
		},
	})
	set := mustSchemas(t)

	const payouts = 200
	var (
		mu      sync.Mutex
		batches = map[string]events.BatchPlanned{} // by payout id
		wg      sync.WaitGroup
		next    = make(chan int)
	)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				b, id := w.payout(t, i%3+1, "")
				mu.Lock()
				batches[id] = b
				mu.Unlock()
			}
		})
	}
	for i := range payouts {
		next <- i
	}
	close(next)
	wg.Wait()
	intents := 0
	for _, b := range batches {
		intents += len(b.Items)
	}

	created := time.Now()
	t.Logf("%d payouts created", payouts)
	w.outcomes.waitFor(t, 90*time.Second, "every payout and intent resolved", func(recs []*kgo.Record) bool {
		ds := decodeAll(t, set, recs)
		ids, _ := intentOutcomes(ds)
		terms, _, _ := payoutTerminals(ds)
		return len(ids) == intents && len(terms) == payouts
	})
	resolved := time.Since(created)
	// Let every webhook that is not dropped arrive too, duplicates and late
	// ones included, so they are counted below.
	var sent []sandbox.WebhookRecord
	waitUntil(t, 90*time.Second, "every webhook delivered or dropped", func() bool {
		sent = w.sb.Webhooks()
		for _, h := range sent {
			if !h.Delivered && !h.Dropped {
				return false
			}
		}
		return true
	})
	var delivered int
	for _, h := range sent {
		if h.Delivered {
			delivered++
		}
	}
	recs := w.raw.waitFor(t, 30*time.Second, "every delivered webhook archived", func(r []*kgo.Record) bool { return len(rawIDs(t, r)) == delivered })
	t.Logf("resolved %v after creation; %d webhooks, %d delivered (%d deliveries archived)", resolved, len(sent), delivered, len(recs))
	ds := decodeAll(t, set, w.outcomes.snapshot())
	terms, states, polled := payoutTerminals(ds)
	ids, last := intentOutcomes(ds)

	// What Calypso did, and which terminal webhooks never arrived.
	droppedTerminal := map[string]bool{}
	for _, h := range sent {
		if h.State.Terminal() && h.Dropped {
			droppedTerminal[h.PayoutID] = true
		}
	}
	if len(droppedTerminal) == 0 {
		t.Fatal("no terminal webhook was dropped: the test proves nothing about polling")
	}
	for id, b := range batches {
		p, _ := w.sb.Payout(id)
		if len(terms[id]) != 1 {
			t.Fatalf("payout %s has %d distinct terminal events", id, len(terms[id]))
		}
		if states[id] != p.State {
			t.Fatalf("payout %s ended %s, Calypso says %s", id, states[id], p.State)
		}
		if droppedTerminal[id] && !polled[id] {
			t.Fatalf("payout %s: terminal webhook dropped, yet no poll found it", id)
		}
		failed := map[string]bool{}
		for _, it := range p.Items {
			failed[it.DepositAddress] = it.State == "FAILED"
		}
		for _, it := range b.Items {
			if n := len(ids[it.IntentID]); n != 1 {
				t.Fatalf("intent %s has %d distinct outcomes", it.IntentID, n)
			}
			_, isFailed := last[it.IntentID].(events.IntentFailed)
			if isFailed != failed[it.Address] {
				t.Fatalf("intent %s of %s payout %s: failed=%v, Calypso says failed=%v", it.IntentID, p.State, id, isFailed, failed[it.Address])
			}
		}
	}
	st := &w.tracker.Stats
	t.Logf("%d payouts (%d terminal webhooks dropped), %d intents; tracker: %d polls, %d polled states, %d resolved; ingress: %d ok, %d commits",
		payouts, len(droppedTerminal), intents, st.Polls.Load(), st.Polled.Load(), st.Resolved.Load(), w.ingress.Stats.OK.Load(), w.ingress.Stats.Commits.Load())
}

// A tracker restarted half-way rebuilds its state from Kafka and resolves
// the rest: no intent is lost, none resolved twice (counting records, not
// just ids). Late and repeated states change nothing downstream.
func TestTrackerRestartNeitherLosesNorDuplicates(t *testing.T) {
	t.Parallel()
	w := newWebhookWorld(t, worldOptions{}) // the tracker is started below, twice
	set := mustSchemas(t)
	newTracker := func() *pipeline.Tracker {
		tr, err := pipeline.NewTracker(pipeline.TrackerConfig{
			Topics: w.topics, TransactionalID: w.topics.Outcomes + ".tracker", PollAfter: 200 * time.Millisecond, Logger: testLogger(t),
		}, pipeline.Accounts{whAccount: w.client}, w.seeds...)
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	countOutcomes := func(recs []*kgo.Record) map[string]int {
		n := map[string]int{}
		for _, d := range decodeAll(t, set, recs) {
			switch e := d.ev.(type) {
			case events.IntentSettled:
				n[e.IntentID]++
			case events.IntentFailed:
				n[e.IntentID]++
			}
		}
		return n
	}

	first := newTracker()
	stop := runComponent(t, first.Run)
	var all []events.BatchPlanned
	for i := range 10 {
		b, _ := w.payout(t, 2, []calypso.State{calypso.StateCompleted, calypso.StatePartial, calypso.StateFailed}[i%3])
		all = append(all, b)
	}
	w.outcomes.waitFor(t, time.Minute, "a few intents resolved", func(recs []*kgo.Record) bool { return len(countOutcomes(recs)) >= 4 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		b, _ := w.payout(t, 2, []calypso.State{calypso.StateCompleted, calypso.StatePartial, calypso.StateFailed}[i%3])
		all = append(all, b)
	}

	second := newTracker()
	runComponent(t, second.Run)
	w.outcomes.waitFor(t, time.Minute, "every intent resolved", func(recs []*kgo.Record) bool { return len(countOutcomes(recs)) == 2*len(all) })
	if second.Stats.Restores.Load() == 0 {
		t.Fatal("the second tracker restored no state store at start")
	}

	// Late states: an IN_PROGRESS after COMPLETED, and COMPLETED again under
	// a new envelope id, for a payout already resolved.
	p := w.sb.Payouts()[0]
	hooks := httptest.NewServer(w.ingress)
	defer hooks.Close()
	for i, st := range []string{"IN_PROGRESS", "COMPLETED"} {
		body := webhookBody(900000+i, calypso.EventPayoutChangeStatus, p.ID, st, p.IdempotencyKey)
		resp, err := http.DefaultClient.Do(signedReq(t, hooks.URL+pipeline.WebhookPath, body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("late webhook: %d", resp.StatusCode)
		}
	}
	// A fresh payout fences the check: when it is resolved, the tracker has
	// read the late webhooks too.
	fence, _ := w.payout(t, 1, calypso.StateCompleted)
	recs := w.outcomes.waitFor(t, time.Minute, "the fence resolved", func(recs []*kgo.Record) bool {
		return countOutcomes(recs)[fence.Items[0].IntentID] > 0
	})
	for id, n := range countOutcomes(recs) {
		if n != 1 {
			t.Fatalf("intent %s has %d outcome records", id, n)
		}
	}
	// One final state per intent, after its SUBMITTED (when that was
	// written at all), never before it.
	w.intents.waitFor(t, 30*time.Second, "every intent's final state", func(r []*kgo.Record) bool {
		n := 0
		for _, ss := range intentStates(t, r) {
			if ss[len(ss)-1].State.Final() {
				n++
			}
		}
		return n == 2*len(all)+1
	})
	assertStatesForward(t, intentStates(t, w.intents.snapshot()))
	t.Logf("first tracker resolved %d payouts, second %d (after loading %d records)",
		first.Stats.Resolved.Load(), second.Stats.Resolved.Load(), second.Stats.Loaded.Load())
}

func signedReq(t *testing.T, url string, body []byte) *http.Request {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := signed(http.MethodPost, url, body, whPubKey, whSecret)
	s.RequestURI = ""
	s.URL, s.Host = r.URL, r.Host
	return s
}

// A batch Calypso rejected (the submitter wrote PayoutRejected and failed
// its intents) is resolved: the tracker neither polls nor resolves it again.
func TestTrackerTreatsRejectedBatchAsResolved(t *testing.T) {
	t.Parallel()
	w := newWebhookWorld(t, worldOptions{}) // the tracker starts once all is written
	b := events.BatchPlanned{BatchID: "0b5e3c2a-6d4f-4a1b-8c7d-9e0f1a2b3c4d", Account: whAccount, Currency: whCurrency, PlannedAt: time.Now(),
		Items: []events.BatchItem{{IntentID: "rejected-1", Address: "Tr1", Amount: events.MustAmount("1")}}}
	b.IdempotencyKey, b.Total = b.BatchID, b.Sum()
	w.publish(t, w.topics.Batches, b)
	// A terminal status that names the batch, as a stray webhook could: a
	// tracker that ignored the rejection would resolve the batch again.
	w.publish(t, w.topics.Outcomes,
		events.PayoutRejected{BatchID: b.BatchID, Account: whAccount, Currency: whCurrency, ItemCount: 1, Total: b.Total, Code: "001", Message: "no", RejectedAt: time.Now()},
		events.PayoutStatusChanged{PayoutStatus: events.PayoutStatus{PayoutID: "424242", BatchID: b.BatchID, State: "FAILED", Terminal: true, Source: events.FromWebhook, OccurredAt: time.Now()}},
	)
	tr, err := pipeline.NewTracker(pipeline.TrackerConfig{
		Topics: w.topics, TransactionalID: w.topics.Outcomes + ".tracker", PollAfter: 50 * time.Millisecond, Logger: testLogger(t),
	}, pipeline.Accounts{whAccount: w.client}, w.seeds...)
	if err != nil {
		t.Fatal(err)
	}
	runComponent(t, tr.Run)
	fence, _ := w.payout(t, 1, calypso.StateCompleted)
	recs := w.outcomes.waitFor(t, time.Minute, "the fence resolved", func(recs []*kgo.Record) bool {
		ids, _ := intentOutcomes(decodeAll(t, mustSchemas(t), recs))
		return len(ids[fence.Items[0].IntentID]) > 0
	})
	ids, _ := intentOutcomes(decodeAll(t, mustSchemas(t), recs))
	if len(ids["rejected-1"]) != 0 {
		t.Fatal("the tracker resolved a rejected batch")
	}
	if n := tr.Stats.Errors.Load(); n != 0 {
		t.Fatalf("%d tracker errors", n)
	}
}
