package status

import (
	"context"
	"slices"
)

// Timeline is one payment's story: every step from its request to its
// per-intent outcome, with the ids a ledger uses.
type Timeline struct {
	Query string `json:"query"`
	// Kind is what the query turned out to be: intent, batch, payout or
	// address; empty when nothing matched.
	Kind    string   `json:"kind,omitempty"`
	Intents []string `json:"intents,omitempty"`
	Batches []string `json:"batches,omitempty"`
	Payouts []string `json:"payouts,omitempty"`
	Steps   []Step   `json:"steps"`
	// Outcome is where the payment ended: SETTLED or FAILED for an intent
	// (the payout's terminal state for a batch or payout), REJECTED_REQUEST
	// for a request in the DLQ; empty while it is still under way.
	Outcome string `json:"outcome,omitempty"`
}

// ids are the things a timeline follows.
type ids struct {
	intents, batches, payouts, addresses map[string]bool
	kind                                 string
}

func newIDs(q string) *ids {
	one := func() map[string]bool { return map[string]bool{q: true} }
	return &ids{intents: one(), batches: one(), payouts: one(), addresses: one()}
}

// follow reports whether rec is about the payment, and learns the ids it
// links to: a request's intent, the batch that carries an intent, the payout
// created for a batch, the batch a failed one was replanned as. It does not
// widen an intent's timeline to its batch's other intents.
func (x *ids) follow(rec record, query string) bool {
	f := rec.f
	note := func(kind string, v string) {
		if x.kind == "" && v == query {
			x.kind = kind
		}
	}
	switch {
	case rec.what == "dlq" || rec.what == "payout.requested.v1":
		if x.intents[f.IntentID] || x.addresses[f.Address] {
			note("intent", f.IntentID)
			note("address", f.Address)
			x.intents[f.IntentID] = true
			return true
		}
	case rec.what == "batch.planned.v1":
		hit := x.batches[f.BatchID]
		for _, it := range f.Items {
			if x.intents[it.IntentID] || x.addresses[it.Address] {
				note("intent", it.IntentID)
				note("address", it.Address)
				x.intents[it.IntentID] = true
				hit = true
			}
		}
		if hit {
			note("batch", f.BatchID)
			x.batches[f.BatchID] = true
		}
		return hit
	case rec.what == "intent.state.v1" || rec.what == "intent.settled.v1" || rec.what == "intent.failed.v1":
		if x.intents[f.IntentID] {
			note("intent", f.IntentID)
			if f.BatchID != "" {
				x.batches[f.BatchID] = true
			}
			if f.PayoutID != "" {
				x.payouts[f.PayoutID] = true
			}
			return true
		}
	default: // batch and payout events, alerts
		hit := (f.BatchID != "" && x.batches[f.BatchID]) || (f.PayoutID != "" && x.payouts[f.PayoutID]) ||
			(f.IntentID != "" && x.intents[f.IntentID])
		if hit {
			note("batch", f.BatchID)
			note("payout", f.PayoutID)
			if f.BatchID != "" {
				x.batches[f.BatchID] = true
			}
			if f.PayoutID != "" {
				x.payouts[f.PayoutID] = true
			}
			if f.ReplannedAs != "" {
				x.batches[f.ReplannedAs] = true
			}
		}
		return hit
	}
	return false
}

// Follow finds everything about query — an intent id, batch id, payout id or
// recipient address — and returns its timeline. It reads the topics twice:
// once to learn which batches and payouts the query leads to (a webhook may
// come before the create that names its payout), once to collect the steps.
func Follow(ctx context.Context, cfg Config, query string) (Timeline, error) {
	cfg = cfg.withDefaults()
	t := cfg.Topics
	order := []string{t.Requests, t.DLQ, t.Batches, t.BatchStates, t.Intents, t.Outcomes}
	x := newIDs(query)
	learn := func(rec record) { x.follow(rec, query) }
	if err := scan(ctx, cfg, cfg.Since, order, learn); err != nil {
		return Timeline{}, err
	}
	// The first pass may learn a batch only after the records that name it
	// went by; the second pass sees every record with the final ids.
	tl := Timeline{Query: query, Kind: x.kind}
	final := map[string]string{} // intent → SETTLED/FAILED, or "" while open
	err := scan(ctx, cfg, cfg.Since, order, func(rec record) {
		if !x.follow(rec, query) {
			return
		}
		s := rec.step()
		tl.Steps = append(tl.Steps, s)
		switch rec.what {
		case "intent.settled.v1":
			final[s.IntentID] = "SETTLED"
		case "intent.failed.v1":
			final[s.IntentID] = "FAILED"
		case "dlq":
			if _, ok := final[s.IntentID]; !ok {
				final[s.IntentID] = "REJECTED_REQUEST"
			}
		case "payout.status-changed.v1":
			if rec.f.Terminal && (x.kind == "batch" || x.kind == "payout") {
				tl.Outcome = s.State
			}
		case "payout.rejected.v1":
			if x.kind == "batch" {
				tl.Outcome = "REJECTED"
			}
		}
	})
	if err != nil {
		return Timeline{}, err
	}
	sortSteps(tl.Steps)
	for _, s := range tl.Steps {
		add := func(list *[]string, v string, known map[string]bool) {
			if v != "" && known[v] && !slices.Contains(*list, v) {
				*list = append(*list, v)
			}
		}
		add(&tl.Intents, s.IntentID, x.intents)
		add(&tl.Batches, s.BatchID, x.batches)
		add(&tl.Payouts, s.PayoutID, x.payouts)
	}
	if x.kind == "intent" || x.kind == "address" {
		tl.Outcome = intentsOutcome(tl.Intents, final)
	}
	return tl, nil
}

// intentsOutcome is the one outcome all the intents share, or "" while any
// is open or they differ.
func intentsOutcome(intents []string, final map[string]string) string {
	out := ""
	for i, id := range intents {
		o := final[id]
		if o == "" || (i > 0 && o != out) {
			return ""
		}
		out = o
	}
	return out
}
