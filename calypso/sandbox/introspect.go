package sandbox

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/payoutd/payoutd/calypso"
)

// Payout is a snapshot of a payout inside the sandbox.
type Payout struct {
	ID             string         `json:"id"`
	Account        string         `json:"account"`
	IdempotencyKey string         `json:"idempotencyKey"`
	ExternalID     string         `json:"externalId"`
	Name           string         `json:"name"`
	Comment        string         `json:"comment"`
	Currency       string         `json:"currency"`
	State          calypso.State  `json:"state"`
	Total          calypso.Amount `json:"total"`
	Fee            calypso.Amount `json:"fee"`
	Created        time.Time      `json:"created"`
	ExecutionDate  time.Time      `json:"executionDate,omitzero"`
	Items          []Item         `json:"items"`
	History        []StateChange  `json:"history"`
}

// Item is one withdrawal of a payout.
type Item struct {
	WithdrawalID   string                    `json:"withdrawalId"`
	DepositAddress string                    `json:"depositAddress"`
	Amount         calypso.Amount            `json:"amount"`
	Fee            calypso.Amount            `json:"fee"`
	Comment        string                    `json:"comment"`
	State          string                    `json:"state"`
	Hash           string                    `json:"hash,omitempty"`
	Errors         []calypso.WithdrawalError `json:"errors,omitempty"`
}

// StateChange is one transition of a payout.
type StateChange struct {
	State calypso.State `json:"state"`
	At    time.Time     `json:"at"`
}

// WebhookRecord is one webhook event and what became of it.
type WebhookRecord struct {
	ID        int64           `json:"id"`
	EventType string          `json:"eventType"`
	PayoutID  string          `json:"payoutId"`
	State     calypso.State   `json:"state,omitempty"`
	Body      json.RawMessage `json:"body"`
	// Faults applied.
	Dropped    bool `json:"dropped,omitempty"`
	Duplicated bool `json:"duplicated,omitempty"`
	Reordered  bool `json:"reordered,omitempty"`
	Delayed    bool `json:"delayed,omitempty"`
	// Attempts lists every delivery attempt of every copy.
	Attempts  []DeliveryAttempt `json:"attempts"`
	Delivered bool              `json:"delivered"`
	GaveUp    bool              `json:"gaveUp,omitempty"`
}

// DeliveryAttempt is one POST of a webhook.
type DeliveryAttempt struct {
	At     time.Time `json:"at"`
	Status int       `json:"status"`
	Error  string    `json:"error,omitempty"`
}

func (s *Sandbox) snapshotLocked(p *payout) Payout {
	out := Payout{
		ID: p.id, Account: p.account, IdempotencyKey: p.key, ExternalID: p.externalID, Name: p.name,
		Comment: p.comment, Currency: p.currency, State: p.state, Total: p.total, Fee: p.fee,
		Created: p.created, ExecutionDate: p.exec, History: append([]StateChange{}, p.history...),
	}
	for _, it := range p.items {
		out.Items = append(out.Items, Item{
			WithdrawalID: it.id, DepositAddress: it.address, Amount: it.amount, Fee: it.fee,
			Comment: it.comment, State: it.state, Hash: it.hash, Errors: append([]calypso.WithdrawalError(nil), it.errs...),
		})
	}
	return out
}

// Payouts returns every payout created, oldest first.
func (s *Sandbox) Payouts() []Payout {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Payout, 0, len(s.order))
	for _, p := range s.order {
		out = append(out, s.snapshotLocked(p))
	}
	return out
}

// Payout returns one payout by Calypso id.
func (s *Sandbox) Payout(id string) (Payout, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.payouts[id]
	if p == nil {
		return Payout{}, false
	}
	return s.snapshotLocked(p), true
}

// PayoutByIdempotencyKey returns the payout created with key.
func (s *Sandbox) PayoutByIdempotencyKey(key string) (Payout, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.byIdem[key]
	if p == nil {
		return Payout{}, false
	}
	return s.snapshotLocked(p), true
}

