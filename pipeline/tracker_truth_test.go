package pipeline_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/calypso/sandbox"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
)

// startTracker runs a tracker on w's topics; mod adjusts its config, client
// (nil: w.client) is the Calypso client it looks up with.
func startTracker(t *testing.T, w *webhookWorld, client *calypso.Client, mod func(*pipeline.TrackerConfig)) *pipeline.Tracker {
	t.Helper()
	if client == nil {
		client = w.client
	}
	cfg := pipeline.TrackerConfig{Topics: w.topics, Group: w.topics.Outcomes + ".tracker", PollAfter: time.Second,
		RetryDelay: 50 * time.Millisecond, MaxRetryDelay: 2 * time.Second, Workers: 8, Logger: testLogger(t)}
	if mod != nil {
		mod(&cfg)
	}
	tr, err := pipeline.NewTracker(cfg, pipeline.Accounts{whAccount: client}, w.seeds...)
	if err != nil {
		t.Fatal(err)
	}
	runComponent(t, tr.Run)
	return tr
}

// createPayout creates a payout of n recipients at the sandbox, as the
// submitter would (row comment = intent id), and publishes its BatchPlanned
// (for trackers that read the batches topic) but not its PayoutSubmitted.
func createPayout(t *testing.T, w *webhookWorld, n int, forced calypso.State) (events.BatchPlanned, *calypso.MassPayout) {
	t.Helper()
	b := events.BatchPlanned{BatchID: uuid.NewString(), Account: whAccount, Currency: whCurrency, PlannedAt: time.Now().UTC()}
	b.IdempotencyKey = b.BatchID
	var items []calypso.MassPayoutItem
	for i := range n {
		amt := fmt.Sprintf("%d.%02d", i+1, i%100)
		// Mixed case, as EIP-55 and base58 addresses are.
		it := events.BatchItem{IntentID: fmt.Sprintf("intent-%s-%d", b.BatchID[:8], i), Address: fmt.Sprintf("TQn%sAbC%d", b.BatchID[:8], i),
			Amount: events.MustAmount(amt), Source: events.Offset{Topic: w.topics.Requests, Offset: int64(i)}}
		b.Items = append(b.Items, it)
		items = append(items, calypso.MassPayoutItem{DepositAddress: it.Address, Amount: calypso.MustParseAmount(amt), Comment: it.IntentID})
	}
	b.Total = b.Sum()
	if forced != "" {
		w.sb.ForceOutcome(b.BatchID, forced)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mp, err := w.client.CreateMassPayout(ctx, calypso.MassPayoutRequest{
		Currency: whCurrency, Name: "batch " + b.BatchID, Items: items, IdempotencyKey: b.BatchID, ExternalID: b.BatchID,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.publish(t, w.topics.Batches, b)
	return b, mp
}

// submitted is the PayoutSubmitted of b as payout payoutID in state.
func submitted(b events.BatchPlanned, payoutID string, state calypso.State) events.PayoutSubmitted {
	return events.PayoutSubmitted{BatchID: b.BatchID, PayoutID: payoutID, IdempotencyKey: b.BatchID, Account: b.Account,
		Currency: b.Currency, ItemCount: len(b.Items), Items: b.Items, Total: b.Total, State: string(state), SubmittedAt: time.Now().UTC()}
}

// alertsOf returns the alerts among ds, by kind.
func alertsOf(ds []decoded) map[events.AlertKind][]events.Alert {
	out := map[events.AlertKind][]events.Alert{}
	for _, d := range ds {
		if a, ok := d.ev.(events.Alert); ok {
			out[a.Kind] = append(out[a.Kind], a)
		}
	}
	return out
}

// intentStates returns each intent's states in the order they were written.
func intentStates(t *testing.T, recs []*kgo.Record) map[string][]events.IntentState {
	t.Helper()
	out := map[string][]events.IntentState{}
	for _, r := range recs {
		_, e, err := events.Decode(r)
		if err != nil {
			t.Fatalf("intents topic: %v", err)
		}
		is := e.(events.IntentState)
		out[is.IntentID] = append(out[is.IntentID], is)
	}
	return out
}

// assertStatesForward fails when an intent's state ever moves backwards or
// out of a final state (a repeat of the same state is harmless).
func assertStatesForward(t *testing.T, states map[string][]events.IntentState) {
	t.Helper()
	for id, ss := range states {
		for i := 1; i < len(ss); i++ {
			if ss[i].State != ss[i-1].State && !ss[i].State.Advances(ss[i-1].State) {
				t.Fatalf("intent %s moved from %s to %s", id, ss[i-1].State, ss[i].State)
			}
		}
	}
}

// waitTerminal waits until the sandbox says payout id ended.
func waitTerminal(t *testing.T, w *webhookWorld, id string) sandbox.Payout {
	t.Helper()
	var p sandbox.Payout
	waitUntil(t, 30*time.Second, "payout "+id+" terminal at Calypso", func() bool {
		p, _ = w.sb.Payout(id)
		return p.State.Terminal()
	})
	return p
}

// Scenario 1: a PARTIAL payout's recipients are told the truth however
// Calypso echoes their addresses, because withdrawals are matched by the
// intent id payoutd put in each row's comment; a failing withdrawal that
// maps to no intent stops the payout's resolution with an alert.
func TestTrackerPartialMatchesWithdrawalsByIntent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		echo sandbox.WithdrawalEcho
	}{
		{"lower case", sandbox.WithdrawalEcho{Case: "lower"}},
		{"upper case and spaces", sandbox.WithdrawalEcho{Case: "upper", Pad: true}},
		{"under clientAddress", sandbox.WithdrawalEcho{ClientAddress: true}},
		{"no comment, address in another case", sandbox.WithdrawalEcho{DropComment: true, Case: "lower"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWebhookWorld(t, worldOptions{})
			w.sb.EchoWithdrawals(tc.echo)
			startTracker(t, w, nil, nil)
			b, mp := createPayout(t, w, 6, calypso.StatePartial)
			w.publish(t, w.topics.Outcomes, submitted(b, string(mp.ID), mp.State))
			p := waitTerminal(t, w, string(mp.ID))
			set := mustSchemas(t)
			recs := w.outcomes.waitFor(t, time.Minute, "every intent resolved", func(recs []*kgo.Record) bool {
				ids, _ := intentOutcomes(decodeAll(t, set, recs))
				return len(ids) == len(b.Items)
			})
			_, last := intentOutcomes(decodeAll(t, set, recs))
			failedAt := map[string]bool{}
			for _, it := range p.Items {
				failedAt[it.Comment] = it.State == "FAILED"
			}
			nFailed := 0
			for _, it := range b.Items {
				_, isFailed := last[it.IntentID].(events.IntentFailed)
				if isFailed != failedAt[it.IntentID] {
					t.Errorf("intent %s: failed=%v, Calypso says failed=%v", it.IntentID, isFailed, failedAt[it.IntentID])
				}
				if failedAt[it.IntentID] {
					nFailed++
				}
			}
			if nFailed == 0 {
				t.Fatal("no withdrawal failed: the test proves nothing")
			}
		})
	}
	t.Run("failing withdrawal maps to no intent", func(t *testing.T) {
		t.Parallel()
		w := newWebhookWorld(t, worldOptions{})
		w.sb.EchoWithdrawals(sandbox.WithdrawalEcho{DropComment: true, Address: "TSomeoneElse"})
		tr := startTracker(t, w, nil, nil)
		b, mp := createPayout(t, w, 4, calypso.StatePartial)
		w.publish(t, w.topics.Outcomes, submitted(b, string(mp.ID), mp.State))
		waitTerminal(t, w, string(mp.ID))
		set := mustSchemas(t)
		recs := w.outcomes.waitFor(t, time.Minute, "a WITHDRAWAL_UNMATCHED alert", func(recs []*kgo.Record) bool {
			return len(alertsOf(decodeAll(t, set, recs))[pipeline.AlertWithdrawalUnmatched]) > 0
		})
		// A fence: once a later payout is resolved, the tracker has had
		// every chance to resolve the first one.
		fb := fence(t, w)
		recs = w.outcomes.waitFor(t, time.Minute, "the fence resolved", func(recs []*kgo.Record) bool {
			ids, _ := intentOutcomes(decodeAll(t, set, recs))
			return len(ids[fb.Items[0].IntentID]) > 0
		})
		ids, _ := intentOutcomes(decodeAll(t, set, recs))
		for _, it := range b.Items {
			if len(ids[it.IntentID]) != 0 {
				t.Fatalf("intent %s was resolved although its payout's withdrawals cannot be matched", it.IntentID)
			}
		}
		a := alertsOf(decodeAll(t, set, recs))[pipeline.AlertWithdrawalUnmatched][0]
		if a.PayoutID != string(mp.ID) || a.BatchID != b.BatchID {
			t.Fatalf("alert names payout %s batch %s, want %s %s", a.PayoutID, a.BatchID, mp.ID, b.BatchID)
		}
		if n := tr.Stats.Alerts[pipeline.AlertWithdrawalUnmatched].Load(); n != 1 {
			t.Fatalf("alert metric = %d, want 1", n)
		}
	})
}

// slowTransport adds latency to every Calypso request, and answers requests
// to the paths in fail with error 004, as a Calypso whose look-ups keep
// failing does.
type slowTransport struct {
	delay time.Duration
	fail  []string
	calls atomic.Int64 // requests to the fail paths
}

func (s *slowTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	time.Sleep(s.delay)
	for _, p := range s.fail {
		if strings.HasSuffix(r.URL.Path, p) {
			s.calls.Add(1)
			return &http.Response{StatusCode: 400, Header: http.Header{"Content-Type": {"application/json"}}, Request: r,
				Body: io.NopCloser(strings.NewReader(`{"errorCode":"004","message":"Requested object not found"}`))}, nil
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

func clientWith(t *testing.T, w *webhookWorld, rt http.RoundTripper) *calypso.Client {
	t.Helper()
	cl, err := calypso.NewClient(calypso.Config{BaseURL: w.client.Config().BaseURL, Account: whAccount, APIKey: "api-pub", APISecret: "api-secret",
		RateLimit: -1, Retry: calypso.RetryPolicy{MaxAttempts: 1}}, calypso.WithHTTPClient(&http.Client{Transport: rt}))
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// Scenario 2: a PARTIAL payout with hundreds of failed withdrawals resolves,
// although reading them all takes longer than one call's budget: the list
// is read a page per call and what was read is kept.
func TestTrackerLargePartialResolvesPageByPage(t *testing.T) {
	t.Parallel()
	w := newWebhookWorld(t, worldOptions{sandbox: func(c *sandbox.Config) {
		c.Currencies = map[string]calypso.CurrencyRule{whCurrency: {Decimals: 6, MaxItems: 1000}}
	}})
	slow := &slowTransport{delay: 15 * time.Millisecond}
	tr := startTracker(t, w, clientWith(t, w, slow), func(c *pipeline.TrackerConfig) {
		c.CallTimeout = 1500 * time.Millisecond // ~100 calls' worth, far more than a page needs
		c.PageSize = 50
	})
	// The sandbox fails a random share of a PARTIAL payout's withdrawals:
	// take the first payout with more than 150 failed.
	var (
		b      events.BatchPlanned
		mp     *calypso.MassPayout
		failed int
	)
	for try := 0; failed <= 150; try++ {
		if try == 20 {
			t.Fatal("no payout with more than 150 failed withdrawals in 20 tries")
		}
		b, mp = createPayoutN(t, w, 400)
		failed = 0
		for _, it := range waitTerminal(t, w, string(mp.ID)).Items {
			if it.State == "FAILED" {
				failed++
			}
		}
	}
	w.publish(t, w.topics.Outcomes, submitted(b, string(mp.ID), mp.State))
	set := mustSchemas(t)
	recs := w.outcomes.waitFor(t, 45*time.Second, "every intent resolved", func(recs []*kgo.Record) bool {
		ids, _ := intentOutcomes(decodeAll(t, set, recs))
		return len(ids) == len(b.Items)
	})
	_, last := intentOutcomes(decodeAll(t, set, recs))
	nf := 0
	for _, e := range last {
		if _, ok := e.(events.IntentFailed); ok {
			nf++
		}
	}
	if nf != failed {
		t.Fatalf("%d intents failed, Calypso failed %d withdrawals", nf, failed)
	}
	// Pages read are kept: 8 pages, plus one call per failed attempt at most.
	if n, errs := tr.Stats.Lookups.Load(), tr.Stats.Errors.Load(); n > 8+errs {
		t.Fatalf("%d list calls for 8 pages and %d failed attempts: pages are read again instead of kept", n, errs)
	}
}

// createPayoutN creates a PARTIAL payout of n recipients (the sandbox's
// currency rule must allow n).
func createPayoutN(t *testing.T, w *webhookWorld, n int) (events.BatchPlanned, *calypso.MassPayout) {
	t.Helper()
	cl, err := calypso.NewClient(calypso.Config{BaseURL: w.client.Config().BaseURL, Account: whAccount, APIKey: "api-pub", APISecret: "api-secret",
		RateLimit: -1, Currencies: map[string]calypso.CurrencyRule{whCurrency: {Decimals: 6, MaxItems: 1000}}})
	if err != nil {
		t.Fatal(err)
	}
	orig := w.client
	w.client = cl
	defer func() { w.client = orig }()
	return createPayout(t, w, n, calypso.StatePartial)
}

// Scenario 2: a look-up that keeps failing is retried with a growing wait
// and raises an alert, instead of a warning every few seconds for ever.
func TestTrackerFailingLookupBacksOffAndAlerts(t *testing.T) {
	t.Parallel()
	w := newWebhookWorld(t, worldOptions{})
	bad := &slowTransport{fail: []string{calypso.PathWithdrawal, calypso.PathWithdrawals}}
	tr := startTracker(t, w, clientWith(t, w, bad), func(c *pipeline.TrackerConfig) {
		c.PollAfter = 50 * time.Millisecond
		c.RetryDelay, c.MaxRetryDelay, c.AlertAfter = 40*time.Millisecond, 10*time.Second, 4
	})
	b, mp := createPayout(t, w, 3, calypso.StatePartial)
	w.publish(t, w.topics.Outcomes, submitted(b, string(mp.ID), mp.State))
	set := mustSchemas(t)
	w.outcomes.waitFor(t, 30*time.Second, "a LOOKUP_FAILING alert", func(recs []*kgo.Record) bool {
		return len(alertsOf(decodeAll(t, set, recs))[pipeline.AlertLookupFailing]) > 0
	})
	// Waits of 40, 80, 160, 320 ms and on: the 8th failed call comes no
	// sooner than 40ms·(2^7-1) ≈ 5s after the first; a fixed cadence would
	// have made it within half a second.
	start := time.Now()
	first := bad.calls.Load()
	waitUntil(t, 30*time.Second, "more failed look-ups", func() bool { return bad.calls.Load() >= first+3 })
	if took := time.Since(start); took < 40*time.Millisecond*(1<<(first-1)) {
		t.Fatalf("3 more look-ups within %v after %d: no growing wait", took, first)
	}
	if n := tr.Stats.Alerts[pipeline.AlertLookupFailing].Load(); n != 1 {
		t.Fatalf("alert metric = %d, want 1", n)
	}
}

// terminalStatuses returns the distinct ce_ids of payout id's terminal
// status events, and its terminal state.
func terminalStatuses(ds []decoded, id string) (map[string]bool, calypso.State) {
	ids, states, _ := payoutTerminals(ds)
	return ids[id], states[id]
}

// Scenario 3: a payout gets exactly one terminal status event whatever
// brought the news, also when the only news is a PayoutSubmitted written
// after the payout had ended (a submitter's recovery) and no webhook came.
func TestTrackerOneTerminalStatusWhateverBroughtTheNews(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		forced   calypso.State
		drop     float64 // share of webhooks dropped
		lateSubm bool    // PayoutSubmitted only after the payout ended, in its terminal state
	}{
		{"PARTIAL seen only in PayoutSubmitted", calypso.StatePartial, 1, true},
		{"COMPLETED seen only in PayoutSubmitted", calypso.StateCompleted, 1, true},
		{"FAILED by webhook, PayoutSubmitted late and terminal", calypso.StateFailed, 0, true},
		{"COMPLETED by webhook", calypso.StateCompleted, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWebhookWorld(t, worldOptions{sandbox: func(c *sandbox.Config) { c.Faults.DropWebhook = tc.drop }})
			startTracker(t, w, nil, func(c *pipeline.TrackerConfig) { c.PollAfter = time.Hour })
			b, mp := createPayout(t, w, 3, tc.forced)
			state := mp.State
			if tc.lateSubm {
				state = waitTerminal(t, w, string(mp.ID)).State
			}
			w.publish(t, w.topics.Outcomes, submitted(b, string(mp.ID), state))
			set := mustSchemas(t)
			w.outcomes.waitFor(t, time.Minute, "every intent resolved and a terminal status", func(recs []*kgo.Record) bool {
				ds := decodeAll(t, set, recs)
				ids, _ := intentOutcomes(ds)
				terms, _ := terminalStatuses(ds, string(mp.ID))
				return len(ids) == len(b.Items) && len(terms) > 0
			})
			// A fence, so that a second terminal status would have been written.
			fb := fence(t, w)
			recs := w.outcomes.waitFor(t, time.Minute, "the fence resolved", func(recs []*kgo.Record) bool {
				ids, _ := intentOutcomes(decodeAll(t, set, recs))
				return len(ids[fb.Items[0].IntentID]) > 0
			})
			terms, got := terminalStatuses(decodeAll(t, set, recs), string(mp.ID))
			if len(terms) != 1 {
				t.Fatalf("payout %s has %d distinct terminal status events, want 1", mp.ID, len(terms))
			}
			if want := waitTerminal(t, w, string(mp.ID)).State; got != want {
				t.Fatalf("terminal status %s, Calypso says %s", got, want)
			}
		})
	}
}

// Scenario 4: statuses of a payout payoutd did not create (another tool on
// the same subscription) are marked unmatched with an alert, and the payout
// is not tracked for ever.
func TestTrackerForeignPayoutIsAlertedAndForgotten(t *testing.T) {
	t.Parallel()
	w := newWebhookWorld(t, worldOptions{})
	tr := startTracker(t, w, nil, func(c *pipeline.TrackerConfig) { c.MatchWait = 300 * time.Millisecond })
	foreign := events.PayoutStatusChanged{PayoutStatus: events.PayoutStatus{PayoutID: "777001", BatchID: "not-ours", State: "IN_PROGRESS",
		Source: events.FromWebhook, WebhookEventID: "1", OccurredAt: time.Now().UTC()}}
	w.publish(t, w.topics.Outcomes, foreign)
	set := mustSchemas(t)
	w.outcomes.waitFor(t, 30*time.Second, "a FOREIGN_PAYOUT alert", func(recs []*kgo.Record) bool {
		for _, a := range alertsOf(decodeAll(t, set, recs))[pipeline.AlertForeignPayout] {
			if a.PayoutID == "777001" {
				return true
			}
		}
		return false
	})
	// Later news of it does not bring it back.
	foreign.State, foreign.Terminal, foreign.WebhookEventID = "COMPLETED", true, "2"
	w.publish(t, w.topics.Outcomes, foreign)
	fb := fence(t, w)
	recs := w.outcomes.waitFor(t, time.Minute, "the fence resolved", func(recs []*kgo.Record) bool {
		ids, _ := intentOutcomes(decodeAll(t, set, recs))
		return len(ids[fb.Items[0].IntentID]) > 0
	})
	waitUntil(t, 10*time.Second, "no open payout left", func() bool { return tr.Stats.Open.Load() == 0 })
	if n := len(alertsOf(decodeAll(t, set, recs))[pipeline.AlertForeignPayout]); n != 1 {
		t.Fatalf("%d FOREIGN_PAYOUT alerts, want 1", n)
	}
	if n := tr.Stats.Unmatched.Load(); n != 1 {
		t.Fatalf("unmatched metric = %d, want 1", n)
	}
}

// Scenario 5: Calypso has a payout for a batch the submitter reported
// rejected. The status is not dropped: an alert, a metric, and the payout is
// followed to its real end (here with every webhook lost, so by polling).
func TestTrackerStatusForRejectedBatchIsAlertedAndFollowed(t *testing.T) {
	t.Parallel()
	w := newWebhookWorld(t, worldOptions{sandbox: func(c *sandbox.Config) { c.Faults.DropWebhook = 1 }})
	tr := startTracker(t, w, nil, func(c *pipeline.TrackerConfig) {
		c.PollAfter, c.RejectedCheckAfter = 100*time.Millisecond, 100*time.Millisecond
	})
	b, mp := createPayout(t, w, 2, calypso.StateCompleted)
	w.publish(t, w.topics.Outcomes, events.PayoutRejected{BatchID: b.BatchID, Account: whAccount, Currency: whCurrency, ItemCount: 2,
		Total: b.Total, Code: "001", Message: "refused", RejectedAt: time.Now().UTC()})
	// The status the submitter's rejection contradicts.
	w.publish(t, w.topics.Outcomes, events.PayoutStatusChanged{PayoutStatus: events.PayoutStatus{PayoutID: string(mp.ID), BatchID: b.BatchID,
		State: "CREATION_IN_PROGRESS", Source: events.FromWebhook, WebhookEventID: "9", OccurredAt: time.Now().UTC()}})
	set := mustSchemas(t)
	recs := w.outcomes.waitFor(t, time.Minute, "the alert and the payout's real end", func(recs []*kgo.Record) bool {
		ds := decodeAll(t, set, recs)
		terms, _ := terminalStatuses(ds, string(mp.ID))
		return len(alertsOf(ds)[pipeline.AlertStatusForRejectedBatch]) > 0 && len(terms) > 0
	})
	ds := decodeAll(t, set, recs)
	a := alertsOf(ds)[pipeline.AlertStatusForRejectedBatch][0]
	if a.PayoutID != string(mp.ID) || a.BatchID != b.BatchID {
		t.Fatalf("alert names payout %s batch %s, want %s %s", a.PayoutID, a.BatchID, mp.ID, b.BatchID)
	}
	if _, st := terminalStatuses(ds, string(mp.ID)); st != calypso.StateCompleted {
		t.Fatalf("payout ended %s, Calypso says COMPLETED", st)
	}
	if n := tr.Stats.Alerts[pipeline.AlertStatusForRejectedBatch].Load(); n != 1 {
		t.Fatalf("alert metric = %d, want 1", n)
	}
	waitUntil(t, 10*time.Second, "no open payout left", func() bool { return tr.Stats.Open.Load() == 0 })
}

// Scenario 6: a payout silent on purpose (awaiting approval) is polled less
// and less often, not every PollAfter for ever, and resolves once approved.
func TestTrackerPollsSilentPayoutsLessAndLess(t *testing.T) {
	t.Parallel()
	w := newWebhookWorld(t, worldOptions{sandbox: func(c *sandbox.Config) { c.Verification = true }})
	const pollAfter = 100 * time.Millisecond
	tr := startTracker(t, w, nil, func(c *pipeline.TrackerConfig) { c.PollAfter, c.MaxPollInterval = pollAfter, time.Minute })
	b, mp := createPayout(t, w, 2, calypso.StateCompleted)
	w.publish(t, w.topics.Outcomes, submitted(b, string(mp.ID), mp.State))
	waitUntil(t, 30*time.Second, "PENDING_CONFIRMATION", func() bool {
		p, _ := w.sb.Payout(string(mp.ID))
		return p.State == calypso.StatePendingConfirmation
	})
	waitUntil(t, 30*time.Second, "a second poll", func() bool { return tr.Stats.Polls.Load() >= 2 })
	start, from := time.Now(), tr.Stats.Polls.Load()
	waitUntil(t, 30*time.Second, "three more polls", func() bool { return tr.Stats.Polls.Load() >= from+3 })
	// Growing waits: at least 2, 4 and 8 × PollAfter; a fixed cadence
	// would take 3 × PollAfter.
	if took := time.Since(start); took < 6*pollAfter {
		t.Fatalf("3 polls of a silent payout within %v: the wait does not grow", took)
	}
	if err := w.sb.Confirm(string(mp.ID)); err != nil {
		t.Fatal(err)
	}
	set := mustSchemas(t)
	w.outcomes.waitFor(t, time.Minute, "every intent resolved", func(recs []*kgo.Record) bool {
		ids, _ := intentOutcomes(decodeAll(t, set, recs))
		return len(ids) == len(b.Items)
	})
}

// Scenario 7: the tracker is the one writer of intent states after BATCHED:
// SUBMITTED once the payout is submitted, then SETTLED or FAILED, and never
// backwards, also when a status overtakes the PayoutSubmitted or a copy of
// the PayoutSubmitted comes after the payout was resolved.
func TestTrackerIntentStatesNeverMoveBackwards(t *testing.T) {
	t.Parallel()
	w := newWebhookWorld(t, worldOptions{sandbox: func(c *sandbox.Config) { c.Verification = true }})
	startTracker(t, w, nil, func(c *pipeline.TrackerConfig) { c.PollAfter = time.Hour })
	set := mustSchemas(t)

	// In order: submitted, waiting for approval, then done.
	b1, mp1 := createPayout(t, w, 2, calypso.StateCompleted)
	w.publish(t, w.topics.Outcomes, submitted(b1, string(mp1.ID), mp1.State))
	w.intents.waitFor(t, 30*time.Second, "SUBMITTED states", func(r []*kgo.Record) bool {
		n := 0
		for _, it := range b1.Items {
			if ss := intentStates(t, r)[it.IntentID]; len(ss) > 0 && ss[0].State == events.StatusSubmitted {
				n++
			}
		}
		return n == len(b1.Items)
	})

	// The terminal status first, the PayoutSubmitted after it; then a late
	// copy of the PayoutSubmitted.
	b2, mp2 := createPayout(t, w, 2, calypso.StateFailed)
	for _, id := range []string{string(mp1.ID), string(mp2.ID)} {
		waitUntil(t, 30*time.Second, "PENDING_CONFIRMATION", func() bool {
			p, _ := w.sb.Payout(id)
			return p.State == calypso.StatePendingConfirmation
		})
		if err := w.sb.Confirm(id); err != nil {
			t.Fatal(err)
		}
	}
	waitTerminal(t, w, string(mp2.ID))
	w.outcomes.waitFor(t, 30*time.Second, "the terminal webhook of the second payout", func(recs []*kgo.Record) bool {
		terms, _ := terminalStatuses(decodeAll(t, set, recs), string(mp2.ID))
		return len(terms) > 0
	})
	w.publish(t, w.topics.Outcomes, submitted(b2, string(mp2.ID), mp2.State))
	all := append(append([]events.BatchItem{}, b1.Items...), b2.Items...)
	w.intents.waitFor(t, time.Minute, "every intent final", func(r []*kgo.Record) bool {
		st := intentStates(t, r)
		for _, it := range all {
			if ss := st[it.IntentID]; len(ss) == 0 || !ss[len(ss)-1].State.Final() {
				return false
			}
		}
		return true
	})
	w.publish(t, w.topics.Outcomes, submitted(b2, string(mp2.ID), mp2.State), submitted(b1, string(mp1.ID), mp1.State))
	fb := fence(t, w)
	w.intents.waitFor(t, time.Minute, "the fence submitted", func(r []*kgo.Record) bool {
		return len(intentStates(t, r)[fb.Items[0].IntentID]) > 0
	})
	st := intentStates(t, w.intents.snapshot())
	assertStatesForward(t, st)
	for _, it := range all {
		ss := st[it.IntentID]
		if last := ss[len(ss)-1]; !last.State.Final() || last.PayoutID == "" {
			t.Fatalf("intent %s ends %+v", it.IntentID, last)
		}
	}
	for _, it := range b1.Items {
		if st[it.IntentID][0].State != events.StatusSubmitted {
			t.Fatalf("intent %s was never SUBMITTED: %+v", it.IntentID, st[it.IntentID])
		}
	}
}

// fence is a payout submitted after it ended: the tracker resolves it from
// its PayoutSubmitted alone, whatever webhooks and polls do. Once its
// intents are resolved, the tracker has read everything published before.
func fence(t *testing.T, w *webhookWorld) events.BatchPlanned {
	t.Helper()
	b, mp := createPayout(t, w, 1, calypso.StateCompleted)
	var p sandbox.Payout
	waitUntil(t, 30*time.Second, "the fence payout approved or done", func() bool {
		p, _ = w.sb.Payout(string(mp.ID))
		return p.State == calypso.StatePendingConfirmation || p.State.Terminal()
	})
	if p.State == calypso.StatePendingConfirmation {
		if err := w.sb.Confirm(p.ID); err != nil {
			t.Fatal(err)
		}
	}
	p = waitTerminal(t, w, string(mp.ID))
	w.publish(t, w.topics.Outcomes, submitted(b, string(mp.ID), p.State))
	return b
}

// During a rolling upgrade a submitter of the earlier version writes
// PayoutSubmitted without items: the tracker reads them from the payout's
// withdrawal rows (comment = intent id) and resolves as usual.
func TestTrackerPayoutSubmittedWithoutItems(t *testing.T) {
	t.Parallel()
	w := newWebhookWorld(t, worldOptions{})
	startTracker(t, w, nil, nil)
	set := mustSchemas(t)
	for _, forced := range []calypso.State{calypso.StateCompleted, calypso.StatePartial} {
		b, mp := createPayout(t, w, 4, forced)
		sub := submitted(b, string(mp.ID), mp.State)
		sub.Items = nil
		w.publish(t, w.topics.Outcomes, sub)
		p := waitTerminal(t, w, string(mp.ID))
		recs := w.outcomes.waitFor(t, time.Minute, "every intent of the "+string(forced)+" payout resolved", func(recs []*kgo.Record) bool {
			ids, _ := intentOutcomes(decodeAll(t, set, recs))
			for _, it := range b.Items {
				if len(ids[it.IntentID]) == 0 {
					return false
				}
			}
			return true
		})
		_, last := intentOutcomes(decodeAll(t, set, recs))
		for _, it := range p.Items {
			if _, f := last[it.Comment].(events.IntentFailed); f != (it.State == "FAILED") {
				t.Fatalf("intent %s: failed=%v, Calypso says %s", it.Comment, f, it.State)
			}
		}
	}
}
