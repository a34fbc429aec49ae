package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shopspring/decimal"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/tracing"
)

// lanes are one session's lanes, one per account, created on first use.
type lanes struct {
	ctx     context.Context
	cancel  context.CancelFunc
	s       *Submitter
	results chan<- laneResult
	wake    chan<- struct{}
	wg      sync.WaitGroup
	byAcct  map[string]*lane
}

func newLanes(ctx context.Context, s *Submitter, results chan<- laneResult, wake chan<- struct{}) *lanes {
	ctx, cancel := context.WithCancel(ctx)
	return &lanes{ctx: ctx, cancel: cancel, s: s, results: results, wake: wake, byAcct: map[string]*lane{}}
}

// submit hands e to its account's lane; it never blocks.
func (ls *lanes) submit(e *entry) {
	acct := e.p.batch.Account
	l := ls.byAcct[acct]
	if l == nil {
		l = &lane{s: ls.s, account: acct, limiter: ls.s.limiter(acct), ready: make(chan struct{}, 1),
			log: ls.s.log.With("account", acct)}
		ls.byAcct[acct] = l
		for range ls.s.cfg.InFlight {
			ls.wg.Add(1)
			go func() { defer ls.wg.Done(); l.work(ls.ctx, ls) }()
		}
	}
	l.push(e)
}

// stop ends every lane's work and waits for the workers.
func (ls *lanes) stop() {
	ls.cancel()
	ls.wg.Wait()
}

// lane is one account's worker set. Its limiter is the account's, shared by
// every call the process makes for the account.
type lane struct {
	s       *Submitter
	account string
	limiter interface {
		Wait(context.Context) error
	}
	log *slog.Logger

	mu           sync.Mutex
	queue        []*entry
	ready        chan struct{}
	stoppedUntil time.Time // after an authentication/configuration error
	failures     int       // consecutive calls failed retryably
	failingSince time.Time // first of those failures
	lastProbe    time.Time // last batch let through while failing
}

func (l *lane) push(e *entry) {
	l.mu.Lock()
	l.queue = append(l.queue, e)
	l.mu.Unlock()
	select {
	case l.ready <- struct{}{}:
	default:
	}
}

func (l *lane) pop() (*entry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.queue) == 0 {
		return nil, false
	}
	e := l.queue[0]
	l.queue = l.queue[1:]
	if len(l.queue) > 0 {
		select {
		case l.ready <- struct{}{}:
		default:
		}
	}
	return e, true
}

func (l *lane) work(ctx context.Context, ls *lanes) {
	for {
		e, ok := l.pop()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-l.ready:
				continue
			}
		}
		var r laneResult
		if !e.dropped.Load() {
			r = l.handle(ctx, e)
		}
		if ctx.Err() != nil || e.dropped.Load() {
			r = laneResult{canceled: true}
		}
		r.e = e
		select {
		case ls.results <- r:
		case <-ctx.Done():
			return
		}
		select {
		case ls.wake <- struct{}{}:
		default:
		}
	}
}

// handling is one batch's way through its lane.
type handling struct {
	l   *lane
	e   *entry
	b   events.BatchPlanned
	log *slog.Logger
	cl  *calypso.Client
	// unknown says an attempt of this batch (here or before it was written
	// back) may have reached Calypso without our knowing its outcome.
	unknown bool
	// lookedUp says a look-up by key already found no payout this time.
	lookedUp bool
	lastCode string
}

