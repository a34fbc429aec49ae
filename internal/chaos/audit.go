// Package chaos proves payoutd's money invariants while its processes die:
// it runs the components as separate OS processes against one broker and one
// fault-injecting sandbox, kills them at random, and then audits what Kafka
// and Calypso hold.
package chaos

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso/sandbox"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
)

// Expect is what was sent: the intent ids that must be paid once, and the
// keys of the records that must end in the DLQ as invalid.
type Expect struct {
	Valid   map[string]bool
	Invalid map[string]bool
	// Refused are intents to an address Calypso refuses: each must fail
	// alone (one IntentFailed, in no payout) while the rest of its batch is
	// paid.
	Refused map[string]bool
}

// Report is the audit's verdict. The zero counts of DoublePaid, Lost and
// the rest are the invariants; Problems names each violation.
type Report struct {
	Intents       int // valid intents sent
	PaidOnce      int // valid intents in exactly one Calypso payout with one terminal outcome
	DLQ           int // invalid records found in the DLQ with a reason
	Refused       int // intents to a refused address that failed alone, as they must
	DoublePaid    int // intents in more than one payout
	Lost          int // valid intents in no payout, or invalid ones missing from the DLQ
	NotTerminal   int // paid intents without exactly one terminal outcome
	DoubleCreated int // idempotency keys with more than one payout
	BadTotals     int // batches whose total is not their items' sum
	MissingRaw    int // webhooks acknowledged to the sandbox but absent from the raw topic
	// RejectedButPaid counts batches reported PayoutRejected, and intents
	// reported IntentFailed, although Calypso holds their payout (by
	// idempotency key = batch id) or their withdrawal did not fail.
	RejectedButPaid int
	// CreatedAfterRejection counts batches whose payout Calypso created
	// after we had reported them PayoutRejected (a replayed batch).
	CreatedAfterRejection int
	// FinalOverwritten counts intents whose SETTLED or FAILED state on the
	// intents topic was followed by a lower-ranked one, or whose latest
	// state there is not the final state their outcome says.
	FinalOverwritten int
	Kills            int
	BrokerRestarts   int
	Problems         []string
}

// OK reports whether every invariant held.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// String is the one summary line.
func (r Report) String() string {
	return fmt.Sprintf("chaos: intents=%d paid_once=%d dlq=%d refused=%d double_paid=%d lost=%d not_terminal=%d double_created=%d bad_totals=%d missing_raw=%d rejected_but_paid=%d created_after_rejection=%d final_overwritten=%d kills=%d broker_restarts=%d",
		r.Intents, r.PaidOnce, r.DLQ, r.Refused, r.DoublePaid, r.Lost, r.NotTerminal, r.DoubleCreated, r.BadTotals, r.MissingRaw,
		r.RejectedButPaid, r.CreatedAfterRejection, r.FinalOverwritten, r.Kills, r.BrokerRestarts)
}

