package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/payoutd/payoutd/pipeline"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
)

// Bounds of devTally's memory under --forever: it keeps counts, and sets
// of ids only this large.
const (
	// devOpenCap bounds the intents sent and not yet resolved that are
	// tracked by id (to name the unresolved ones and count each once);
	// beyond it, intents are only counted.
	devOpenCap = 1 << 16
	// devRecentCap bounds the recently counted ids, against counting a
	// repeated outcome twice.
	devRecentCap = 1 << 16
)

// devTally is what dev has seen: what it sent, and, from the outcomes
// topic (read_committed, as a ledger reads it), which payout states were
// reached and which of its intents were settled or failed. It keeps counts
// and bounded sets, so its memory stays bounded under --forever.
type devTally struct {
	mu   sync.Mutex
	mine string // prefix of this run's intent ids
	sent int    // valid intents sent
	// open are sent intents not resolved yet, at most devOpenCap;
	// untracked counts those sent while it was full.
	open       map[string]struct{}
	untracked  int
	resolvedID *boundedSet // recently resolved intent ids
	invalid    int
	duplicates int
	states     map[string]int // payout state → payouts that reached it
	stateSeen  *boundedSet    // recently counted "payout id/state"
	settled    int
	failed     int
	rejected   int
	deferred   int
	// lowBalance are the first INSUFFICIENT_BALANCE deferral of each
	// account and currency, not yet reported; reported never again.
	lowBalance     []events.PayoutDeferred
	lowBalanceSeen map[string]bool
}

// newDevTally tallies the intents whose ids start with mine.
func newDevTally(mine string) *devTally {
	return &devTally{mine: mine, open: map[string]struct{}{}, resolvedID: newBoundedSet(devRecentCap),
		states: map[string]int{}, stateSeen: newBoundedSet(devRecentCap), lowBalanceSeen: map[string]bool{}}
}

func (t *devTally) sentIntent(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sent++
	if len(t.open) < devOpenCap {
		t.open[id] = struct{}{}
	} else {
		t.untracked++
	}
}
func (t *devTally) invalidSent()   { t.mu.Lock(); t.invalid++; t.mu.Unlock() }
func (t *devTally) duplicateSent() { t.mu.Lock(); t.duplicates++; t.mu.Unlock() }

// resolve reports whether id is one of this run's intents resolved now for
// the first time.
func (t *devTally) resolve(id string) bool {
	if _, ok := t.open[id]; ok {
		delete(t.open, id)
		t.resolvedID.add(id)
		return true
	}
	if t.untracked > 0 && strings.HasPrefix(id, t.mine) && t.resolvedID.add(id) {
		t.untracked--
		return true
	}
	return false
}

func (t *devTally) apply(e events.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	state := func(s, payout string) {
		if t.stateSeen.add(payout + "/" + s) {
			t.states[s]++
		}
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
		if key := e.Account + "/" + e.Currency; e.Reason == events.DeferInsufficientBalance && !t.lowBalanceSeen[key] {
			t.lowBalanceSeen[key] = true
			t.lowBalance = append(t.lowBalance, e)
		}
	case events.IntentSettled:
		if t.resolve(e.IntentID) {
			t.settled++
		}
	case events.IntentFailed:
		if t.resolve(e.IntentID) {
			t.failed++
		}
	}
}

// takeLowBalance returns the accounts and currencies that ran out of
// balance since the last call, each once per run.
func (t *devTally) takeLowBalance() []events.PayoutDeferred {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := t.lowBalance
	t.lowBalance = nil
	return out
}

// resolved counts the sent intents that reached a terminal outcome.
func (t *devTally) resolved() (n, of int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.settled + t.failed, t.sent
}

func (t *devTally) allResolved(want int) bool {
	n, of := t.resolved()
	return of >= want && n >= want
}

// boundedSet remembers the last cap keys added.
type boundedSet struct {
	m    map[string]struct{}
	ring []string
	next int
}

