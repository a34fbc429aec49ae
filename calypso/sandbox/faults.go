package sandbox

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/shopspring/decimal"

	"github.com/payoutd/payoutd/calypso"
)

// TotalsMode is how the sandbox reports a payout's totalWithdrawalAmount.
// Calypso's number is not always the exact sum a client sent: it may have
// passed through a float, be 0 while the payout is still being created, or
// include fees.
type TotalsMode string

// Totals modes.
const (
	// TotalsExact reports the exact sum of the withdrawals (the default).
	TotalsExact TotalsMode = ""
	// TotalsFloat reports the sum rounded through float64 (shortest text
	// that reads back as the same float): an 18-decimal ETH total loses its
	// last digits.
	TotalsFloat TotalsMode = "float"
	// TotalsZeroWhileCreating reports 0 while the payout is
	// CREATION_IN_PROGRESS (so always in the create's answer), then exact.
	TotalsZeroWhileCreating TotalsMode = "zero-while-creating"
	// TotalsFeeInclusive reports the sum of amounts plus fees.
	TotalsFeeInclusive TotalsMode = "fee-inclusive"
)

// ParseTotalsMode reads a mode by name; "exact" and "" are TotalsExact.
func ParseTotalsMode(s string) (TotalsMode, error) {
	switch m := TotalsMode(s); m {
	case "exact":
		return TotalsExact, nil
	case TotalsExact, TotalsFloat, TotalsZeroWhileCreating, TotalsFeeInclusive:
		return m, nil
	}
	return "", fmt.Errorf("unknown totals mode %q (want exact, %s, %s or %s)", s, TotalsFloat, TotalsZeroWhileCreating, TotalsFeeInclusive)
}

// Outcome counts of the per-account faults, in Requests.
const (
	outcomeHang      = "fault:hang"
	outcomeRateLimit = "fault:rate-limit"
)

// normalized applies defaults and copies every map and slice, so that the
// sandbox owns its faults and a caller changing its own maps later cannot
// race it.
func (f Faults) normalized() Faults {
	if f.WebhookDelay <= 0 {
		f.WebhookDelay = 60 * time.Second
	}
	if f.SlowDelay <= 0 {
		f.SlowDelay = 2 * time.Second
	}
	f.TotalsCurrencies = slices.Clone(f.TotalsCurrencies)
	f.AccountLatency = maps.Clone(f.AccountLatency)
	f.HangAccounts = maps.Clone(f.HangAccounts)
	f.AccountRateLimit = maps.Clone(f.AccountRateLimit)
	f.RefusedAddresses = slices.Clone(f.RefusedAddresses)
	return f
}

// SetFaults changes the faults while the sandbox runs: fn edits a copy of
// the current faults, which then replaces them at once. Requests already
// waiting on an account's hang see the change; a changed Seed reseeds the
// generator. Safe for concurrent use.
func (s *Sandbox) SetFaults(fn func(*Faults)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.cfg.Faults.normalized()
	fn(&f)
	f = f.normalized()
	if f.Seed != s.cfg.Faults.Seed {
		s.rng, s.apiRng = newRand(f.Seed, rngStream), newRand(f.Seed, apiRngStream)
	}
	s.cfg.Faults = f
	close(s.faultsChanged)
	s.faultsChanged = make(chan struct{})
}

// Faults returns a copy of the current faults.
func (s *Sandbox) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.Faults.normalized()
}

// SetAccountLatency delays every later API call of account by d (0 removes
// the delay).
func (s *Sandbox) SetAccountLatency(account string, d time.Duration) {
	s.SetFaults(func(f *Faults) {
		if f.AccountLatency == nil {
			f.AccountLatency = map[string]time.Duration{}
		}
		if d <= 0 {
			delete(f.AccountLatency, account)
			return
		}
		f.AccountLatency[account] = d
	})
}

// HangAccount makes account's API calls hang (hang true) until their caller
// gives up, or releases them (false): calls hanging then go on and are
// answered.
func (s *Sandbox) HangAccount(account string, hang bool) {
	s.SetFaults(func(f *Faults) {
		if f.HangAccounts == nil {
			f.HangAccounts = map[string]bool{}
		}
		if !hang {
			delete(f.HangAccounts, account)
			return
		}
		f.HangAccounts[account] = true
	})
}

// bucket is one account's token bucket for AccountRateLimit.
type bucket struct {
	tokens float64
	last   time.Time
}

// takeTokenLocked spends one of account's tokens at rate per second; false
// when the bucket is empty. s.mu must be held.
func (s *Sandbox) takeTokenLocked(account string, rate float64) bool {
	now := time.Now()
	burst := max(1, rate)
	b := s.buckets[account]
	if b == nil {
		b = &bucket{tokens: burst, last: now}
		s.buckets[account] = b
	}
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// accountFaults applies the per-account faults to a request before it is
// processed: a hang, the rate limit, the latency. It returns false when it
// has answered (429) or dropped the request, which then must not be
// processed.
func (s *Sandbox) accountFaults(path string, w http.ResponseWriter, r *http.Request) bool {
	key := r.Header.Get(calypso.HeaderKey)
	s.mu.Lock()
	acc := s.byKey[key]
	s.mu.Unlock()
	if acc == nil || key == "" {
		return true // refused as 002 by process
	}
	counted := false
	for {
		s.mu.Lock()
		hang, changed := s.cfg.Faults.HangAccounts[acc.id], s.faultsChanged
		s.mu.Unlock()
		if !hang {
			break
		}
		if !counted {
			s.count(path, outcomeHang)
			counted = true
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return false // the caller gave up; nobody reads an answer
		case <-s.ctx.Done():
			resetConn(w)
			return false
		}
	}
	s.mu.Lock()
	latency := s.cfg.Faults.AccountLatency[acc.id]
	limited := false
	if rate := s.cfg.Faults.AccountRateLimit[acc.id]; rate > 0 {
		limited = !s.takeTokenLocked(acc.id, rate)
	}
	s.mu.Unlock()
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return false
		case <-s.ctx.Done():
			t.Stop()
			resetConn(w)
			return false
		}
	}
	if limited {
		s.count(path, outcomeRateLimit)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "Too Many Requests", http.StatusTooManyRequests)
		return false
	}
	return true
}

// refusedAddress returns the first row of items whose address is refused.
func (s *Sandbox) refusedAddress(items []createItem) (int, bool) {
	s.mu.Lock()
	refused := s.cfg.Faults.RefusedAddresses
	s.mu.Unlock()
	for i, it := range items {
		if slices.Contains(refused, it.DepositAddress) {
			return i, true
		}
	}
	return 0, false
}

// lookupLaggingLocked reports whether p is still invisible to reads.
func (s *Sandbox) lookupLaggingLocked(p *payout) bool {
	lag := s.scaled(s.cfg.Faults.LookupLag)
	return lag > 0 && time.Since(p.born) < lag
}

// reportedTotalLocked is p's totalWithdrawalAmount as the API answers it.
func (s *Sandbox) reportedTotalLocked(p *payout) calypso.Amount {
	f := s.cfg.Faults
	if len(f.TotalsCurrencies) > 0 && !slices.Contains(f.TotalsCurrencies, p.currency) {
		return p.total
	}
	switch f.Totals {
	case TotalsFloat:
		x, _ := p.total.Decimal().Float64()
		return calypso.NewAmount(decimal.NewFromFloat(x))
	case TotalsZeroWhileCreating:
		if p.state == calypso.StateCreationInProgress {
			return calypso.Amount{}
		}
	case TotalsFeeInclusive:
		return p.total.Add(p.fee)
	}
	return p.total
}
