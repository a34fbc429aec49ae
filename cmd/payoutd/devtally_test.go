package main

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/payoutd/payoutd/events"
)

// Under --forever dev sends intents until interrupted: its tally keeps
// counts and bounded sets, not every intent and payout id it ever saw.
func TestDevTallyStaysBoundedForAMillionIntents(t *testing.T) {
	const n = 1_000_000
	tally := newDevTally("dev-run-")
	for i := range n {
		id := fmt.Sprintf("dev-run-%07d", i)
		tally.sentIntent(id)
		payout := fmt.Sprintf("payout-%d", i/100)
		tally.apply(events.PayoutStatusChanged{PayoutStatus: events.PayoutStatus{PayoutID: payout, State: "COMPLETED"}})
		if i%2 == 0 {
			tally.apply(events.IntentSettled{IntentOutcome: events.IntentOutcome{IntentID: id}})
			tally.apply(events.IntentSettled{IntentOutcome: events.IntentOutcome{IntentID: id}}) // a repeat counts once
		} else {
			tally.apply(events.IntentFailed{IntentOutcome: events.IntentOutcome{IntentID: id}})
		}
		tally.apply(events.IntentSettled{IntentOutcome: events.IntentOutcome{IntentID: "dev-other-run-" + id}}) // not ours
	}
	if got, of := tally.resolved(); got != n || of != n {
		t.Fatalf("resolved %d of %d, want %d of %d", got, of, n, n)
	}
	if tally.settled != n/2 || tally.failed != n/2 || tally.states["COMPLETED"] != n/100 {
		t.Fatalf("settled %d, failed %d, completed payouts %d", tally.settled, tally.failed, tally.states["COMPLETED"])
	}
	if len(tally.open) != 0 || tally.resolvedID.len() > devRecentCap || tally.stateSeen.len() > devRecentCap {
		t.Fatalf("sets grew: open %d, resolved %d, states %d", len(tally.open), tally.resolvedID.len(), tally.stateSeen.len())
	}
}

// When nothing resolves (the sandbox ran out of balance), the intents in
// flight are tracked by id only up to a bound, and still counted, and
// resolve correctly once they do.
func TestDevTallyBoundsIntentsInFlight(t *testing.T) {
	const n = 3 * devOpenCap
	tally := newDevTally("dev-run-")
	for i := range n {
		tally.sentIntent(fmt.Sprintf("dev-run-%07d", i))
	}
	if len(tally.open) != devOpenCap || tally.untracked != n-devOpenCap {
		t.Fatalf("open %d, untracked %d", len(tally.open), tally.untracked)
	}
	for i := range n {
		tally.apply(events.IntentSettled{IntentOutcome: events.IntentOutcome{IntentID: fmt.Sprintf("dev-run-%07d", i)}})
	}
	if got, of := tally.resolved(); got != n || of != n || tally.untracked != 0 || len(tally.open) != 0 {
		t.Fatalf("resolved %d of %d, untracked %d, open %d", got, of, tally.untracked, len(tally.open))
	}
}

// BenchmarkDevTallyForever reports the heap a tally holds after 1M
// resolved intents (B/op is per intent sent, heap-MB the retained total).
func BenchmarkDevTallyForever(b *testing.B) {
	for b.Loop() {
		tally := newDevTally("dev-run-")
		for i := range 1_000_000 {
			id := fmt.Sprintf("dev-run-%07d", i)
			tally.sentIntent(id)
			tally.apply(events.IntentSettled{IntentOutcome: events.IntentOutcome{IntentID: id}})
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MB")
		runtime.KeepAlive(tally)
	}
}