func (r *Report) problem(format string, args ...any) {
	if len(r.Problems) < 50 {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// Audit checks the invariants of DESIGN.md against what the topics and the
// sandbox hold. kafka are client options reaching the broker.
func Audit(ctx context.Context, kafka []kgo.Opt, topics events.Topics, sb *sandbox.Sandbox, want Expect) (Report, error) {
	topics = topics.WithDefaults()
	rep := Report{Intents: len(want.Valid)}
	all, err := readAll(ctx, kafka, topics.Batches, topics.Outcomes, topics.DLQ, topics.WebhooksRaw, topics.Intents)
	if err != nil {
		return rep, err
	}

	// Calypso: one payout per idempotency key, each intent in one payout.
	perKey := map[string]int{}
	payoutsOf := map[string]int{}
	byKey := map[string]sandbox.Payout{}
	itemOf := map[string]sandbox.Item{} // by intent id (the item's comment)
	for _, p := range sb.Payouts() {
		perKey[p.IdempotencyKey]++
		byKey[p.IdempotencyKey] = p
		for _, it := range p.Items {
			payoutsOf[it.Comment]++
			itemOf[it.Comment] = it
		}
	}
	for key, n := range perKey {
		if n > 1 {
			rep.DoubleCreated++
			rep.problem("idempotency key %s has %d payouts", key, n)
		}
	}

	// Batches: totals are sums.
	for _, r := range all[topics.Batches] {
		_, e, err := events.Decode(r)
		if err != nil {
			rep.problem("unreadable batch at %s[%d]@%d: %v", r.Topic, r.Partition, r.Offset, err)
			continue
		}
		if b, ok := e.(events.BatchPlanned); ok && !b.Total.Equal(b.Sum()) {
			rep.BadTotals++
			rep.problem("batch %s total %s, items sum %s", b.BatchID, b.Total, b.Sum())
		}
	}

	// Outcomes: one terminal outcome per intent, by distinct ce_id; no
	// refusal of what Calypso holds.
	terminal := map[string]map[string]bool{}
	final := map[string]events.IntentStatus{} // the final state each intent's outcome says
	failedFlagged := map[string]bool{}
	failedIntents := map[string]struct{}{}
	rejected := map[string]bool{}
	for _, r := range all[topics.Outcomes] {
		m, e, err := events.Decode(r)
		if err != nil {
			rep.problem("unreadable outcome at %s[%d]@%d: %v", r.Topic, r.Partition, r.Offset, err)
			continue
		}
		var intent string
		switch o := e.(type) {
		case events.IntentSettled:
			intent = o.IntentID
			final[intent] = events.StatusSettled
		case events.IntentFailed:
			intent = o.IntentID
			final[intent] = events.StatusFailed
			failedIntents[intent] = struct{}{}
			if !failedFlagged[intent] {
				if why := failedButPaid(o, itemOf, byKey); why != "" {
					failedFlagged[intent] = true
					rep.RejectedButPaid++
					rep.problem("intent %s reported failed (%s: %s) but %s", intent, o.Code, o.Reason, why)
				}
			}
		case events.PayoutRejected:
			if rejected[o.BatchID] {
				continue
			}
			rejected[o.BatchID] = true
			p, ok := byKey[o.BatchID]
			if !ok {
				continue
			}
			// The submitter's decision time; the record's timestamp only
			// when it is missing (milliseconds, too coarse to order).
			at := o.RejectedAt
			if at.IsZero() {
				at = r.Timestamp
			}
			if p.Created.After(at) {
				rep.CreatedAfterRejection++
				rep.problem("batch %s rejected at %s (%s), then created at Calypso as payout %s at %s",
					o.BatchID, at.UTC().Format(time.RFC3339Nano), o.Code, p.ID, p.Created.UTC().Format(time.RFC3339Nano))
			} else {
				rep.RejectedButPaid++
				rep.problem("batch %s reported rejected (%s: %s) but Calypso holds it as payout %s (%s)", o.BatchID, o.Code, o.Message, p.ID, p.State)
			}
			continue
		default:
			continue
		}
		if terminal[intent] == nil {
			terminal[intent] = map[string]bool{}
		}
		terminal[intent][m.ID] = true
	}

	for id := range want.Valid {
		switch n := payoutsOf[id]; {
		case n > 1:
			rep.DoublePaid++
			rep.problem("intent %s is in %d payouts", id, n)
		case n == 0:
			// With only transient faults injected, an unpaid intent is lost,
			// whether or not an outcome says it failed.
			rep.Lost++
			rep.problem("intent %s is in no payout (%d outcomes)", id, len(terminal[id]))
		case len(terminal[id]) != 1:
			rep.NotTerminal++
			rep.problem("intent %s has %d terminal outcomes", id, len(terminal[id]))
		default:
			rep.PaidOnce++
		}
	}

	// Intents topic: a final state is never followed by a lower one, and
	// the latest state is the final state the outcome says.
	latest := map[string]events.IntentStatus{}
	overwritten := map[string]bool{}
	for _, r := range all[topics.Intents] {
		if r.Value == nil {
			continue // a tombstone
		}
		_, e, err := events.Decode(r)
		if err != nil {
			rep.problem("unreadable intent state at %s[%d]@%d: %v", r.Topic, r.Partition, r.Offset, err)
			continue
		}
		st, ok := e.(events.IntentState)
		if !ok {
			continue
		}
		prev, seen := latest[st.IntentID]
		if seen && prev.Final() && st.State.Rank() < prev.Rank() && !overwritten[st.IntentID] {
			overwritten[st.IntentID] = true
			rep.FinalOverwritten++
			rep.problem("intent %s: final state %s overwritten by %s at %s[%d]@%d", st.IntentID, prev, st.State, r.Topic, r.Partition, r.Offset)
		}
		latest[st.IntentID] = st.State
	}
	for intent, want := range final {
		if got, ok := latest[intent]; ok && got != want && !overwritten[intent] {
			overwritten[intent] = true
			rep.FinalOverwritten++
			rep.problem("intent %s: outcome says %s, its latest state is %s", intent, want, got)
		}
	}

	// Refused recipients: failed alone, never paid, one outcome.
	for id := range want.Refused {
		_, failed := failedIntents[id]
		switch n := payoutsOf[id]; {
		case n > 0:
			rep.DoublePaid++
			rep.problem("intent %s to a refused address is in %d payouts", id, n)
		case len(terminal[id]) == 0:
			rep.Lost++
			rep.problem("intent %s to a refused address has no outcome", id)
		case len(terminal[id]) != 1 || !failed:
			rep.NotTerminal++
			rep.problem("intent %s to a refused address has %d terminal outcomes (failed: %v)", id, len(terminal[id]), failed)
		default:
			rep.Refused++
		}
	}

	// DLQ: every invalid record, with a reason other than duplicate.
	inDLQ := map[string]bool{}
	for _, r := range all[topics.DLQ] {
		for _, h := range r.Headers {
			if h.Key == pipeline.HeaderDLQReason && pipeline.Reason(h.Value) != pipeline.ReasonDuplicate {
				inDLQ[string(r.Key)] = true
			}
		}
	}
	for key := range want.Invalid {
		if inDLQ[key] {
			rep.DLQ++
		} else {
			rep.Lost++
			rep.problem("invalid record %s is not in the DLQ", key)
		}
	}

	// Webhooks: every one the sandbox saw acknowledged is archived byte for byte.
	raw := map[string]bool{}
	for _, r := range all[topics.WebhooksRaw] {
		raw[string(r.Value)] = true
	}
	for _, w := range sb.Webhooks() {
		if w.Delivered && !raw[string(w.Body)] {
			rep.MissingRaw++
			rep.problem("webhook %d (%s %s) acknowledged but not archived", w.ID, w.EventType, w.State)
		}
	}
	sort.Strings(rep.Problems)
	return rep, nil
}

// failedButPaid says why an IntentFailed contradicts Calypso, or "": the
// intent's withdrawal at Calypso did not fail, or the outcome came from a
// refusal (no payout id) while Calypso holds its batch's payout.
func failedButPaid(o events.IntentFailed, itemOf map[string]sandbox.Item, byKey map[string]sandbox.Payout) string {
	if it, ok := itemOf[o.IntentID]; ok && it.State != "FAILED" {
		return fmt.Sprintf("its withdrawal %s at Calypso is %s", it.WithdrawalID, it.State)
	}
	if p, ok := byKey[o.BatchID]; ok && o.PayoutID == "" {
		return fmt.Sprintf("Calypso holds its batch %s as payout %s (%s)", o.BatchID, p.ID, p.State)
	}
	return ""
}

// readAll reads the topics from the start to their end, read_committed.
func readAll(ctx context.Context, kafka []kgo.Opt, topics ...string) (map[string][]*kgo.Record, error) {
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, kafka...),
		kgo.ConsumeTopics(topics...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords())...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("listing end offsets: %w", err)
	}
	remaining := map[string]map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			if remaining[o.Topic] == nil {
				remaining[o.Topic] = map[int32]int64{}
			}
			remaining[o.Topic][o.Partition] = o.Offset
		}
	})
	out := map[string][]*kgo.Record{}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for len(remaining) > 0 {
		f := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("reading %s: %w (still to read: %v)", strings.Join(topics, ","), err, remaining)
		}
		f.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				out[r.Topic] = append(out[r.Topic], r)
			}
			if end, ok := remaining[r.Topic][r.Partition]; ok && r.Offset+1 >= end {
				delete(remaining[r.Topic], r.Partition)
				if len(remaining[r.Topic]) == 0 {
					delete(remaining, r.Topic)
				}
			}
		})
	}
	return out, nil
}
