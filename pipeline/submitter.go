package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
)

// Headers a deferred batch carries when it is written back to the batches topic.
const (
	HeaderAttempt   = "payoutd-attempt"
	HeaderNotBefore = "payoutd-not-before"
)

// SubmitterConfig configures a Submitter. Zero values take the defaults named.
type SubmitterConfig struct {
	Topics events.Topics
	// Group is the consumer group on the batches topic. Default "payoutd-submitter".
	Group string
	// TransactionalID: see BatcherConfig.TransactionalID. Default Group + a random suffix.
	TransactionalID string
	// InstanceID: see BatcherConfig.InstanceID.
	InstanceID string
	// CheckBalance reads the account's balance before each create and
	// defers a batch the balance cannot cover.
	CheckBalance bool
	// PrecalculateFees asks tariff/extended-fee for each batch's fees; the
	// balance check then covers amount + fee, and MaxFee applies.
	PrecalculateFees bool
	// MaxFee is the most a batch of a currency may cost in fees; a batch
	// above it is deferred. Absent currencies have no limit.
	MaxFee map[string]calypso.Amount
	// DeferDelay is the first wait of a deferred batch, doubling each
	// attempt up to MaxDeferDelay. Defaults 1 minute and 30 minutes.
	DeferDelay    time.Duration
	MaxDeferDelay time.Duration
	// RetryDelay caps the wait between tries of a call Calypso failed
	// retryably (after the client's own retries). Default 30s.
	RetryDelay time.Duration
	// Health receives the component\'s readiness (part "submitter"); nil records nothing.
	Health *Health
	Logger *slog.Logger
	Now    func() time.Time
}