// handle takes one batch through look-up, guards and create, and returns
// its outcome. It never rejects a batch whose payout may exist.
func (l *lane) handle(ctx context.Context, e *entry) laneResult {
	b := e.p.batch
	h := &handling{l: l, e: e, b: b, log: l.log.With("batch", b.BatchID, "currency", b.Currency, "attempt", e.p.attempt),
		unknown: e.state.State == events.BatchUndecided || !e.p.undecidedSince.IsZero()}

	if r, stopped := l.whileStopped(h); stopped {
		return r
	}
	if r, parked := l.whileFailing(h); parked {
		return r
	}
	cl, err := l.s.accounts.client(b.Account)
	if err != nil {
		return h.stopLane(err.Error())
	}
	h.cl = cl

	// A batch seen before (written back, with a state, or inherited from
	// the backlog of an earlier owner) may have been created by an attempt
	// whose outcome or commit was lost: look it up before any guard, which
	// would otherwise defer it forever for money it has already spent.
	if e.p.attempt > 1 || e.state.State != "" || e.inherited {
		if r, done := h.lookUpFirst(ctx); done {
			return r
		}
	}

	need := b.Total.Decimal()
	if l.s.cfg.PrecalculateFees {
		fee, err := h.fee(ctx)
		if err != nil {
			return h.callFailed(ctx, "fee", err)
		}
		need = need.Add(fee.Decimal())
		if limit, ok := l.s.cfg.MaxFee[b.Currency]; ok && fee.Cmp(limit) > 0 {
			return h.guardDefers(ctx, events.DeferFeeAboveLimit, fee, limit)
		}
	}
	if l.s.cfg.CheckBalance {
		var info *calypso.AccountInfo
		err := h.try(ctx, "account", func(ctx context.Context) (err error) { info, err = cl.Account(ctx); return err })
		if err != nil {
			return h.callFailed(ctx, "account", err)
		}
		balance, _ := info.Balance(b.Currency)
		if balance.Decimal().LessThan(need) {
			return h.guardDefers(ctx, events.DeferInsufficientBalance, calypso.NewAmount(need), balance)
		}
	}
	return h.create(ctx, need)
}

// whileStopped parks a batch of a lane stopped by an authentication or
// configuration error, without calling Calypso, until the lane's next try.
func (l *lane) whileStopped(h *handling) (laneResult, bool) {
	l.mu.Lock()
	until := l.stoppedUntil
	l.mu.Unlock()
	if until.IsZero() || !until.After(l.s.cfg.Now()) {
		return laneResult{}, false
	}
	return h.parkUnavailable("lane stopped: "+l.reason(), until), true
}

// whileFailing parks a batch without calling Calypso when the lane's calls
// have failed for longer than the retry policy's bound, letting one batch
// through per MaxInterval to find out whether Calypso is back. So a hung or
// failing account's backlog is parked (and its offsets committed) instead of
// filling the session's pending budget.
func (l *lane) whileFailing(h *handling) (laneResult, bool) {
	now := time.Now()
	p := l.s.cfg.Retry
	l.mu.Lock()
	since := l.failingSince
	failing := !since.IsZero() && now.Sub(since) >= p.MaxElapsed
	probe := failing && now.Sub(l.lastProbe) >= p.MaxInterval
	if probe {
		l.lastProbe = now
	}
	l.mu.Unlock()
	if !failing || probe {
		return laneResult{}, false
	}
	why := fmt.Sprintf("the account's Calypso calls have failed since %s", since.UTC().Format(time.RFC3339))
	if h.unknown {
		return h.undecided(why), true
	}
	return h.parkUnavailable(why, time.Time{}), true
}

func (l *lane) reason() string {
	for _, st := range l.s.Lanes() {
		if st.Account == l.account {
			return st.Reason
		}
	}
	return ""
}

// stopLane stops the lane for an authentication or configuration error and
// parks the batch; the lane tries again after the longest defer delay.
func (h *handling) stopLane(why string) laneResult {
	l := h.l
	until := l.s.cfg.Now().Add(l.s.cfg.MaxDeferDelay)
	l.mu.Lock()
	l.stoppedUntil = until
	l.mu.Unlock()
	reason := fmt.Sprintf("submitter lane %s stopped: %s; its batches wait (not rejected) and are retried from %s",
		l.account, why, until.UTC().Format(time.RFC3339))
	if l.s.setLane(l.account, LaneStopped, reason) {
		l.log.Error("lane stopped: Calypso refuses this account's credentials or the account has no client; fix the configuration",
			"reason", why, "retry_at", until)
	}
	if h.unknown {
		return h.undecided("lane stopped after an attempt whose outcome is unknown: " + why)
	}
	return h.parkUnavailable("lane stopped: "+why, until)
}

