package pipeline

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
)

const sourceTracker = "payoutd/tracker"

// maxPagesPerLookup bounds the withdrawal pages one look-up reads, so a
// huge payout does not hold a worker; the rest is read by the next one.
const maxPagesPerLookup = 20

// expire marks payouts heard of too long without a PayoutSubmitted as
// foreign: they are given up on in derive.
func (s *trackerSession) expire(now time.Time) {
	for _, p := range s.procs {
		for _, tp := range p.open {
			if tp.Kind == entryPayout && !tp.Submitted && !tp.OfRejected && !tp.busy && now.Sub(tp.FirstHeard) >= s.cfg.MatchWait {
				tp.foreign, tp.dirty = true, true
			}
		}
	}
}

// derive turns every changed store entry into what follows from it: status
// events found by polls, intent states and outcomes, alerts, and the
// entry's changelog record (a tombstone once it is done with).
func (s *trackerSession) derive(ctx context.Context, now time.Time) ([]*kgo.Record, *txnStats, error) {
	st := newTxnStats()
	var out []*kgo.Record
	var firstErr error
	add := func(topic string, e events.Event) {
		r, err := events.NewRecord(topic, sourceTracker, e)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		out = append(out, r)
	}
	for _, p := range s.procs {
		for key, tp := range p.open {
			if !tp.dirty {
				continue
			}
			tp.dirty = false
			from := len(out)
			done := s.step(p, tp, now, add, st)
			if s.cfg.Tracer != nil {
				// Each intent's state and outcome are published in its trace.
				continueIntentTraces(ctx, out[from:], tp.Items, s.cfg.Topics.Intents, s.cfg.Topics.Outcomes)
			}
			var entry *storedPayout
			if done {
				delete(p.open, key)
			} else {
				entry = &tp.storedPayout
			}
			r, err := s.changelogRecord(p, key, entry)
			if err != nil {
				return nil, nil, err
			}
			out = append(out, r)
		}
	}
	if firstErr != nil {
		return nil, nil, firstErr
	}
	return out, st, nil
}

