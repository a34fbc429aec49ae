package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/payoutd/payoutd/calypso"
	"github.com/shopspring/decimal"
)

// Withdrawal (item) states.
const (
	itemDraft      = "DRAFT"
	itemInProgress = "IN_PROGRESS"
	itemCompleted  = "COMPLETED"
	itemFailed     = "FAILED"
)

type payout struct {
	id, account, key, externalID, name, comment, currency string
	state                                                 calypso.State
	items                                                 []*item
	exec                                                  time.Time
	created                                               time.Time
	born                                                  time.Time // real time of the create, for LookupLag
	total, fee                                            calypso.Amount
	decided                                               bool
	decision                                              chan bool
	history                                               []StateChange
}

type item struct {
	id, address, comment, state, hash string
	amount, fee                       calypso.Amount
	errs                              []calypso.WithdrawalError
}

// companyID derives a stable UUID for an account, as Calypso's companyId
// and ownerId.
func companyID(account string) string {
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte("calypso-sandbox/"+account)).String()
}

func (s *Sandbox) handleAccount(req *request) (any, *apiError) {
	if req.payload != nil {
		return nil, errBadRequest("account takes no payload")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	info := calypso.AccountInfo{Account: req.acc.id, Name: req.acc.name, OwnerID: companyID(req.acc.id), Balances: []calypso.Balance{}}
	for cur, amt := range req.acc.balances {
		info.Balances = append(info.Balances, calypso.Balance{Currency: cur, Amount: amt})
	}
	sort.Slice(info.Balances, func(i, j int) bool { return info.Balances[i].Currency < info.Balances[j].Currency })
	return info, nil
}

// fee returns the sender's fee for amount in currency: fixed and percent
// parts, each rounded up to the currency's decimals.
func (s *Sandbox) fee(currency string, amount calypso.Amount) (fixed, percent calypso.Amount) {
	t := s.cfg.Tariff[currency]
	places := s.cfg.Currencies[currency].Decimals
	p := amount.Decimal().Mul(t.Percent.Decimal()).Div(decimal.NewFromInt(100)).RoundUp(places)
	return t.Fixed, calypso.NewAmount(p)
}

func (s *Sandbox) handleExtendedFee(req *request) (any, *apiError) {
	var p struct {
		Items []struct {
			BaseAmount number `json:"baseAmount"`
			Currency   string `json:"currency"`
			OpType     string `json:"opType"`
			FeeType    string `json:"feeType"`
		} `json:"items"`
	}
	if req.payload == nil {
		return nil, errBadRequest("payload is required")
	}
	if err := strictDecode(req.payload, &p); err != nil {
		return nil, errBadRequest("invalid payload: %v", err)
	}
	if len(p.Items) == 0 {
		return nil, errBadRequest("items is required")
	}
	out := struct {
		Items []calypso.FeeQuote `json:"items"`
	}{}
	for i, it := range p.Items {
		if _, ok := s.cfg.Currencies[it.Currency]; !ok {
			return nil, errBadRequest("items[%d]: unknown currency %q", i, it.Currency)
		}
		switch it.OpType {
		case "WITHDRAWAL", "INVOICE", "SINGLE_WITHDRAWAL", "MASS_WITHDRAWAL":
		default:
			return nil, errBadRequest("items[%d]: unknown opType %q", i, it.OpType)
		}
		if it.BaseAmount.Sign() < 0 {
			return nil, errBadRequest("items[%d]: negative baseAmount", i)
		}
		fixed, pct := s.fee(it.Currency, it.BaseAmount.Amount)
		total := fixed.Add(pct)
		// The receiver bears the part its feeType names (SERVICE: all).
		recv := calypso.FeePart{Fee: total}
		switch calypso.FeeType(it.FeeType) {
		case "", calypso.FeeService:
		case calypso.FeeFix:
			recv = calypso.FeePart{Fee: fixed, FixedFee: fixed}
		case calypso.FeePercent:
			recv = calypso.FeePart{Fee: pct, PercentFee: pct}
		default:
			return nil, errBadRequest("items[%d]: unknown feeType %q", i, it.FeeType)
		}
		recv.Amount = it.BaseAmount.Sub(recv.Fee)
		out.Items = append(out.Items, calypso.FeeQuote{
			Amount:      it.BaseAmount.Amount,
			Currency:    it.Currency,
			OpType:      calypso.OpType(it.OpType),
			FeeReceiver: recv,
			FeeSender:   calypso.FeePart{Amount: it.BaseAmount.Add(total), Fee: total},
		})
	}
	return out, nil
}

type createItem struct {
	DepositAddress string `json:"depositAddress"`
	Amount         number `json:"amount"`
	Comment        string `json:"comment"`
}

func (s *Sandbox) handleCreate(req *request) (any, *apiError) {
	if req.payload == nil {
		return nil, errBadRequest("payload is required")
	}
	// Decode key by key so the recipient list name follows
	// calypso.MassAddressesField and every unknown key is refused.
	var fields map[string]json.RawMessage
	if err := strictDecode(req.payload, &fields); err != nil {
		return nil, errBadRequest("invalid payload: %v", err)
	}
	var (
		currency, name, comment, key, externalID, execText string
		items                                              []createItem
	)
	targets := map[string]any{
		"currency": &currency, "name": &name, "comment": &comment, "idempotencyKey": &key,
		"externalId": &externalID, "executionDate": &execText, calypso.MassAddressesField: &items,
	}
	for k, raw := range fields {
		t, ok := targets[k]
		if !ok {
			return nil, errBadRequest("unknown payload field %q", k)
		}
		if err := strictDecode(raw, t); err != nil {
			return nil, errBadRequest("invalid %s: %v", k, err)
		}
	}
	if key != "" {
		s.mu.Lock()
		s.creates[key]++
		s.mu.Unlock()
	}

	rule, ok := s.cfg.Currencies[currency]
	switch {
	case currency == "":
		return nil, errBadRequest("currency is required")
	case !ok:
		return nil, errBadRequest("unknown currency %q", currency)
	case name == "":
		return nil, errBadRequest("name is required")
	case len(items) == 0:
		return nil, errBadRequest("%s is required", calypso.MassAddressesField)
	}
	if key != "" {
		if _, err := uuid.Parse(key); err != nil {
			return nil, errBadRequest("idempotencyKey must be a UUID")
		}
	}
	maxItems := rule.MaxItems
	if maxItems == 0 {
		maxItems = calypso.DefaultMaxItems
	}
	if len(items) > maxItems {
		return nil, errBadRequest("too many withdrawals: %d, the %s limit is %d", len(items), currency, maxItems)
	}
	var exec time.Time
	if execText != "" {
		t, err := calypso.ParseTime(execText)
		if err != nil {
			return nil, errBadRequest("invalid executionDate")
		}
		if t.Before(s.now()) {
			return nil, errBadRequest("executionDate is in the past")
		}
		exec = t
	}
	p := &payout{
		account: req.acc.id, key: key, externalID: externalID, name: name, comment: comment,
		currency: currency, exec: exec, decision: make(chan bool, 1),
	}
	if row, bad := s.refusedAddress(items); bad {
		return nil, errBadRequest("%s[%d].depositAddress: invalid address %s", calypso.MassAddressesField, row, items[row].DepositAddress)
	}
	for i, it := range items {
		if it.DepositAddress == "" {
			return nil, errBadRequest("%s[%d].depositAddress is required", calypso.MassAddressesField, i)
		}
		if it.Amount.Sign() <= 0 {
			return nil, errBadRequest("%s[%d].amount must be positive", calypso.MassAddressesField, i)
		}
		if !it.Amount.FitsDecimals(rule.Decimals) {
			return nil, errBadRequest("%s[%d].amount has more than %d decimals", calypso.MassAddressesField, i, rule.Decimals)
		}
		fixed, pct := s.fee(currency, it.Amount.Amount)
		f := fixed.Add(pct)
		p.items = append(p.items, &item{address: it.DepositAddress, comment: it.Comment, state: itemDraft, amount: it.Amount.Amount, fee: f})
		p.total = p.total.Add(it.Amount.Amount)
		p.fee = p.fee.Add(f)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, &apiError{http.StatusServiceUnavailable, calypso.CodeInternal, "sandbox is closed"}
	}
	// Check and insert under one lock: concurrent creates with one key
	// yield exactly one payout.
	if key != "" && s.byIdem[key] != nil {
		if s.apiChance(s.cfg.Faults.ValidationAfterAmbiguous) {
			return nil, &apiError{http.StatusBadRequest, calypso.CodeCreateRejected, "Can not create deal. Validation failed"}
		}
		return nil, &apiError{http.StatusBadRequest, calypso.CodeCreateRejected, fmt.Sprintf("IdempotencyKey %s already exists", key)}
	}
	need := p.total.Add(p.fee)
	if bal := req.acc.balances[currency]; bal.Cmp(need) < 0 {
		return nil, &apiError{http.StatusBadRequest, calypso.CodeCreateRejected,
			fmt.Sprintf("Can not create deal. Validation failed: insufficient balance: %s %s needed (amounts + fees), %s available", need, currency, bal)}
	}
	req.acc.balances[currency] = req.acc.balances[currency].Sub(need)
	s.nextID++
	p.id = strconv.FormatInt(s.nextID, 10)
	p.created = s.now().UTC()
	p.born = time.Now()
	for _, it := range p.items {
		s.nextWID++
		it.id = strconv.FormatInt(s.nextWID, 10)
		s.items[it.id] = it
	}
	s.payouts[p.id] = p
	s.order = append(s.order, p)
	if key != "" {
		s.byIdem[key] = p
	}
	s.setStateLocked(p, calypso.StateCreationInProgress, calypso.EventPayoutChangeStatus)
	resp := s.viewLocked(p)
	s.wg.Add(1)
	go s.drive(p)
	return resp, nil
}

func (s *Sandbox) handleGetMass(req *request) (any, *apiError) {
	var q struct {
		ID             *json.RawMessage `json:"id"`
		IdempotencyKey string           `json:"idempotencyKey"`
	}
	if req.payload == nil {
		return nil, errBadRequest("payload is required")
	}
	if err := strictDecode(req.payload, &q); err != nil {
		return nil, errBadRequest("invalid payload: %v", err)
	}
	var id calypso.ID
	if q.ID != nil {
		if err := json.Unmarshal(*q.ID, &id); err != nil {
			return nil, errBadRequest("invalid id")
		}
	}
	if (id == "") == (q.IdempotencyKey == "") {
		return nil, errBadRequest("either id or idempotencyKey must be specified")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.payouts[string(id)]
	if id == "" {
		p = s.byIdem[q.IdempotencyKey]
	}
	if p == nil || p.account != req.acc.id || s.lookupLaggingLocked(p) {
		return nil, &apiError{http.StatusBadRequest, calypso.CodeNotFound, "Requested object not found"}
	}
	return s.viewLocked(p), nil
}

func (s *Sandbox) handleWithdrawal(req *request) (any, *apiError) {
	// The docs disagree on the key (requestId, withdrawalId, id); accept any
	// one of them.
	var q map[string]calypso.ID
	if req.payload == nil {
		return nil, errBadRequest("payload is required")
	}
	if err := strictDecode(req.payload, &q); err != nil {
		return nil, errBadRequest("invalid payload: %v", err)
	}
	var id calypso.ID
	for k, v := range q {
		switch k {
		case "requestId", "withdrawalId", "id":
			if id != "" {
				return nil, errBadRequest("give the withdrawal id once")
			}
			id = v
		default:
			return nil, errBadRequest("unknown payload field %q", k)
		}
	}
	if id == "" {
		return nil, errBadRequest("withdrawal id is required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	it := s.items[string(id)]
	var p *payout
	if it != nil {
		for _, cand := range s.order {
			for _, ci := range cand.items {
				if ci == it {
					p = cand
				}
			}
		}
	}
	if it == nil || p == nil || p.account != req.acc.id {
		return nil, &apiError{http.StatusBadRequest, calypso.CodeNotFound, "Requested object not found"}
	}
	return s.echoWithdrawal(calypso.Withdrawal{
		ID: calypso.ID(it.id), Account: p.account, Amount: it.amount, Currency: p.currency, State: it.state,
		CalypsoFee: it.fee, TransactionHash: it.hash, DepositAddress: it.address, Comment: it.comment,
		CreatedDate: calypso.Time{Time: p.created}, WithdrawalErrors: append([]calypso.WithdrawalError{}, it.errs...),
	}), nil
}

// viewLocked renders p as Calypso's mass payout DTO.
func (s *Sandbox) viewLocked(p *payout) calypso.MassPayout {
	mp := calypso.MassPayout{
		ID: calypso.ID(p.id), IdempotencyKey: p.key, CompanyID: companyID(p.account), Account: p.account,
		State: p.state, Comment: p.comment, Name: p.name, Currency: p.currency,
		TotalWithdrawalAmount: s.reportedTotalLocked(p), TotalFee: p.fee,
		CreatedDate: calypso.Time{Time: p.created}, ExecutionDate: calypso.Time{Time: p.exec},
		Errors: calypso.PayoutErrors{WithdrawalErrors: []calypso.WithdrawalErrors{}}, ExternalID: p.externalID,
	}
	if p.total.Sign() > 0 {
		mp.TotalFeePercentage = calypso.NewAmount(p.fee.Decimal().Mul(decimal.NewFromInt(100)).DivRound(p.total.Decimal(), 4))
	}
	for _, it := range p.items {
		if len(it.errs) > 0 {
			mp.Errors.WithdrawalErrors = append(mp.Errors.WithdrawalErrors, calypso.WithdrawalErrors{
				WithdrawalID: calypso.ID(it.id), Errors: append([]calypso.WithdrawalError{}, it.errs...),
			})
		}
	}
	return mp
}

// ErrWrongState is returned by Confirm and Cancel for a payout that is not
// waiting for confirmation.
var ErrWrongState = errors.New("sandbox: payout is not PENDING_CONFIRMATION")

// ErrNoPayout is returned for an unknown payout id.
var ErrNoPayout = errors.New("sandbox: no such payout")

// Confirm approves a payout waiting in PENDING_CONFIRMATION.
func (s *Sandbox) Confirm(id string) error { return s.decide(id, true) }

// Cancel declines a payout waiting in PENDING_CONFIRMATION; it becomes
// CANCELED and its debit is refunded.
func (s *Sandbox) Cancel(id string) error { return s.decide(id, false) }

func (s *Sandbox) decide(id string, ok bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.payouts[id]
	if p == nil {
		return fmt.Errorf("%w %q", ErrNoPayout, id)
	}
	if p.state != calypso.StatePendingConfirmation || p.decided {
		return fmt.Errorf("%w: payout %s is %s", ErrWrongState, id, p.state)
	}
	p.decided = true
	p.decision <- ok
	return nil
}

// ForceOutcome makes the payout created with idempotency key end in state
// (COMPLETED, PARTIAL or FAILED) instead of one drawn from the outcome mix.
// Call it before the create.
func (s *Sandbox) ForceOutcome(key string, state calypso.State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forced[key] = state
}

// wait pauses for the scaled d; false when the sandbox is closing.
func (s *Sandbox) wait(d time.Duration) bool {
	t := time.NewTimer(s.scaled(d))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// drive moves p through the state machine, one step at a time.
func (s *Sandbox) drive(p *payout) {
	defer s.wg.Done()
	if !s.wait(s.cfg.StepDelay) {
		return
	}
	if s.cfg.Verification {
		s.setState(p, calypso.StatePendingConfirmation, calypso.EventPayoutChangeStatus)
		select {
		case ok := <-p.decision:
			if !ok {
				s.mu.Lock()
				s.refundLocked(p, p.items)
				for _, it := range p.items {
					it.state = itemFailed
				}
				s.setStateLocked(p, calypso.StateCanceled, calypso.EventPayoutChangeStatus)
				s.mu.Unlock()
				return
			}
		case <-s.ctx.Done():
			return
		}
	}
	s.setState(p, calypso.StateConfirmed, calypso.EventPayoutConfirmed)
	if !p.exec.IsZero() {
		// Scaled like every other delay, so a test can schedule a payout a
		// minute ahead and see it run a few milliseconds later.
		if d := p.exec.Sub(s.now()); d > 0 && !s.wait(d) {
			return
		}
	}
	if !s.wait(s.cfg.StepDelay) {
		return
	}
	s.mu.Lock()
	outcome := s.outcomeLocked(p)
	for _, it := range p.items {
		it.state = itemInProgress
	}
	s.setStateLocked(p, calypso.StateInProgress, calypso.EventPayoutChangeStatus)
	s.mu.Unlock()
	if !s.wait(s.cfg.StepDelay) {
		return
	}

	s.mu.Lock()
	var failed []*item
	switch outcome {
	case calypso.StateFailed:
		failed = p.items
		for _, it := range p.items {
			it.state = itemFailed
		}
	case calypso.StatePartial:
		failed = s.pickFailedLocked(p)
		for _, it := range failed {
			it.state = itemFailed
			it.errs = []calypso.WithdrawalError{{ID: calypso.ID(strconv.Itoa(len(it.errs) + 1)), Status: "NOT_ENOUGH_FUNDS", ErrorMessage: "withdrawal failed validation (sandbox)"}}
			s.emitLocked(p, calypso.EventPayoutValidationError, "", map[string]any{
				"message":          "Withdrawal validation failed: NOT_ENOUGH_FUNDS",
				"dealWithdrawalId": json.Number(it.id),
				"validationStatus": "NOT_ENOUGH_FUNDS",
			})
		}
	}
	for _, it := range p.items {
		if it.state == itemInProgress {
			it.hash = fmt.Sprintf("0x%064x", s.rng.Uint64())
			s.emitLocked(p, calypso.EventPayoutHashReceived, calypso.StateInProgress, map[string]any{"hash": it.hash})
		}
	}
	s.mu.Unlock()
	if !s.wait(s.cfg.StepDelay) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, it := range p.items {
		if it.state == itemInProgress {
			it.state = itemCompleted
		}
	}
	s.refundLocked(p, failed)
	s.setStateLocked(p, outcome, calypso.EventPayoutChangeStatus)
}

// outcomeLocked picks p's terminal state: forced, else drawn from the mix.
func (s *Sandbox) outcomeLocked(p *payout) calypso.State {
	out := calypso.StateCompleted
	if f, ok := s.forced[p.key]; ok && p.key != "" {
		out = f
	} else if m := s.cfg.Faults.Outcomes; m.Completed+m.Partial+m.Failed > 0 {
		x := s.rng.Float64() * (m.Completed + m.Partial + m.Failed)
		switch {
		case x < m.Partial:
			out = calypso.StatePartial
		case x < m.Partial+m.Failed:
			out = calypso.StateFailed
		}
	}
	if out == calypso.StatePartial && len(p.items) < 2 {
		// A single withdrawal cannot partly fail.
		out = calypso.StateFailed
	}
	return out
}

// pickFailedLocked fails a random, non-empty, proper subset of p's items.
func (s *Sandbox) pickFailedLocked(p *payout) []*item {
	n := len(p.items)
	k := 1 + s.rng.IntN(n-1)
	var out []*item
	for _, i := range s.rng.Perm(n)[:k] {
		out = append(out, p.items[i])
	}
	sort.Slice(out, func(a, b int) bool { return out[a].id < out[b].id })
	return out
}

func (s *Sandbox) refundLocked(p *payout, items []*item) {
	acc := s.accounts[p.account]
	for _, it := range items {
		acc.balances[p.currency] = acc.balances[p.currency].Add(it.amount).Add(it.fee)
	}
}

func (s *Sandbox) setState(p *payout, st calypso.State, event string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setStateLocked(p, st, event)
}

func (s *Sandbox) setStateLocked(p *payout, st calypso.State, event string) {
	p.state = st
	p.history = append(p.history, StateChange{State: st, At: s.now().UTC()})
	s.cfg.Logger.LogAttrs(s.ctx, slog.LevelInfo, "sandbox: payout state", payoutAttr(p.id), slog.String("state", string(st)))
	s.emitLocked(p, event, st, nil)
}