// laneWorks marks the lane working after a call Calypso answered.
func (l *lane) laneWorks() {
	l.mu.Lock()
	wasStopped := !l.stoppedUntil.IsZero()
	l.stoppedUntil = time.Time{}
	l.failures = 0
	l.failingSince = time.Time{}
	l.mu.Unlock()
	if l.s.setLane(l.account, LaneOK, "") && wasStopped {
		l.log.Info("lane working again")
	}
}

func (l *lane) laneFails(err error) {
	l.mu.Lock()
	l.failures++
	n := l.failures
	if l.failingSince.IsZero() {
		l.failingSince = time.Now()
	}
	l.mu.Unlock()
	if n >= 3 {
		l.s.setLane(l.account, LaneFailing, err.Error())
	}
}

// try makes one Calypso call under the lane's limiter and retry policy. It
// returns the last error; every failed try whose request may have reached
// Calypso marks the batch's outcome unknown.
func (h *handling) try(ctx context.Context, what string, fn func(context.Context) error) error {
	p := h.l.s.cfg.Retry
	deadline := time.Now().Add(p.MaxElapsed)
	cctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for n := 1; ; n++ {
		if err := h.l.limiter.Wait(cctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%s: rate limiter: %w", what, err)
		}
		err := fn(cctx)
		if err == nil {
			h.l.laneWorks()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if what == "create" && mayHaveReached(err) {
			h.unknown = true
		}
		var api *calypso.APIError
		if errors.As(err, &api) {
			h.lastCode = api.Code
		}
		if !retryable(err) {
			if !isAuth(err) {
				h.l.laneWorks() // Calypso answered
			}
			return err
		}
		h.l.s.Stats.CalypsoErrs.Add(1)
		h.l.laneFails(err)
		wait := p.wait(n)
		if n >= p.MaxAttempts || time.Now().Add(wait).After(deadline) {
			return err
		}
		h.log.Warn("Calypso call failed; retrying", "call", what, "error", err, "after", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

func retryable(err error) bool {
	return calypso.Retryable(err) || errors.Is(err, context.DeadlineExceeded)
}

// mayHaveReached reports whether a failed create may have been processed by
// Calypso: a request cut short once written, 5xx, 000, a lost answer, or an
// earlier attempt of the call that may have (calypso.MayHaveReached).
func mayHaveReached(err error) bool {
	return calypso.MayHaveReached(err)
}

// isAuth reports an authentication or signing error (002, 003, 401, 403):
// not the batch's fault, the lane's.
func isAuth(err error) bool {
	var api *calypso.APIError
	return errors.Is(err, calypso.ErrAuth) || errors.As(err, &api) && api.HTTPStatus == http.StatusForbidden
}

// callFailed decides what a failed guard call (fee, balance) means.
func (h *handling) callFailed(ctx context.Context, what string, err error) laneResult {
	switch {
	case ctx.Err() != nil:
		return laneResult{canceled: true}
	case isAuth(err):
		return h.stopLane(err.Error())
	case h.unknown:
		return h.undecided(fmt.Sprintf("%s call failed after an attempt whose outcome is unknown: %v", what, err))
	}
	return h.parkUnavailable(fmt.Sprintf("%s call failed: %v", what, err), time.Time{})
}

// guardDefers defers a batch a guard holds back, after making sure it was
// not created already by an attempt whose outcome was lost.
func (h *handling) guardDefers(ctx context.Context, reason events.DeferReason, required, available calypso.Amount) laneResult {
	if !h.lookedUp {
		if r, done := h.lookUpFirst(ctx); done {
			return r
		}
	}
	return h.deferred(reason, required, available, time.Time{})
}

// lookUpFirst looks the batch up by key once. It is done when the payout was
// found (submitted, or quarantined when it contradicts the batch), or when
// the look-up itself failed and the batch is parked.
func (h *handling) lookUpFirst(ctx context.Context) (laneResult, bool) {
	var p *calypso.MassPayout
	err := h.try(ctx, "lookup", func(ctx context.Context) (err error) {
		p, err = h.cl.MassPayoutByIdempotencyKey(ctx, h.b.IdempotencyKey)
		return err
	})
	switch {
	case err == nil:
		switch v, why := judge(p, h.b); v {
		case verdictSame:
			return h.submitted(p, true), true
		case verdictContradicts:
			return h.quarantined(p, why), true
		}
		// Still being created: the create below answers 016 and resolves it.
		return laneResult{}, false
	case errors.Is(err, calypso.ErrNotFound):
		h.lookedUp = true
		return laneResult{}, false
	}
	return h.callFailed(ctx, "lookup", err), true
}

// create builds the request afresh for each try (a passed execution date
// means now) and turns the answer into the batch's outcome. It is one span,
// with the calls it makes (tries, look-ups) as children, linked to the trace
// of each intent the batch pays.
func (h *handling) create(ctx context.Context, need decimal.Decimal) (res laneResult) {
	b := h.b
	var tps []string
	if h.l.s.cfg.Tracer != nil {
		tps = make([]string, 0, len(b.Items))
		for _, it := range b.Items {
			tps = append(tps, it.Traceparent)
		}
	}
	ctx, span := tracerOr(h.l.s.cfg.Tracer).Start(ctx, "calypso create mass payout",
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithLinks(tracing.Links(tps)...),
		trace.WithAttributes(
			attribute.String("payoutd.batch.id", b.BatchID),
			attribute.String("payoutd.account", b.Account),
			attribute.String("payoutd.currency", b.Currency),
			attribute.Int("payoutd.batch.items", len(b.Items)),
			attribute.Int("payoutd.batch.attempt", h.e.p.attempt),
		))
	defer func() {
		span.SetAttributes(attribute.String("payoutd.batch.outcome", res.kind.String()))
		if res.canceled {
			span.SetStatus(codes.Error, "canceled")
		} else if res.kind != outcomeSubmitted {
			span.SetStatus(codes.Error, res.kind.String())
		}
		span.End()
	}()
	var payout *calypso.MassPayout
	err := h.try(ctx, "create", func(ctx context.Context) (err error) {
		payout, err = h.cl.CreateMassPayout(ctx, h.request())
		return err
	})
	if ctx.Err() != nil {
		return laneResult{canceled: true}
	}
	if err == nil {
		return h.submitted(payout, false)
	}
	var api *calypso.APIError
	isAPI := errors.As(err, &api)
	switch {
	case isAuth(err):
		return h.stopLane(err.Error())
	case errors.Is(err, calypso.ErrIdempotencyKeyExists):
		// The key exists: a payout exists, even if look-ups lag.
		return h.resolve(ctx, err, true, calypso.NewAmount(need))
	case errors.Is(err, calypso.ErrValidationFailed):
		// 016 is overloaded (key exists, validation failed, balance):
		// only a look-up tells whether a payout exists.
		return h.resolve(ctx, err, false, calypso.NewAmount(need))
	case errors.Is(err, calypso.ErrInvalidRequest) && !h.unknown:
		// Refused before sending: nothing was created by this try.
		return h.rejected(&calypso.APIError{Op: "validation", Code: "LOCAL", Message: err.Error()})
	case isAPI && !retryable(err):
		return h.resolve(ctx, err, false, calypso.NewAmount(need))
	case h.unknown:
		return h.resolve(ctx, nil, false, calypso.NewAmount(need))
	}
	return h.parkUnavailable(fmt.Sprintf("create failed: %v", err), time.Time{})
}

func (h *handling) request() calypso.MassPayoutRequest {
	b := h.b
	req := calypso.MassPayoutRequest{
		Currency:       b.Currency,
		Name:           "payoutd " + b.BatchID,
		Comment:        "payoutd batch " + b.BatchID,
		IdempotencyKey: b.IdempotencyKey,
		ExternalID:     b.BatchID,
	}
	// A date that has passed means "now": Calypso refuses past dates. The
	// margin keeps a date from passing on its way to Calypso.
	if b.ExecutionDate != nil && b.ExecutionDate.After(h.l.s.cfg.Now().Add(10*time.Second)) {
		req.ExecutionDate = b.ExecutionDate
	}
	for _, it := range b.Items {
		req.Items = append(req.Items, calypso.MassPayoutItem{
			DepositAddress: it.Address, Amount: calypso.NewAmount(it.Amount.Decimal()), Comment: it.IntentID,
		})
	}
	return req
}

// resolve decides a create that did not succeed by looking the payout up by
// idempotency key. refusal is Calypso's refusal, if it gave one; exists says
// Calypso said the key exists. Look-ups that answer 004, or find the payout
// still being created, are repeated with capped backoff for the grace
// period when the outcome is in doubt. A refusal becomes final only when
// look-ups found no payout and Calypso never said the key exists.
func (h *handling) resolve(ctx context.Context, refusal error, exists bool, need calypso.Amount) laneResult {
	cfg := h.l.s.cfg
	grace := cfg.LookupGrace
	if !h.unknown && !exists && refusal != nil && !is016(refusal) {
		grace = 0 // a plain refusal of a batch never in doubt: one look-up
	}
	deadline := time.Now().Add(grace)
	wait := cfg.Retry.InitialInterval
	var (
		lastErr  error
		creating *calypso.MassPayout
	)
	for {
		if err := h.l.limiter.Wait(ctx); err != nil {
			return laneResult{canceled: true}
		}
		p, err := h.cl.MassPayoutByIdempotencyKey(ctx, h.b.IdempotencyKey)
		if ctx.Err() != nil {
			return laneResult{canceled: true}
		}
		switch {
		case err == nil:
			h.l.laneWorks()
			switch v, why := judge(p, h.b); v {
			case verdictSame:
				return h.submitted(p, true)
			case verdictContradicts:
				return h.quarantined(p, why)
			}
			creating, lastErr = p, nil
		case isAuth(err):
			return h.stopLane(err.Error())
		case errors.Is(err, calypso.ErrNotFound):
			h.l.laneWorks()
			lastErr = err
		default:
			h.l.s.Stats.CalypsoErrs.Add(1)
			lastErr = err
		}
		if !time.Now().Before(deadline) {
			break
		}
		d := min(halfJitter(wait), time.Until(deadline))
		h.log.Info("payout not found by idempotency key yet; looking again", "error", lastErr, "after", d)
		select {
		case <-ctx.Done():
			return laneResult{canceled: true}
		case <-time.After(d):
		}
		wait = min(2*wait, cfg.Retry.MaxInterval)
	}
	notFound := lastErr != nil && errors.Is(lastErr, calypso.ErrNotFound)
	switch {
	case creating != nil:
		return h.undecided(fmt.Sprintf("payout %s found by idempotency key but still %s with total %s", creating.ID, creating.State, creating.TotalWithdrawalAmount))
	case exists:
		return h.undecided(fmt.Sprintf("Calypso says the idempotency key exists (%v) but the look-up answers: %v", refusal, lastErr))
	case refusal != nil && notFound && (h.unknown || h.e.inherited) && is016(refusal):
		// 016 after an attempt that may have created the payout may mean
		// "the key exists" (Calypso validates before it checks the key),
		// and a look-up that lags says nothing: never fail what may be paid.
		// A batch inherited from an earlier owner's backlog may have had
		// such an attempt (sent, then a crash before its outcome was
		// committed), with no state to say so.
		return h.undecided(fmt.Sprintf("Calypso refused with %v after an attempt whose outcome is unknown, and look-ups by idempotency key have not found the payout yet", refusal))
	case refusal != nil && notFound:
		return h.refused(refusal, need)
	case h.unknown || refusal != nil:
		why := "a create may have reached Calypso"
		if refusal != nil {
			why = fmt.Sprintf("Calypso refused the create (%v)", refusal)
		}
		return h.undecided(fmt.Sprintf("%s and the look-up by idempotency key failed: %v", why, lastErr))
	}
	return h.parkUnavailable(fmt.Sprintf("look-up failed: %v", lastErr), time.Time{})
}

func is016(err error) bool {
	return errors.Is(err, calypso.ErrValidationFailed) || errors.Is(err, calypso.ErrIdempotencyKeyExists)
}

// refused turns a refusal that created nothing into the batch's outcome: a
// balance refusal defers it; one that names a single row fails that row and
// plans the rest again; anything else rejects the batch.
func (h *handling) refused(refusal error, need calypso.Amount) laneResult {
	if errors.Is(refusal, calypso.ErrInsufficientBalance) {
		return h.deferred(events.DeferInsufficientBalance, need, calypso.Amount{}, time.Time{})
	}
	var api *calypso.APIError
	if !errors.As(refusal, &api) {
		api = &calypso.APIError{Op: "create", Code: "LOCAL", Message: refusal.Error()}
	}
	if i, ok := namedRow(h.b, api.Message); ok && len(h.b.Items) > 1 {
		return h.replanned(i, api)
	}
	return h.rejected(api)
}

// rowField finds "massAddresses[i]" in a refusal: the row of the request,
// which is the batch's item i (items are sent in order).
var rowField = regexp.MustCompile(regexp.QuoteMeta(calypso.MassAddressesField) + `\[(\d+)\]`)

// namedRow returns the one item a refusal names: by its address (exactly one
// item's address in the message), else by its row index (exactly one index,
// agreeing with any address the message names).
func namedRow(b events.BatchPlanned, msg string) (int, bool) {
	var byAddress []int
	for i, it := range b.Items {
		if it.Address != "" && strings.Contains(msg, it.Address) {
			byAddress = append(byAddress, i)
		}
	}
	if len(byAddress) == 1 {
		return byAddress[0], true
	}
	rows := rowField.FindAllStringSubmatch(msg, -1)
	if len(rows) != 1 {
		return 0, false
	}
	i, err := strconv.Atoi(rows[0][1])
	if err != nil || i >= len(b.Items) || len(byAddress) > 0 && !slices.Contains(byAddress, i) {
		return 0, false
	}
	return i, true
}

// fee is the batch's total fee from tariff/extended-fee: what is charged on
// top of the amounts (feeSender), which the balance must also cover.
func (h *handling) fee(ctx context.Context) (calypso.Amount, error) {
	qs := make([]calypso.FeeQuery, len(h.b.Items))
	for i, it := range h.b.Items {
		qs[i] = calypso.FeeQuery{BaseAmount: calypso.NewAmount(it.Amount.Decimal()), Currency: h.b.Currency, OpType: calypso.OpTypeWithdrawal}
	}
	var quotes []calypso.FeeQuote
	err := h.try(ctx, "fee", func(ctx context.Context) (err error) { quotes, err = h.cl.ExtendedFee(ctx, qs); return err })
	var total calypso.Amount
	for _, q := range quotes {
		total = total.Add(q.FeeSender.Fee)
	}
	return total, err
}

// verdict is what a payout found by idempotency key says of its batch.
type verdict int

const (
	verdictSame        verdict = iota
	verdictCreating            // still being created; its total is not final yet
	verdictContradicts         // another currency, total or external id
)

// judge compares a payout found under a batch's key with the batch. Totals
// are compared exactly where Calypso's number can be exact; a total that is
// the batch's rounded through float64, or the batch's plus the payout's
// fee, is the same batch; 0 or anything else while CREATION_IN_PROGRESS is
// read again.
func judge(p *calypso.MassPayout, b events.BatchPlanned) (verdict, string) {
	switch {
	case p.Currency != "" && p.Currency != b.Currency:
		return verdictContradicts, fmt.Sprintf("payout %s under its idempotency key is in %s, batch is in %s", p.ID, p.Currency, b.Currency)
	case p.ExternalID != "" && p.ExternalID != b.BatchID:
		return verdictContradicts, fmt.Sprintf("payout %s under its idempotency key has external id %s", p.ID, p.ExternalID)
	}
	got, want := p.TotalWithdrawalAmount.Decimal(), b.Total.Decimal()
	if sameTotal(got, want) || sameTotal(got.Sub(p.TotalFee.Decimal()), want) {
		return verdictSame, ""
	}
	if p.State == "" || p.State == calypso.StateCreationInProgress {
		return verdictCreating, ""
	}
	return verdictContradicts, fmt.Sprintf("payout %s under its idempotency key totals %s, batch totals %s", p.ID, p.TotalWithdrawalAmount, b.Total)
}

// sameTotal: equal, or equal once both went through float64 (Calypso's
// JSON numbers may have).
func sameTotal(got, want decimal.Decimal) bool {
	if got.Equal(want) {
		return true
	}
	g, _ := got.Float64()
	w, _ := want.Float64()
	return g == w && !got.IsZero()
}

func halfJitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}