// step decides what one changed entry leads to; true when the entry is done.
func (s *trackerSession) step(p *processor, tp *trackedPayout, now time.Time, add func(string, events.Event), st *txnStats) bool {
	log := s.log.With("payout", tp.PayoutID, "batch", tp.BatchID, "partition", p.partition)
	if err := tp.failing; err != nil {
		tp.failing = nil
		s.raise(tp, AlertLookupFailing, fmt.Sprintf("Calypso look-ups for %s failed %d times in a row; still retrying, every %s at most: %v",
			tp.key, tp.Failures, s.cfg.MaxRetryDelay, err), now, add, st)
	}
	if tp.Kind == entryRejected {
		r := tp.rejectedCheck
		tp.rejectedCheck = nil
		switch {
		case r == nil:
			return false
		case r.found != nil:
			tp.PayoutID = string(r.found.ID)
			s.raise(tp, AlertStatusForRejectedBatch, fmt.Sprintf("batch %s was reported rejected and its intents failed, but Calypso has payout %s (%s) for it",
				tp.BatchID, r.found.ID, r.found.State), now, add, st)
		default:
			log.Info("rejection confirmed: Calypso has no payout for the batch")
		}
		return true
	}

	if mp := tp.polledState; mp != nil {
		tp.polledState = nil
		advance(&tp.storedPayout, mp.State)
		add(s.cfg.Topics.Outcomes, statusEvent(tp, mp.State, mp.Currency, now))
		st.polled++
		if mp.State.Terminal() {
			tp.TerminalPublished = true
		}
		log.Info("poll found a new state", "state", string(mp.State))
	}
	if tp.foreign {
		tp.foreign = false
		s.raise(tp, AlertForeignPayout, fmt.Sprintf("statuses of payout %s came for %s without a PayoutSubmitted: not a payout of payoutd, not tracked",
			tp.PayoutID, s.cfg.MatchWait), now, add, st)
		p.unmatched.add(tp.PayoutID, unmatchedPayout{state: tp.State, terminalPublished: tp.TerminalPublished})
		st.unmatched++
		return true
	}
	if tp.ItemsFromCalypso && tp.NextPage == -1 && !tp.Parked {
		if problem := itemsFromWithdrawals(tp); problem != "" {
			s.raise(tp, AlertPayoutWithoutItems, problem, now, add, st)
			tp.Parked = true
		} else {
			log.Info("items of a PayoutSubmitted without them read from Calypso's withdrawal rows", "items", len(tp.Items))
			tp.ItemsFromCalypso, tp.announce = false, true
		}
	}
	if tp.Submitted && len(tp.Items) == 0 && !tp.ItemsFromCalypso {
		s.raise(tp, AlertPayoutWithoutItems, fmt.Sprintf("PayoutSubmitted of payout %s carries no items: its intents cannot be resolved", tp.PayoutID), now, add, st)
		tp.Parked = true
	}
	if tp.OfRejected && tp.State.Terminal() {
		// Its intents were failed by the rejection; a person decides
		// (the alert said so). What remains is to publish how it ended.
		if !tp.TerminalPublished {
			add(s.cfg.Topics.Outcomes, statusEvent(tp, tp.State, tp.Currency, now))
		}
		p.recent.add(tp.PayoutID, struct{}{})
		log.Warn("payout of a rejected batch ended", "state", string(tp.State))
		return true
	}
	if tp.Parked {
		return false
	}
	if tp.Submitted && tp.State.Terminal() && !tp.ItemsFromCalypso {
		res, ready, problem := s.outcomes(tp, now)
		switch {
		case problem != "":
			s.raise(tp, AlertWithdrawalUnmatched, problem, now, add, st)
			tp.Parked = true
		case ready:
			if !tp.TerminalPublished {
				add(s.cfg.Topics.Outcomes, statusEvent(tp, tp.State, tp.Currency, now))
			}
			var settled, failed int64
			for i, it := range tp.Items {
				o := events.IntentOutcome{IntentID: it.IntentID, BatchID: tp.BatchID, PayoutID: tp.PayoutID, Account: tp.Account,
					Currency: tp.Currency, Amount: it.Amount, Address: it.Address, PayoutState: string(tp.State), ResolvedAt: now}
				is := events.IntentState{IntentID: it.IntentID, BatchID: tp.BatchID, PayoutID: tp.PayoutID, UpdatedAt: now}
				if r := res[i]; r.paid {
					is.State = events.StatusSettled
					add(s.cfg.Topics.Intents, is)
					add(s.cfg.Topics.Outcomes, events.IntentSettled{IntentOutcome: o})
					settled++
				} else {
					is.State, is.Code, is.Reason = events.StatusFailed, r.code, r.reason
					add(s.cfg.Topics.Intents, is)
					add(s.cfg.Topics.Outcomes, events.IntentFailed{IntentOutcome: o, Code: r.code, Reason: r.reason})
					failed++
				}
			}
			st.resolved++
			st.settled += settled
			st.failed += failed
			p.recent.add(tp.PayoutID, struct{}{})
			st.resolvedLog = append(st.resolvedLog, func() {
				log.Info("payout resolved", "state", string(tp.State), "intents", len(tp.Items), "settled", settled, "failed", failed)
			})
			return true
		}
	}
	if tp.announce && !tp.ItemsFromCalypso {
		tp.announce = false
		for _, it := range tp.Items {
			add(s.cfg.Topics.Intents, events.IntentState{IntentID: it.IntentID, State: events.StatusSubmitted,
				BatchID: tp.BatchID, PayoutID: tp.PayoutID, UpdatedAt: now})
		}
	}
	return false
}

// raise publishes an alert of kind for tp, once per entry and kind.
func (s *trackerSession) raise(tp *trackedPayout, kind events.AlertKind, msg string, now time.Time, add func(string, events.Event), st *txnStats) {
	if tp.alerted(kind) {
		return
	}
	tp.Alerted = append(tp.Alerted, kind)
	a := events.Alert{Kind: kind, PayoutID: tp.PayoutID, Account: tp.Account, Message: msg, RaisedAt: now}
	if isUUID(tp.BatchID) {
		a.BatchID = tp.BatchID
	}
	add(s.cfg.Topics.Outcomes, a)
	st.alerts[kind]++
	s.log.Warn("alert raised", "kind", string(kind), "payout", tp.PayoutID, "batch", tp.BatchID, "message", msg)
}

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func isUUID(s string) bool { return uuidPattern.MatchString(s) }

// statusEvent is the event a webhook for state would have produced:
// PayoutConfirmed for CONFIRMED, PayoutStatusChanged otherwise; same ids,
// so a webhook that arrives too, late, repeats its ce_id.
func statusEvent(tp *trackedPayout, state calypso.State, currency string, now time.Time) events.Event {
	st := events.PayoutStatus{PayoutID: tp.PayoutID, BatchID: tp.BatchID, State: string(state), Terminal: state.Terminal(),
		Source: events.FromPoll, OccurredAt: now}
	if state == calypso.StateConfirmed {
		return events.PayoutConfirmed{PayoutStatus: st}
	}
	if currency == "" {
		currency = tp.Currency
	}
	return events.PayoutStatusChanged{PayoutStatus: st, Currency: currency}
}

