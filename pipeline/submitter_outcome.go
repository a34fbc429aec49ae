package pipeline

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
)

// outcomeKind names what happened to a batch, for the session's bookkeeping.
type outcomeKind int

func (k outcomeKind) String() string {
	switch k {
	case outcomeSubmitted:
		return "submitted"
	case outcomeRejected:
		return "rejected"
	case outcomeDeferred:
		return "deferred"
	case outcomeUndecided:
		return "undecided"
	case outcomeQuarantined:
		return "quarantined"
	case outcomeReplanned:
		return "replanned"
	}
	return "unknown"
}

const (
	outcomeSubmitted outcomeKind = iota
	outcomeRejected
	outcomeDeferred
	outcomeUndecided
	outcomeQuarantined
	outcomeReplanned
)

// AlertBatchContradicted: a payout found under a batch's idempotency key is
// not that batch (currency, total or external id differ).
const AlertBatchContradicted events.AlertKind = "BATCH_CONTRADICTED"

const submitterSource = "payoutd/submitter"

// result encodes evs with the batch's new state into the batch's outcome.
func (h *handling) result(kind outcomeKind, state events.BatchState, evs []outEvent, extra ...*kgo.Record) laneResult {
	evs = append(evs, outEvent{h.l.s.cfg.Topics.BatchStates, state})
	recs, err := records(submitterSource, evs)
	if err != nil {
		// Encoding our own events cannot fail short of a bug; park the
		// batch rather than lose it.
		h.log.Error("encoding the batch's outcome failed", "error", err)
		recs, _ = records(submitterSource, []outEvent{{h.l.s.cfg.Topics.BatchStates, state}})
		kind = outcomeDeferred
	}
	if h.l.s.cfg.Tracer != nil {
		// An intent failed here is published in its own trace.
		continueIntentTraces(context.Background(), recs, h.b.Items, h.l.s.cfg.Topics.Intents, h.l.s.cfg.Topics.Outcomes)
	}
	rec := h.e.p.rec
	return laneResult{partition: rec.Partition, offset: rec.Offset, batchID: h.b.BatchID, kind: kind,
		records: append(recs, extra...), state: &state}
}

// submitted: Calypso has the batch's payout. Only PayoutSubmitted, with the
// items, and the batch state are written: from here the tracker is the one
// writer of the intents' states, in payout order, so a final state is never
// overwritten by a late SUBMITTED.
func (h *handling) submitted(p *calypso.MassPayout, recovered bool) laneResult {
	s, b := h.l.s, h.b
	s.Stats.Submitted.Add(1)
	if recovered {
		s.Stats.Recovered.Add(1)
	}
	now := s.cfg.Now()
	sub := events.PayoutSubmitted{
		BatchID: b.BatchID, PayoutID: string(p.ID), IdempotencyKey: b.IdempotencyKey,
		Account: b.Account, Currency: b.Currency, ItemCount: len(b.Items), Items: b.Items, Total: b.Total,
		State: string(p.State), SubmittedAt: now,
	}
	if p.State == "" {
		sub.State = string(calypso.StateCreationInProgress)
	}
	if fee := p.TotalFee.Decimal(); !fee.IsZero() {
		a := events.AmountOf(fee)
		sub.Fee = &a
	}
	h.log.Info("payout submitted", "payout", sub.PayoutID, "items", len(b.Items), "total", b.Total.String(), "found_by_key", recovered)
	return h.result(outcomeSubmitted,
		events.BatchState{BatchID: b.BatchID, State: events.BatchSubmitted, PayoutID: sub.PayoutID, UpdatedAt: now},
		[]outEvent{{s.cfg.Topics.Outcomes, sub}})
}

// rejected: Calypso refused the batch and no payout exists for it; every
// intent fails.
func (h *handling) rejected(api *calypso.APIError) laneResult {
	s, b := h.l.s, h.b
	s.Stats.Rejected.Add(1)
	now := s.cfg.Now()
	reason := fmt.Sprintf("Calypso %s refused the payout: %s %s", api.Op, api.Code, api.Message)
	h.log.Warn("batch rejected by Calypso", "code", api.Code, "message", api.Message)
	evs := []outEvent{{s.cfg.Topics.Outcomes, events.PayoutRejected{
		BatchID: b.BatchID, Account: b.Account, Currency: b.Currency, ItemCount: len(b.Items), Total: b.Total,
		Code: api.Code, Message: api.Message, RejectedAt: now,
	}}}
	for _, it := range b.Items {
		evs = append(evs, h.failIntent(it, api.Code, reason, now)...)
	}
	return h.result(outcomeRejected,
		events.BatchState{BatchID: b.BatchID, State: events.BatchRejected, Reason: reason, UpdatedAt: now}, evs)
}

