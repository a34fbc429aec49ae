package status

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/payoutd/payoutd/events"
)

// Summary is what is stuck and what failed, as of when it was read.
type Summary struct {
	At time.Time `json:"at"`
	// OpenPayouts are payouts created at Calypso that have not reached a
	// terminal state, oldest first.
	OpenPayouts []OpenPayout `json:"openPayouts"`
	// OpenByState counts the open payouts per Calypso state.
	OpenByState map[string]int `json:"openByState"`
	// Batches are the batches waiting on something or someone: DEFERRED
	// (funds, fees, Calypso down), UNDECIDED (a create whose outcome is
	// unknown) and QUARANTINED (contradicts Calypso; a person decides).
	Batches []WaitingBatch `json:"batches"`
	// DLQ counts rejected requests by reason; Rejected lists the newest.
	DLQ      map[string]int `json:"dlq"`
	Rejected []Step         `json:"rejected"`
	// Alerts are the newest alerts payoutd raised for a person.
	Alerts []Step `json:"alerts"`
}

// OpenPayout is one payout under way.
type OpenPayout struct {
	PayoutID string        `json:"payoutId"`
	BatchID  string        `json:"batchId"`
	Account  string        `json:"account"`
	Currency string        `json:"currency"`
	State    string        `json:"state"`
	Since    time.Time     `json:"since"` // when it was submitted
	Age      time.Duration `json:"age"`
}

// WaitingBatch is a batch that waits, and why.
type WaitingBatch struct {
	BatchID string    `json:"batchId"`
	State   string    `json:"state"`
	Reason  string    `json:"reason,omitempty"`
	NextTry string    `json:"nextTry,omitempty"`
	Since   time.Time `json:"since"`
}

// listed bounds how many rejected requests and alerts a summary lists.
const listed = 20

// Summarize reads the outcomes, batch-state and DLQ topics once.
func Summarize(ctx context.Context, cfg Config) (Summary, error) {
	cfg = cfg.withDefaults()
	now := cfg.Now()
	sum := Summary{At: now, OpenByState: map[string]int{}, DLQ: map[string]int{}}

	// The batch-state topic is compacted: its latest record per batch is
	// what the submitter knows. Read whole, whatever Since says.
	batches := map[string]*WaitingBatch{}
	err := scan(ctx, cfg, time.Time{}, []string{cfg.Topics.BatchStates}, func(rec record) {
		st := events.BatchStatus(rec.f.State)
		waiting := st == events.BatchDeferred || st == events.BatchUndecided || st == events.BatchQuarantined
		if rec.r.Value == nil || !waiting || rec.f.BatchID == "" {
			delete(batches, string(rec.r.Key))
			return
		}
		batches[rec.f.BatchID] = &WaitingBatch{BatchID: rec.f.BatchID, State: rec.f.State, Reason: rec.f.Reason, Since: rec.r.Timestamp}
	})
	if err != nil {
		return sum, err
	}

	type open struct {
		OpenPayout
		terminal bool
	}
	payouts := map[string]*open{}
	payout := func(id string) *open {
		p := payouts[id]
		if p == nil {
			p = &open{OpenPayout: OpenPayout{PayoutID: id}}
			payouts[id] = p
		}
		return p
	}
	err = scan(ctx, cfg, cfg.Since, []string{cfg.Topics.DLQ, cfg.Topics.Outcomes}, func(rec record) {
		f := rec.f
		switch rec.what {
		case "dlq":
			sum.DLQ[f.Reason]++
			sum.Rejected = newest(sum.Rejected, rec.step())
		case "alert.v1":
			sum.Alerts = newest(sum.Alerts, rec.step())
		case "payout.submitted.v1":
			p := payout(f.PayoutID)
			p.BatchID, p.Account, p.Currency, p.Since = f.BatchID, f.Account, f.Currency, rec.r.Timestamp
			if p.State == "" {
				p.State = f.State
			}
		case "payout.status-changed.v1", "payout.confirmed.v1", "payout.hash-received.v1", "payout.validation-error.v1":
			p := payout(f.PayoutID)
			p.terminal = p.terminal || f.Terminal
			if !p.terminal || f.Terminal {
				p.State = f.State
			}
		case "payout.deferred.v1", "payout.undecided.v1":
			if b := batches[f.BatchID]; b != nil {
				b.Reason, b.NextTry = cmp.Or(f.Reason, b.Reason), f.RetryAt
			}
		}
	})
	if err != nil {
		return sum, err
	}
	for _, p := range payouts {
		if p.terminal || p.BatchID == "" {
			// Terminal, or only webhooks seen: not one of ours, or created
			// before Since.
			continue
		}
		p.Age = now.Sub(p.Since)
		sum.OpenPayouts = append(sum.OpenPayouts, p.OpenPayout)
		sum.OpenByState[p.State]++
	}
	slices.SortFunc(sum.OpenPayouts, func(a, b OpenPayout) int { return a.Since.Compare(b.Since) })
	for _, b := range batches {
		sum.Batches = append(sum.Batches, *b)
	}
	slices.SortFunc(sum.Batches, func(a, b WaitingBatch) int { return a.Since.Compare(b.Since) })
	return sum, nil
}

// newest keeps the last `listed` steps, newest first.
func newest(list []Step, s Step) []Step {
	list = append([]Step{s}, list...)
	if len(list) > listed {
		list = list[:listed]
	}
	return list
}