func newBoundedSet(limit int) *boundedSet {
	return &boundedSet{m: make(map[string]struct{}, limit), ring: make([]string, 0, limit)}
}

// add reports whether k is new, and remembers it, forgetting the oldest
// key when full.
func (b *boundedSet) add(k string) bool {
	if _, ok := b.m[k]; ok {
		return false
	}
	if len(b.ring) < cap(b.ring) {
		b.ring = append(b.ring, k)
	} else {
		delete(b.m, b.ring[b.next])
		b.ring[b.next] = k
		b.next = (b.next + 1) % len(b.ring)
	}
	b.m[k] = struct{}{}
	return true
}

func (b *boundedSet) len() int { return len(b.m) }

// stateOrder lists payout states in the order a payout goes through them.
var stateOrder = []calypso.State{calypso.StateCreationInProgress, calypso.StatePendingConfirmation, calypso.StateConfirmed,
	calypso.StateInProgress, calypso.StateCompleted, calypso.StatePartial, calypso.StateFailed, calypso.StateCanceled}

func (t *devTally) statesLine() string {
	var parts []string
	for _, s := range stateOrder {
		if n := t.states[string(s)]; n > 0 {
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
		elapsed.Seconds(), t.sent, t.invalid, t.duplicates,
		b.Requests.Load(), b.DLQ.Load(), b.DLQBy[pipeline.ReasonDuplicate].Load(), b.Batches.Load(),
		s.Submitted.Load(), s.Rejected.Load(), s.Deferred.Load(),
		t.statesLine(), t.settled, t.failed, resolved, of)
}

// short is the live summary on a terminal, beside the bar of terminal
// intents.
func (t *devTally) short(st *stack) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprintf("sent %d │ dlq %d │ batches %d │ payouts %d, deferred %d │ settled %d, failed %d",
		t.sent, st.batcher.Stats.DLQ.Load(), st.batcher.Stats.Batches.Load(), st.submitter.Stats.Submitted.Load(),
		st.submitter.Stats.Deferred.Load(), t.settled, t.failed)
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
	fmt.Fprintf(&b, "\npayoutd dev: %s in %.1fs (%d settled, %d failed)\n", verdict, elapsed.Seconds(), t.settled, t.failed)
	bs, ss, is, ts := &st.batcher.Stats, &st.submitter.Stats, &st.ingress.Stats, &st.tracker.Stats
	fmt.Fprintf(&b, "  intents:   %d valid sent, plus %d invalid and %d duplicates → DLQ %d (%d duplicates)\n",
		t.sent, t.invalid, t.duplicates, bs.DLQ.Load(), bs.DLQBy[pipeline.ReasonDuplicate].Load())
	fmt.Fprintf(&b, "  batcher:   %d requests in, %d batches planned in %d transactions (%d aborted)\n",
		bs.Requests.Load(), bs.Batches.Load(), bs.Commits.Load(), bs.Aborts.Load())
	fmt.Fprintf(&b, "  submitter: %d payouts submitted (%d recovered by idempotency key), %d rejected, %d deferred\n",
		ss.Submitted.Load(), ss.Recovered.Load(), ss.Rejected.Load(), ss.Deferred.Load())
	fmt.Fprintf(&b, "  webhooks:  %d accepted, %d refused (401), %d unavailable (503)\n",
		is.OK.Load(), is.Unauthorized.Load(), is.Unavailable.Load())
	fmt.Fprintf(&b, "  tracker:   %d payouts resolved, %d polls for silent payouts\n", ts.Resolved.Load(), ts.Polls.Load())
	fmt.Fprintf(&b, "  payouts reached: %s\n", t.statesLine())
	if !forever && resolved < of {
		open := slices.Sorted(maps.Keys(t.open))
		if len(open) > 10 {
			open = append(open[:10], "…")
		}
		if t.untracked > 0 {
			open = append(open, fmt.Sprintf("and %d more not tracked by id", t.untracked))
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