// Requests returns request counts per API path and outcome. Outcomes are
// "ok", "error:<code>" and "fault:<kind>".
func (s *Sandbox) Requests() map[string]map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]map[string]int, len(s.requests))
	for p, m := range s.requests {
		cp := make(map[string]int, len(m))
		for k, v := range m {
			cp[k] = v
		}
		out[p] = cp
	}
	return out
}

// InFlight returns how many API requests are being handled now, hung and
// delayed ones included: 0 once every caller has been answered or has
// given up, so a test can see that nothing is left behind.
func (s *Sandbox) InFlight() int { return int(s.inFlight.Load()) }

// CreateCount returns how many create requests carried key (whatever their
// outcome); compare with the single payout a key may create.
func (s *Sandbox) CreateCount(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creates[key]
}

// CreateCounts returns CreateCount for every key seen.
func (s *Sandbox) CreateCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.creates))
	for k, v := range s.creates {
		out[k] = v
	}
	return out
}

// Webhooks returns every webhook emitted, in envelope-id order, with its
// delivery attempts.
func (s *Sandbox) Webhooks() []WebhookRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]WebhookRecord, 0, len(s.webhooks))
	for _, w := range s.webhooks {
		c := w.WebhookRecord
		c.Attempts = append([]DeliveryAttempt(nil), w.Attempts...)
		out = append(out, c)
	}
	return out
}

// ErrNoAccount is returned for an unknown account.
var ErrNoAccount = errors.New("sandbox: no such account")

// SetBalance sets an account's balance of currency, e.g. to fund it later
// in a test.
func (s *Sandbox) SetBalance(account, currency string, amount calypso.Amount) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accounts[account]
	if a == nil {
		return ErrNoAccount
	}
	a.balances[currency] = amount
	return nil
}

// Balance returns an account's balance of currency.
func (s *Sandbox) Balance(account, currency string) calypso.Amount {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.accounts[account]; a != nil {
		return a.balances[currency]
	}
	return calypso.Amount{}
}

func (s *Sandbox) introspectionRoutes() {
	s.mux.HandleFunc("GET /sandbox/payouts", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Payouts())
	})
	s.mux.HandleFunc("GET /sandbox/payouts/{id}", func(w http.ResponseWriter, r *http.Request) {
		p, ok := s.Payout(r.PathValue("id"))
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such payout"})
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
	decide := func(f func(string) error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if err := f(r.PathValue("id")); err != nil {
				status := http.StatusConflict
				if errors.Is(err, ErrNoPayout) {
					status = http.StatusNotFound
				}
				writeJSON(w, status, map[string]string{"error": err.Error()})
				return
			}
			p, _ := s.Payout(r.PathValue("id"))
			writeJSON(w, http.StatusOK, p)
		}
	}
	s.mux.HandleFunc("POST /sandbox/payouts/{id}/confirm", decide(s.Confirm))
	s.mux.HandleFunc("POST /sandbox/payouts/{id}/cancel", decide(s.Cancel))
	s.mux.HandleFunc("GET /sandbox/requests", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Requests())
	})
	s.mux.HandleFunc("GET /sandbox/webhooks", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Webhooks())
	})
	s.mux.HandleFunc("GET /sandbox/idempotency", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.CreateCounts())
	})
	s.mux.HandleFunc("POST /sandbox/balance", func(w http.ResponseWriter, r *http.Request) {
		var b struct {
			Account  string         `json:"account"`
			Currency string         `json:"currency"`
			Amount   calypso.Amount `json:"amount"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&b); err != nil || b.Currency == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "want {account, currency, amount}"})
			return
		}
		if err := s.SetBalance(b.Account, b.Currency, b.Amount); err != nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"account": b.Account, "currency": b.Currency, "amount": b.Amount})
	})
}