func (c *SubmitterConfig) setDefaults() {
	c.Topics = c.Topics.WithDefaults()
	if c.Group == "" {
		c.Group = "payoutd-submitter"
	}
	if c.TransactionalID == "" {
		c.TransactionalID = c.Group + "-" + uuid.NewString()
	}
	if c.DeferDelay <= 0 {
		c.DeferDelay = time.Minute
	}
	if c.MaxDeferDelay <= 0 {
		c.MaxDeferDelay = 30 * time.Minute
	}
	if c.RetryDelay <= 0 {
		c.RetryDelay = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// SubmitterStats counts what a Submitter did; safe to read while it runs.
type SubmitterStats struct {
	Submitted   atomic.Int64 // batches created at Calypso (or found created)
	Recovered   atomic.Int64 // of which found by idempotency key after a 016
	Rejected    atomic.Int64
	Deferred    atomic.Int64
	CalypsoErrs atomic.Int64 // retryable Calypso failures waited out
	Commits     atomic.Int64
	Aborts      atomic.Int64
}

// Submitter creates each planned batch at Calypso at most once, and at least
// once unless Calypso rejects it for good.
//
// The create call is made before the transaction begins (no transaction is
// open while Calypso is slow), with the batch id as idempotency key. If the
// submitter dies after Calypso accepted but before its commit, the batch is
// consumed again, the create answers 016, and the payout is looked up by key
// and checked against the batch instead of being created twice.
type Submitter struct {
	cfg      SubmitterConfig
	kafka    []kgo.Opt
	accounts Accounts
	log      *slog.Logger
	crash    crashHook
	Stats    SubmitterStats
}

// NewSubmitter returns a Submitter acting through accounts' Calypso clients.
func NewSubmitter(cfg SubmitterConfig, accounts Accounts, kafka ...kgo.Opt) (*Submitter, error) {
	cfg.setDefaults()
	if len(accounts) == 0 {
		return nil, errors.New("submitter: no Calypso accounts configured")
	}
	return &Submitter{cfg: cfg, kafka: kafka, accounts: accounts, log: cfg.Logger.With("component", "submitter")}, nil
}

// Run consumes until ctx is done. A session that fails is replaced.
func (s *Submitter) Run(ctx context.Context) error {
	return runSessions(ctx, s.log, s.cfg.Health, "submitter", s.session)
}

// planned is a consumed batch with its delivery state.
type planned struct {
	rec       *kgo.Record
	batch     events.BatchPlanned
	attempt   int // 1 for a batch never deferred
	notBefore time.Time
}

func (s *Submitter) session(ctx context.Context) error {
	opts := append(append([]kgo.Opt{}, s.kafka...),
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(s.cfg.Topics.Batches),
		kgo.TransactionalID(s.cfg.TransactionalID),
		// read_committed; franz-go always asks for stable offsets (KIP-447),
		// so a new owner waits for the previous owner's transaction to end.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	if s.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(s.cfg.InstanceID))
	}
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return err
	}
	defer sess.Close()

	// parked batches wait for their not-before time. Their offsets are
	// consumed but not yet committed; any commit that passes them writes
	// them back to the batches topic, so a parked batch is never lost.
	var parked []planned
	for {
		pollCtx, cancel := ctx, context.CancelFunc(func() {})
		if due, ok := earliest(parked); ok {
			pollCtx, cancel = context.WithDeadline(ctx, due)
		}
		fetches := sess.PollFetches(pollCtx)
		cancel()
		if ctx.Err() != nil {
			return nil // nothing uncommitted is lost: it is consumed again
		}
		if err := fatalFetchErr(fetches); err != nil {
			return err
		}
		s.cfg.Health.Ready("submitter")
		var out []*kgo.Record
		for _, r := range fetches.Records() {
			p, err := s.decode(r)
			if err != nil {
				s.log.Error("unreadable record on the batches topic; sent to the DLQ", "partition", r.Partition, "offset", r.Offset, "error", err)
				out = append(out, dlqRecord(s.cfg.Topics.DLQ, r, &Rejection{Reason: ReasonBadBatch, Err: err.Error()}, s.cfg.Now()))
				continue
			}
			parked = append(parked, p)
		}

		now := s.cfg.Now()
		var waiting []planned
		worked := len(out) > 0
		for _, p := range parked {
			if p.notBefore.After(now) {
				waiting = append(waiting, p)
				continue
			}
			recs, err := s.submit(ctx, p)
			if err != nil {
				if ctx.Err() != nil {
					// Shutting down mid-call: the batch is consumed again
					// and, if Calypso took it, recovered through 016.
					return nil
				}
				return err
			}
			out = append(out, recs...)
			worked = true
		}
		parked = waiting
		if !worked {
			// Only parked batches: keep waiting without a transaction, so
			// that writing them back never feeds on itself.
			continue
		}
		for _, p := range parked {
			out = append(out, copyForRetry(p.rec))
		}
		parked = nil

		committed, err := produceInTxn(ctx, sess, out)
		if err != nil {
			s.Stats.Aborts.Add(1)
			return err
		}
		if !committed {
			// The batches are consumed again; their creates answer 016 and
			// are recovered by idempotency key.
			s.Stats.Aborts.Add(1)
			s.log.Warn("transaction aborted; its batches will be consumed again")
			continue
		}
		s.Stats.Commits.Add(1)
	}
}

func earliest(ps []planned) (time.Time, bool) {
	var t time.Time
	for _, p := range ps {
		if t.IsZero() || p.notBefore.Before(t) {
			t = p.notBefore
		}
	}
	return t, !t.IsZero()
}

func (s *Submitter) decode(r *kgo.Record) (planned, error) {
	_, e, err := events.Decode(r)
	if err != nil {
		return planned{}, err
	}
	b, ok := e.(events.BatchPlanned)
	if !ok {
		return planned{}, fmt.Errorf("record is a %T, not a BatchPlanned", e)
	}
	if !b.Total.Equal(b.Sum()) || len(b.Items) == 0 {
		// Never pay a batch whose total is not its items' sum.
		return planned{}, fmt.Errorf("batch %s: total %s is not the sum of its %d items", b.BatchID, b.Total, len(b.Items))
	}
	p := planned{rec: r, batch: b, attempt: 1}
	if v := headerValue(r, HeaderAttempt); v != "" {
		if p.attempt, err = strconv.Atoi(v); err != nil {
			return planned{}, fmt.Errorf("header %s: %w", HeaderAttempt, err)
		}
	}
	if v := headerValue(r, HeaderNotBefore); v != "" {
		if p.notBefore, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return planned{}, fmt.Errorf("header %s: %w", HeaderNotBefore, err)
		}
	}
	return p, nil
}

