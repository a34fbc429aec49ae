package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/payoutd/payoutd/pipeline"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
)

// devTally is what dev has seen: what it sent, and, from the outcomes
// topic (read_committed, as a ledger reads it), which payout states were
// reached and which intents were settled or failed.
type devTally struct {
	mu         sync.Mutex
	valid      map[string]bool // intent ids sent
	invalid    int
	duplicates int
	states     map[string]map[string]bool // payout state → payout ids
	settled    map[string]bool
	failed     map[string]bool
	rejected   int
	deferred   int
}

func newDevTally() *devTally {
	return &devTally{valid: map[string]bool{}, states: map[string]map[string]bool{}, settled: map[string]bool{}, failed: map[string]bool{}}
}

func (t *devTally) sent(id string) { t.mu.Lock(); t.valid[id] = true; t.mu.Unlock() }
func (t *devTally) invalidSent()   { t.mu.Lock(); t.invalid++; t.mu.Unlock() }
func (t *devTally) duplicateSent() { t.mu.Lock(); t.duplicates++; t.mu.Unlock() }

func (t *devTally) apply(e events.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	state := func(s, payout string) {
		if t.states[s] == nil {
			t.states[s] = map[string]bool{}
		}
		t.states[s][payout] = true
	}
	switch e := e.(type) {
	case events.PayoutSubmitted:
		state(e.State, e.PayoutID)
	case events.PayoutStatusChanged:
		state(e.State, e.PayoutID)
	case events.PayoutConfirmed:
		state(e.State, e.PayoutID)
	case events.PayoutRejected:
		t.rejected++
	case events.PayoutDeferred:
		t.deferred++
	case events.IntentSettled:
		t.settled[e.IntentID] = true
	case events.IntentFailed:
		t.failed[e.IntentID] = true
	}
}

// resolved counts the sent intents that reached a terminal outcome.
func (t *devTally) resolved() (n, of int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id := range t.valid {
		if t.settled[id] || t.failed[id] {
			n++
		}
	}
	return n, len(t.valid)
}

func (t *devTally) allResolved(want int) bool {
	n, of := t.resolved()
	return of >= want && n >= want
}

// stateOrder lists payout states in the order a payout goes through them.
var stateOrder = []calypso.State{calypso.StateCreationInProgress, calypso.StatePendingConfirmation, calypso.StateConfirmed,
	calypso.StateInProgress, calypso.StateCompleted, calypso.StatePartial, calypso.StateFailed, calypso.StateCanceled}

func (t *devTally) statesLine() string {
	var parts []string
	for _, s := range stateOrder {
		if n := len(t.states[string(s)]); n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", s, n))
		}
	}
	if len(parts) == 0 {
		return "none yet"
	}
	return strings.Join(parts, ", ")
}

// line is the one-line live summary.
func (t *devTally) line(st *stack, elapsed time.Duration) string {
	resolved, of := t.resolved()
	t.mu.Lock()
	defer t.mu.Unlock()
	b, s := &st.batcher.Stats, &st.submitter.Stats
	return fmt.Sprintf("[%5.1fs] sent %d (+%d invalid, +%d duplicate) │ batcher in %d, dlq %d (%d dup), batches %d │ payouts submitted %d, rejected %d, deferred %d │ states %s │ intents settled %d, failed %d (%d/%d terminal)",
		elapsed.Seconds(), len(t.valid), t.invalid, t.duplicates,
		b.Requests.Load(), b.DLQ.Load(), b.DLQBy[pipeline.ReasonDuplicate].Load(), b.Batches.Load(),
		s.Submitted.Load(), s.Rejected.Load(), s.Deferred.Load(),
		t.statesLine(), len(t.settled), len(t.failed), resolved, of)
}

// final is the closing summary.
func (t *devTally) final(st *stack, elapsed time.Duration, forever bool) string {
	resolved, of := t.resolved()
	t.mu.Lock()
	defer t.mu.Unlock()
	var b strings.Builder
	verdict := fmt.Sprintf("%d of %d intents reached a terminal outcome", resolved, of)
	if resolved == of && of > 0 {
		verdict = fmt.Sprintf("every intent reached a terminal outcome: %d/%d", resolved, of)
	}
	fmt.Fprintf(&b, "\npayoutd dev: %s in %.1fs (%d settled, %d failed)\n", verdict, elapsed.Seconds(), len(t.settled), len(t.failed))
	bs, ss, is, ts := &st.batcher.Stats, &st.submitter.Stats, &st.ingress.Stats, &st.tracker.Stats
	fmt.Fprintf(&b, "  intents:   %d valid sent, plus %d invalid and %d duplicates → DLQ %d (%d duplicates)\n",
		len(t.valid), t.invalid, t.duplicates, bs.DLQ.Load(), bs.DLQBy[pipeline.ReasonDuplicate].Load())
	fmt.Fprintf(&b, "  batcher:   %d requests in, %d batches planned in %d transactions (%d aborted)\n",
		bs.Requests.Load(), bs.Batches.Load(), bs.Commits.Load(), bs.Aborts.Load())
	fmt.Fprintf(&b, "  submitter: %d payouts submitted (%d recovered by idempotency key), %d rejected, %d deferred\n",
		ss.Submitted.Load(), ss.Recovered.Load(), ss.Rejected.Load(), ss.Deferred.Load())
	fmt.Fprintf(&b, "  webhooks:  %d accepted, %d refused (401), %d unavailable (503)\n",
		is.OK.Load(), is.Unauthorized.Load(), is.Unavailable.Load())
	fmt.Fprintf(&b, "  tracker:   %d payouts resolved, %d polls for silent payouts\n", ts.Resolved.Load(), ts.Polls.Load())
	fmt.Fprintf(&b, "  payouts reached: %s\n", t.statesLine())
	if !forever && resolved < of {
		var open []string
		for id := range t.valid {
			if !t.settled[id] && !t.failed[id] {
				open = append(open, id)
			}
		}
		slices.Sort(open)
		if len(open) > 10 {
			open = append(open[:10], "…")
		}
		fmt.Fprintf(&b, "  unresolved: %s\n", strings.Join(open, ", "))
	}
	return b.String()
}

// outcomeFollower reads the outcomes topic into the tally.
type outcomeFollower struct{ tally *devTally }

func (f *outcomeFollower) run(ctx context.Context, base []kgo.Opt, topic string) error {
	cl, err := kgo.NewClient(kafkaOpts(base, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if _, e, err := events.Decode(r); err == nil {
				f.tally.apply(e)
			}
		})
	}
}
