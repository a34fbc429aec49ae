package sandbox

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
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

// faultsJSON is the HTTP form of Calypso's inconsistencies, for
// /sandbox/faults: durations as Go duration text ("2s").
type faultsJSON struct {
	LookupLag                string             `json:"lookupLag"`
	ValidationAfterAmbiguous float64            `json:"validationAfterAmbiguous"`
	Totals                   TotalsMode         `json:"totals"`
	TotalsCurrencies         []string           `json:"totalsCurrencies"`
	AccountLatency           map[string]string  `json:"accountLatency"`
	HangAccounts             map[string]bool    `json:"hangAccounts"`
	AccountRateLimit         map[string]float64 `json:"accountRateLimit"`
	RefusedAddresses         []string           `json:"refusedAddresses"`
}

func toJSON(f Faults) faultsJSON {
	out := faultsJSON{LookupLag: f.LookupLag.String(), ValidationAfterAmbiguous: f.ValidationAfterAmbiguous,
		Totals: f.Totals, TotalsCurrencies: f.TotalsCurrencies, AccountLatency: map[string]string{},
		HangAccounts: f.HangAccounts, AccountRateLimit: f.AccountRateLimit, RefusedAddresses: f.RefusedAddresses}
	for a, d := range f.AccountLatency {
		out.AccountLatency[a] = d.String()
	}
	return out
}

// patchFaults applies the keys present in body to f. Keys absent stay as
// they are; an unknown key or a bad value is an error naming it, and then
// nothing is applied.
func patchFaults(f *Faults, body []byte) error {
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(body, &keys); err != nil {
		return fmt.Errorf("want a JSON object: %v", err)
	}
	next := f.normalized()
	dur := func(key string, raw json.RawMessage) (time.Duration, error) {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, fmt.Errorf("%s: want a duration such as \"2s\"", key)
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return 0, fmt.Errorf("%s: %q is not a non-negative duration", key, s)
		}
		return d, nil
	}
	for key, raw := range keys {
		var err error
		switch key {
		case "lookupLag":
			next.LookupLag, err = dur(key, raw)
		case "validationAfterAmbiguous":
			var p float64
			if err = json.Unmarshal(raw, &p); err == nil && (p < 0 || p > 1) {
				err = fmt.Errorf("%s: %v is not a probability in [0,1]", key, p)
			}
			next.ValidationAfterAmbiguous = p
		case "totals":
			var s string
			if err = json.Unmarshal(raw, &s); err == nil {
				next.Totals, err = ParseTotalsMode(s)
			}
		case "totalsCurrencies":
			next.TotalsCurrencies = nil
			err = json.Unmarshal(raw, &next.TotalsCurrencies)
		case "accountLatency":
			var m map[string]string
			if err = json.Unmarshal(raw, &m); err == nil {
				next.AccountLatency = map[string]time.Duration{}
				for a, s := range m {
					var d time.Duration
					if d, err = dur(key+"."+a, json.RawMessage(strconv.Quote(s))); err != nil {
						break
					}
					next.AccountLatency[a] = d
				}
			}
		case "hangAccounts":
			next.HangAccounts = nil
			err = json.Unmarshal(raw, &next.HangAccounts)
		case "accountRateLimit":
			next.AccountRateLimit = nil
			if err = json.Unmarshal(raw, &next.AccountRateLimit); err == nil {
				for a, r := range next.AccountRateLimit {
					if !(r >= 0) || math.IsInf(r, 0) {
						err = fmt.Errorf("%s.%s: %v is not a rate", key, a, r)
					}
				}
			}
		case "refusedAddresses":
			next.RefusedAddresses = nil
			err = json.Unmarshal(raw, &next.RefusedAddresses)
		default:
			err = fmt.Errorf("unknown fault %q", key)
		}
		if err != nil {
			if _, ok := err.(*json.UnmarshalTypeError); ok {
				err = fmt.Errorf("%s: %v", key, err)
			}
			return err
		}
	}
	*f = next
	return nil
}

func (s *Sandbox) faultRoutes() {
	s.mux.HandleFunc("GET /sandbox/faults", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, toJSON(s.Faults()))
	})
	s.mux.HandleFunc("POST /sandbox/faults", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "cannot read body"})
			return
		}
		var perr error
		s.SetFaults(func(f *Faults) { perr = patchFaults(f, body) })
		if perr != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": perr.Error()})
			return
		}
		writeJSON(w, http.StatusOK, toJSON(s.Faults()))
	})
}