// submit takes one due batch through balance, fee and create, and returns
// the records that say what happened. An error means the submitter must
// stop without committing (shutdown, or a payout that contradicts its batch).
func (s *Submitter) submit(ctx context.Context, p planned) ([]*kgo.Record, error) {
	b := p.batch
	log := s.log.With("batch", b.BatchID, "account", b.Account, "currency", b.Currency, "attempt", p.attempt)
	client, err := s.accounts.client(b.Account)
	if err != nil {
		return s.rejected(b, &calypso.APIError{Op: "configuration", Code: "ACCOUNT", Message: err.Error()})
	}

	need := b.Total.Decimal()
	if s.cfg.PrecalculateFees {
		fee, err := s.fee(ctx, client, b)
		if err != nil {
			return s.failedCall(b, err, log)
		}
		need = need.Add(fee.Decimal())
		if limit, ok := s.cfg.MaxFee[b.Currency]; ok && fee.Cmp(limit) > 0 {
			return s.deferred(p, events.DeferFeeAboveLimit, fee, limit, log)
		}
	}
	if s.cfg.CheckBalance {
		var info *calypso.AccountInfo
		err := s.retry(ctx, log, "account", func() (err error) { info, err = client.Account(ctx); return err })
		if err != nil {
			return s.failedCall(b, err, log)
		}
		balance, _ := info.Balance(b.Currency)
		if balance.Decimal().LessThan(need) {
			return s.deferred(p, events.DeferInsufficientBalance, calypso.NewAmount(need), balance, log)
		}
	}

	req := calypso.MassPayoutRequest{
		Currency:       b.Currency,
		Name:           "payoutd " + b.BatchID,
		Comment:        "payoutd batch " + b.BatchID,
		IdempotencyKey: b.IdempotencyKey,
		ExternalID:     b.BatchID,
	}
	// A date that has passed means "now": Calypso refuses past dates.
	if b.ExecutionDate != nil && b.ExecutionDate.After(s.cfg.Now()) {
		req.ExecutionDate = b.ExecutionDate
	}
	for _, it := range b.Items {
		req.Items = append(req.Items, calypso.MassPayoutItem{
			DepositAddress: it.Address, Amount: calypso.NewAmount(it.Amount.Decimal()), Comment: it.IntentID,
		})
	}
	var payout *calypso.MassPayout
	err = s.retry(ctx, log, "create", func() (err error) { payout, err = client.CreateMassPayout(ctx, req); return err })
	if errors.Is(err, calypso.ErrIdempotencyKeyExists) {
		// Created by an earlier try whose answer or commit was lost.
		err = s.retry(ctx, log, "lookup", func() (err error) {
			payout, err = client.MassPayoutByIdempotencyKey(ctx, b.IdempotencyKey)
			return err
		})
		if err == nil {
			if err := matches(payout, b); err != nil {
				// Never guess with money: stop, and let an operator look.
				return nil, fmt.Errorf("batch %s: %w", b.BatchID, err)
			}
			s.Stats.Recovered.Add(1)
			log.Info("payout found by idempotency key", "payout", string(payout.ID))
		}
	}
	if err == nil && s.crash.at(crashAfterCreate) {
		return nil, errCrashed
	}
	switch {
	case errors.Is(err, calypso.ErrInsufficientBalance):
		return s.deferred(p, events.DeferInsufficientBalance, calypso.NewAmount(need), calypso.Amount{}, log)
	case err != nil:
		return s.failedCall(b, err, log)
	}

	s.Stats.Submitted.Add(1)
	now := s.cfg.Now()
	sub := events.PayoutSubmitted{
		BatchID: b.BatchID, PayoutID: string(payout.ID), IdempotencyKey: b.IdempotencyKey,
		Account: b.Account, Currency: b.Currency, ItemCount: len(b.Items), Total: b.Total,
		State: string(payout.State), SubmittedAt: now,
	}
	if payout.State == "" {
		sub.State = string(calypso.StateCreationInProgress)
	}
	if fee := payout.TotalFee.Decimal(); !fee.IsZero() {
		a := events.AmountOf(fee)
		sub.Fee = &a
	}
	log.Info("payout submitted", "payout", sub.PayoutID, "items", len(b.Items), "total", b.Total.String())
	evs := []outEvent{{s.cfg.Topics.Outcomes, sub}}
	for _, it := range b.Items {
		evs = append(evs, outEvent{s.cfg.Topics.Intents, events.IntentState{
			IntentID: it.IntentID, State: events.StatusSubmitted, BatchID: b.BatchID, PayoutID: sub.PayoutID, UpdatedAt: now,
		}})
	}
	return records("payoutd/submitter", evs)
}

// failedCall turns a Calypso error into the batch's outcome: a permanent
// answer rejects the batch; a shutdown stops the submitter.
func (s *Submitter) failedCall(b events.BatchPlanned, err error, log *slog.Logger) ([]*kgo.Record, error) {
	var api *calypso.APIError
	if errors.As(err, &api) && !calypso.Retryable(err) {
		log.Warn("batch rejected by Calypso", "code", api.Code, "message", api.Message)
		return s.rejected(b, api)
	}
	if errors.Is(err, calypso.ErrInvalidRequest) {
		log.Warn("batch refused before sending", "error", err)
		return s.rejected(b, &calypso.APIError{Op: "validation", Code: "LOCAL", Message: err.Error()})
	}
	return nil, err
}