func (h *handling) failIntent(it events.BatchItem, code, reason string, now time.Time) []outEvent {
	s, b := h.l.s, h.b
	return []outEvent{
		{s.cfg.Topics.Intents, events.IntentState{IntentID: it.IntentID, State: events.StatusFailed, BatchID: b.BatchID, Code: code, Reason: reason, UpdatedAt: now}},
		{s.cfg.Topics.Outcomes, events.IntentFailed{IntentOutcome: events.IntentOutcome{
			IntentID: it.IntentID, BatchID: b.BatchID, Account: b.Account, Currency: b.Currency, Amount: it.Amount,
			Address: it.Address, PayoutState: string(calypso.StateFailed), ResolvedAt: now,
		}, Code: code, Reason: reason}},
	}
}

// replanned: Calypso refused the batch for one row and created nothing. That
// intent fails; the others are planned again as a new batch (a new id from
// the new content), and the old batch's state links to it.
func (h *handling) replanned(bad int, api *calypso.APIError) laneResult {
	s, b := h.l.s, h.b
	s.Stats.Replanned.Add(1)
	now := s.cfg.Now()
	rest := b
	rest.Items = append(append([]events.BatchItem(nil), b.Items[:bad]...), b.Items[bad+1:]...)
	rest.Total = rest.Sum()
	rest.PlannedAt = now
	rest.BatchID = batchID(rest)
	rest.IdempotencyKey = rest.BatchID
	it := b.Items[bad]
	reason := fmt.Sprintf("Calypso %s refused the payout for this recipient: %s %s; the batch's other %d intents were planned again as batch %s",
		api.Op, api.Code, api.Message, len(rest.Items), rest.BatchID)
	h.log.Warn("batch refused for one recipient; that intent fails, the rest are planned again",
		"intent", it.IntentID, "code", api.Code, "message", api.Message, "replanned_as", rest.BatchID)
	evs := append(h.failIntent(it, api.Code, reason, now), outEvent{s.cfg.Topics.Batches, rest})
	for _, r := range rest.Items {
		evs = append(evs, outEvent{s.cfg.Topics.Intents, events.IntentState{
			IntentID: r.IntentID, State: events.StatusBatched, BatchID: rest.BatchID, UpdatedAt: now}})
	}
	return h.result(outcomeReplanned, events.BatchState{BatchID: b.BatchID, State: events.BatchReplanned,
		ReplannedAs: rest.BatchID, Reason: reason, UpdatedAt: now}, evs)
}

// deferDelay is the wait before a parked batch's next attempt.
func (s *Submitter) deferDelay(attempt int) time.Duration {
	delay := s.cfg.DeferDelay << min(max(attempt-1, 0), 20)
	if delay > s.cfg.MaxDeferDelay || delay <= 0 {
		delay = s.cfg.MaxDeferDelay
	}
	return delay
}

// writeBack is the batch's copy for its next attempt, written once, in the
// transaction that parks it; the session then commits past the original.
func (h *handling) writeBack(retryAt time.Time, undecidedSince time.Time) *kgo.Record {
	again := copyForRetry(h.e.p.rec)
	setHeader(again, HeaderAttempt, strconv.Itoa(h.e.p.attempt+1))
	setHeader(again, HeaderNotBefore, retryAt.UTC().Format(time.RFC3339Nano))
	if !undecidedSince.IsZero() {
		setHeader(again, HeaderUndecidedSince, undecidedSince.UTC().Format(time.RFC3339Nano))
	}
	return again
}