// intentResult is how one intent of a terminal payout ended.
type intentResult struct {
	paid         bool
	code, reason string
}

// outcomes says how each item of a terminal payout ended (by index), once
// that is known. A PARTIAL payout's items are matched to its withdrawals by
// what payoutd controls: each row's comment is the intent id. Only when
// Calypso left the comment out is the address compared, ignoring case and
// spaces. Anything that does not map one to one is a problem: the payout is
// not resolved (fail closed) and a person is alerted.
func (s *trackerSession) outcomes(tp *trackedPayout, now time.Time) (res []intentResult, ready bool, problem string) {
	res = make([]intentResult, len(tp.Items))
	switch tp.State {
	case calypso.StateCompleted:
		for i := range res {
			res[i].paid = true
		}
		return res, true, ""
	case calypso.StatePartial:
	default: // FAILED, CANCELED
		for i := range res {
			res[i] = intentResult{code: string(tp.State), reason: fmt.Sprintf("mass payout %s ended %s at Calypso", tp.PayoutID, tp.State)}
		}
		return res, true, ""
	}
	if tp.NextPage != -1 {
		return nil, false, "" // the withdrawal list is still being read
	}
	byIntent := make(map[string]int, len(tp.Items))
	for i, it := range tp.Items {
		byIntent[it.IntentID] = i
	}
	ids := make([]string, 0, len(tp.Withdrawals))
	for id := range tp.Withdrawals {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var problems []string
	of := make(map[int]string, len(ids))
	for _, id := range ids {
		w := tp.Withdrawals[id]
		idx, n := -1, 0
		if i, ok := byIntent[strings.TrimSpace(w.Comment)]; ok {
			idx, n = i, 1
		} else {
			for i, it := range tp.Items {
				if calypso.SameAddress(it.Address, w.Address) {
					idx = i
					n++
				}
			}
		}
		switch {
		case n != 1:
			problems = append(problems, fmt.Sprintf("withdrawal %s (%s) maps to %d items", id, w.State, n))
		case of[idx] != "":
			problems = append(problems, fmt.Sprintf("withdrawals %s and %s both map to intent %s", of[idx], id, tp.Items[idx].IntentID))
		default:
			of[idx] = id
		}
	}
	for i, it := range tp.Items {
		if of[i] == "" {
			problems = append(problems, fmt.Sprintf("intent %s has no withdrawal", it.IntentID))
		}
	}
	if len(problems) > 0 {
		if len(problems) > 5 {
			problems = append(problems[:5], fmt.Sprintf("and %d more", len(problems)-5))
		}
		return nil, false, fmt.Sprintf("PARTIAL payout %s cannot be resolved per intent: %s", tp.PayoutID, strings.Join(problems, "; "))
	}
	pending := false
	for i := range tp.Items {
		w := tp.Withdrawals[of[i]]
		switch w.State {
		case calypso.WithdrawalCompleted:
			res[i].paid = true
		case calypso.WithdrawalFailed:
			res[i] = intentResult{code: w.Code, reason: w.Reason}
			if res[i].code == "" {
				res[i].code = w.State
			}
			if res[i].reason == "" {
				res[i].reason = fmt.Sprintf("withdrawal %s of mass payout %s failed", of[i], tp.PayoutID)
			}
		default: // not decided yet: read the list again later
			pending = true
		}
	}
	if pending {
		tp.NextPage, tp.NextTry = 0, now.Add(s.cfg.RetryDelay)
		return nil, false, ""
	}
	return res, true, ""
}

// dispatch hands due look-ups to idle workers, without waiting for one.
func (s *trackerSession) dispatch(jobs chan<- lookup, now time.Time) {
	for _, p := range s.procs {
		for key, tp := range p.open {
			if tp.busy || tp.Parked || now.Before(tp.NextTry) {
				continue
			}
			var kind lookupKind
			switch {
			case tp.Kind == entryRejected:
				kind = lookupRejected
			case tp.Submitted && (tp.ItemsFromCalypso || tp.State == calypso.StatePartial) && tp.NextPage != -1:
				kind = lookupWithdrawals
			case (tp.Submitted || tp.OfRejected) && !tp.State.Terminal() && now.Sub(tp.Heard) >= tp.PollEvery:
				kind = lookupPoll
			default:
				continue
			}
			j := lookup{partition: p.partition, gen: p.gen, key: key, kind: kind, entry: tp.storedPayout}
			select {
			case jobs <- j:
				tp.busy = true
			default:
				return // every worker is busy
			}
		}
	}
}

// work does one look-up at Calypso. It only asks; the loop decides.
func (s *trackerSession) work(ctx context.Context, j lookup) lookupResult {
	res := lookupResult{lookup: j, nextPage: j.entry.NextPage}
	client, err := s.accounts.client(j.entry.Account)
	if err != nil {
		res.err = err
		return res
	}
	call := func(f func(context.Context) error) error {
		cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
		defer cancel()
		return f(cctx)
	}
	switch j.kind {
	case lookupRejected:
		s.Stats.Lookups.Add(1)
		err := call(func(ctx context.Context) (err error) {
			res.found, err = client.MassPayoutByIdempotencyKey(ctx, j.entry.BatchID)
			return err
		})
		if errors.Is(err, calypso.ErrNotFound) {
			res.found, res.notFound = nil, true
		} else if err != nil {
			res.err = fmt.Errorf("looking up batch %s by idempotency key: %w", j.entry.BatchID, err)
		}
		return res
	case lookupPoll:
		s.Stats.Polls.Add(1)
		if err := call(func(ctx context.Context) (err error) {
			res.polled, err = client.MassPayout(ctx, j.key)
			return err
		}); err != nil {
			res.polled, res.err = nil, fmt.Errorf("polling: %w", err)
			return res
		}
		if res.polled.State != calypso.StatePartial || !j.entry.Submitted {
			return res
		}
	}
	// The withdrawal list, a page per call, from where the last look-up
	// stopped; each page's results are kept even when a later page fails.
	page := max(j.entry.NextPage, 0)
	res.listed = true
	res.withdrawals = map[string]withdrawalResult{}
	for range maxPagesPerLookup {
		s.Stats.Lookups.Add(1)
		var pg *calypso.WithdrawalPage
		if err := call(func(ctx context.Context) (err error) {
			pg, err = client.MassPayoutWithdrawals(ctx, j.entry.PayoutID, page, s.cfg.PageSize)
			return err
		}); err != nil {
			res.nextPage, res.err = page, fmt.Errorf("listing withdrawals, page %d: %w", page, err)
			return res
		}
		for _, w := range pg.Result {
			r := withdrawalResult{State: w.State, Comment: w.Comment, Address: w.Address(), Amount: w.Amount.String()}
			if e, bad := w.FirstError(); bad && w.State != calypso.WithdrawalCompleted {
				r.Code, r.Reason = e.Status, e.ErrorMessage
				if r.Reason == "" {
					r.Reason = "withdrawal failed: " + e.Status
				}
			}
			res.withdrawals[w.Key()] = r
		}
		page++
		if len(pg.Result) == 0 || page >= pg.Total {
			res.nextPage = -1
			return res
		}
	}
	res.nextPage = page
	return res
}

// itemsFromWithdrawals rebuilds tp's items from its withdrawal rows, each
// row's comment being its intent id, and resets the list so that a PARTIAL
// payout reads its withdrawals' final states afresh. Anything short of one
// row per intent, each with its own intent id, is a problem: the payout is
// not resolved.
func itemsFromWithdrawals(tp *trackedPayout) string {
	ids := make([]string, 0, len(tp.Withdrawals))
	for id := range tp.Withdrawals {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	seen := map[string]bool{}
	var items []events.BatchItem
	for _, id := range ids {
		w := tp.Withdrawals[id]
		intent := strings.TrimSpace(w.Comment)
		amt, err := events.ParseAmount(w.Amount)
		if intent == "" || seen[intent] || err != nil {
			return fmt.Sprintf("PayoutSubmitted of payout %s carries no items, and its withdrawal %s names no intent of its own (comment %q, amount %q)",
				tp.PayoutID, id, w.Comment, w.Amount)
		}
		seen[intent] = true
		items = append(items, events.BatchItem{IntentID: intent, Address: strings.TrimSpace(w.Address), Amount: amt})
	}
	if len(items) != tp.ItemCount {
		return fmt.Sprintf("PayoutSubmitted of payout %s carries no items, and Calypso lists %d withdrawals for its %d", tp.PayoutID, len(items), tp.ItemCount)
	}
	tp.Items, tp.Withdrawals, tp.NextPage = items, nil, 0
	return ""
}