func (s *Submitter) rejected(b events.BatchPlanned, api *calypso.APIError) ([]*kgo.Record, error) {
	s.Stats.Rejected.Add(1)
	now := s.cfg.Now()
	reason := fmt.Sprintf("Calypso %s refused the payout: %s %s", api.Op, api.Code, api.Message)
	evs := []outEvent{{s.cfg.Topics.Outcomes, events.PayoutRejected{
		BatchID: b.BatchID, Account: b.Account, Currency: b.Currency, ItemCount: len(b.Items), Total: b.Total,
		Code: api.Code, Message: api.Message, RejectedAt: now,
	}}}
	for _, it := range b.Items {
		evs = append(evs,
			outEvent{s.cfg.Topics.Intents, events.IntentState{IntentID: it.IntentID, State: events.StatusFailed, BatchID: b.BatchID, Code: api.Code, Reason: reason, UpdatedAt: now}},
			outEvent{s.cfg.Topics.Outcomes, events.IntentFailed{IntentOutcome: events.IntentOutcome{
				IntentID: it.IntentID, BatchID: b.BatchID, Account: b.Account, Currency: b.Currency, Amount: it.Amount,
				Address: it.Address, PayoutState: string(calypso.StateFailed), ResolvedAt: now,
			}, Code: api.Code, Reason: reason}},
		)
	}
	return records("payoutd/submitter", evs)
}

// deferred reports the batch as waiting and writes it back to the batches
// topic to be tried again after a growing delay.
func (s *Submitter) deferred(p planned, reason events.DeferReason, required, available calypso.Amount, log *slog.Logger) ([]*kgo.Record, error) {
	s.Stats.Deferred.Add(1)
	now := s.cfg.Now()
	delay := s.cfg.DeferDelay << min(p.attempt-1, 20)
	if delay > s.cfg.MaxDeferDelay || delay <= 0 {
		delay = s.cfg.MaxDeferDelay
	}
	d := events.PayoutDeferred{
		BatchID: p.batch.BatchID, Account: p.batch.Account, Currency: p.batch.Currency, Reason: reason,
		Required: events.AmountOf(required.Decimal()), Available: events.AmountOf(available.Decimal()),
		Attempt: p.attempt, RetryAt: now.Add(delay), DeferredAt: now,
	}
	log.Warn("batch deferred", "reason", reason, "required", d.Required.String(), "available", d.Available.String(), "retry_at", d.RetryAt)
	out, err := records("payoutd/submitter", []outEvent{{s.cfg.Topics.Outcomes, d}})
	if err != nil {
		return nil, err
	}
	again := copyForRetry(p.rec)
	setHeader(again, HeaderAttempt, strconv.Itoa(p.attempt+1))
	setHeader(again, HeaderNotBefore, d.RetryAt.UTC().Format(time.RFC3339Nano))
	return append(out, again), nil
}

// fee is the batch's total fee from tariff/extended-fee: what is charged on
// top of the amounts (feeSender), which the balance must also cover.
func (s *Submitter) fee(ctx context.Context, client *calypso.Client, b events.BatchPlanned) (calypso.Amount, error) {
	qs := make([]calypso.FeeQuery, len(b.Items))
	for i, it := range b.Items {
		qs[i] = calypso.FeeQuery{BaseAmount: calypso.NewAmount(it.Amount.Decimal()), Currency: b.Currency, OpType: calypso.OpTypeWithdrawal}
	}
	var quotes []calypso.FeeQuote
	err := s.retry(ctx, s.log, "fee", func() (err error) { quotes, err = client.ExtendedFee(ctx, qs); return err })
	var total calypso.Amount
	for _, q := range quotes {
		total = total.Add(q.FeeSender.Fee)
	}
	return total, err
}

// retry calls fn until it succeeds, fails for good, or ctx ends, waiting
// with capped exponential backoff between retryable failures. The client
// already retried a few times; this keeps a batch from being rejected just
// because Calypso was down for a while.
func (s *Submitter) retry(ctx context.Context, log *slog.Logger, what string, fn func() error) error {
	wait := 200 * time.Millisecond
	for {
		err := fn()
		if err == nil || !calypso.Retryable(err) || errors.Is(err, calypso.ErrIdempotencyKeyExists) {
			return err
		}
		s.Stats.CalypsoErrs.Add(1)
		log.Warn("Calypso call failed; retrying", "call", what, "error", err, "after", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, s.cfg.RetryDelay)
	}
}

// matches checks that the payout found under a batch's idempotency key is
// that batch.
func matches(p *calypso.MassPayout, b events.BatchPlanned) error {
	switch {
	case p.Currency != b.Currency:
		return fmt.Errorf("payout %s under its idempotency key is in %s, batch is in %s", p.ID, p.Currency, b.Currency)
	case !p.TotalWithdrawalAmount.Decimal().Equal(b.Total.Decimal()):
		return fmt.Errorf("payout %s under its idempotency key totals %s, batch totals %s", p.ID, p.TotalWithdrawalAmount, b.Total)
	case p.ExternalID != "" && p.ExternalID != b.BatchID:
		return fmt.Errorf("payout %s under its idempotency key has external id %s", p.ID, p.ExternalID)
	}
	return nil
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