// deferred: the batch waits for funds, a lower fee or Calypso; it is written
// back to be tried again at retryAt (zero: after the growing defer delay).
func (h *handling) deferred(reason events.DeferReason, required, available calypso.Amount, retryAt time.Time) laneResult {
	s, b := h.l.s, h.b
	s.Stats.Deferred.Add(1)
	now := s.cfg.Now()
	if retryAt.IsZero() {
		retryAt = now.Add(s.deferDelay(h.e.p.attempt))
	}
	d := events.PayoutDeferred{
		BatchID: b.BatchID, Account: b.Account, Currency: b.Currency, Reason: reason,
		Required: events.AmountOf(required.Decimal()), Available: events.AmountOf(available.Decimal()),
		Attempt: h.e.p.attempt, RetryAt: retryAt, DeferredAt: now,
	}
	h.log.Warn("batch deferred", "reason", reason, "required", d.Required.String(), "available", d.Available.String(), "retry_at", d.RetryAt)
	return h.result(outcomeDeferred,
		events.BatchState{BatchID: b.BatchID, State: events.BatchDeferred, Reason: string(reason), UpdatedAt: now},
		[]outEvent{{s.cfg.Topics.Outcomes, d}}, h.writeBack(retryAt, time.Time{}))
}

// parkUnavailable defers a batch whose lane could not reach Calypso (or
// stopped) and that certainly was not created by this attempt.
func (h *handling) parkUnavailable(why string, retryAt time.Time) laneResult {
	h.log.Warn("Calypso unavailable for this account; batch parked", "reason", why)
	return h.deferred(events.DeferCalypsoUnavailable, calypso.NewAmount(h.b.Total.Decimal()), calypso.Amount{}, retryAt)
}

// undecided: the create may have reached Calypso and look-ups could neither
// find nor rule out its payout. Never a rejection, no intent fails; the
// batch is written back and looked up again later.
func (h *handling) undecided(why string) laneResult {
	s, b := h.l.s, h.b
	s.Stats.Undecided.Add(1)
	now := s.cfg.Now()
	since := h.e.p.undecidedSince
	if since.IsZero() {
		since = now
	}
	retryAt := now.Add(s.deferDelay(h.e.p.attempt))
	u := events.PayoutUndecided{
		BatchID: b.BatchID, IdempotencyKey: b.IdempotencyKey, Account: b.Account, Currency: b.Currency,
		ItemCount: len(b.Items), Total: b.Total, Reason: why, Code: h.lastCode, Attempt: h.e.p.attempt,
		Since: since, RetryAt: retryAt, UndecidedAt: now,
	}
	h.log.Warn("batch undecided: its payout may exist; looked up again later, never rejected", "reason", why, "since", since, "retry_at", retryAt)
	r := h.result(outcomeUndecided,
		events.BatchState{BatchID: b.BatchID, State: events.BatchUndecided, Reason: why, UpdatedAt: now},
		[]outEvent{{s.cfg.Topics.Outcomes, u}}, h.writeBack(retryAt, since))
	r.since = since
	return r
}

// quarantined: the payout under the batch's key contradicts the batch. A
// person decides; the batch goes to the DLQ with the reason, an alert says
// so, and nothing else waits for it.
func (h *handling) quarantined(p *calypso.MassPayout, why string) laneResult {
	s, b := h.l.s, h.b
	s.Stats.Quarantined.Add(1)
	now := s.cfg.Now()
	h.log.Error("batch quarantined: the payout under its idempotency key contradicts it", "payout", string(p.ID), "reason", why)
	alert := events.Alert{Kind: AlertBatchContradicted, BatchID: b.BatchID, PayoutID: string(p.ID), Account: b.Account,
		Message: why, RaisedAt: now}
	dead := dlqRecord(s.cfg.Topics.DLQ, h.e.p.rec, &Rejection{Reason: ReasonQuarantined, Err: why}, now)
	return h.result(outcomeQuarantined,
		events.BatchState{BatchID: b.BatchID, State: events.BatchQuarantined, PayoutID: string(p.ID), Reason: why, UpdatedAt: now},
		[]outEvent{{s.cfg.Topics.Outcomes, alert}}, dead)
}

type outEvent struct {
	topic string
	event events.Event
}

// records encodes events for the topics they go to; source names the writer.
func records(source string, evs []outEvent) ([]*kgo.Record, error) {
	out := make([]*kgo.Record, 0, len(evs))
	for _, e := range evs {
		r, err := events.NewRecord(e.topic, source, e.event)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// copyForRetry is the record to write back for a later attempt: same key,
// value and headers, new offset.
func copyForRetry(r *kgo.Record) *kgo.Record {
	return &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: append([]kgo.RecordHeader(nil), r.Headers...)}
}

func setHeader(r *kgo.Record, key, value string) {
	for i := range r.Headers {
		if r.Headers[i].Key == key {
			r.Headers[i].Value = []byte(value)
			return
		}
	}
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: key, Value: []byte(value)})
}
