package sandbox

import (
	"log/slog"
	"maps"
	"net/http"
	"time"

	"github.com/payoutd/payoutd/calypso"
)

// Config configures a Sandbox. The zero value works: no accounts, no fees,
// no webhooks, real time.
type Config struct {
	// Accounts maps an account id to its credentials and balances.
	Accounts map[string]Account
	// Tariff maps a currency to its fee; currencies absent are free.
	Tariff map[string]Fee
	// Verification puts new payouts in PENDING_CONFIRMATION until Confirm
	// or Cancel, like Calypso's "payout verification" setting.
	Verification bool
	// Currencies holds decimals and item limits; nil means
	// calypso.DefaultCurrencies(). Unknown currencies are refused (001).
	Currencies map[string]calypso.CurrencyRule
	// TimeScale multiplies every delay (steps, retry gaps, the wait until an
	// executionDate, webhook delays). Default 1; 0.001 turns seconds into
	// milliseconds.
	TimeScale float64
	// StepDelay is the unscaled pause between automatic transitions
	// (default 2s).
	StepDelay time.Duration
	// Webhook is where and how events are delivered.
	Webhook WebhookConfig
	// Faults injects failures.
	Faults Faults
	// Now is the sandbox clock, for the timestamp window, executionDate and
	// the Date header (default time.Now).
	Now func() time.Time
	// Logger receives one line per request and per delivery (default:
	// discard).
	Logger *slog.Logger
}

// Account is a merchant account.
type Account struct {
	Name      string
	APIKey    string
	APISecret calypso.Secret
	// Balances per currency; copied at New.
	Balances map[string]calypso.Amount
}

// Fee is a currency's tariff: Fixed + Percent% of the amount, rounded up to
// the currency's decimals, charged per withdrawal on top of its amount.
type Fee struct {
	Fixed   calypso.Amount
	Percent calypso.Amount
}

// WebhookConfig is the sandbox's one webhook subscription.
type WebhookConfig struct {
	// URL receives the events; empty records them without delivering.
	URL string
	// RequestID is the subscription's requestId (envelope field).
	RequestID string
	// PublicKey is sent in the Key header; Secret signs the body.
	PublicKey string
	Secret    calypso.Secret
	// RetryGaps are the unscaled waits before each retry of a failed
	// delivery; nil means DefaultRetryGaps. After the last, delivery stops.
	RetryGaps []time.Duration
	// Timeout bounds one delivery attempt, unscaled (default 5s).
	Timeout time.Duration
	// Client sends the deliveries (default: a new http.Client).
	Client *http.Client
}

// DefaultRetryGaps returns Calypso's documented retry schedule: 19 gaps
// growing like Fibonacci from 30 s to 125,430 s. A fresh slice each call.
func DefaultRetryGaps() []time.Duration {
	s := []int{30, 30, 60, 90, 150, 240, 390, 630, 1020, 1650, 2670, 4320, 6990, 11310, 18300, 29610, 47910, 77520, 125430}
	out := make([]time.Duration, len(s))
	for i, v := range s {
		out[i] = time.Duration(v) * time.Second
	}
	return out
}

// Faults are failure probabilities in [0,1], drawn from a generator seeded
// by Seed so runs repeat.
type Faults struct {
	Seed int64

	// Webhook faults, drawn per event.
	DropWebhook      float64 // never delivered
	DuplicateWebhook float64 // delivered twice (same envelope id)
	ReorderWebhook   float64 // held back so later events overtake it
	DelayWebhook     float64 // delivered WebhookDelay later
	// WebhookDelay is the unscaled extra delay of a delayed webhook
	// (default 60s).
	WebhookDelay time.Duration

	// API faults, drawn per request, before it is processed (except
	// LostResponse, which processes the request and then resets the
	// connection, as when an answer is lost on the way back).
	API5xx       float64
	API429       float64
	SlowResponse float64
	ConnReset    float64
	LostResponse float64
	// SlowDelay is how long a slow response stalls, in real time (default
	// 2s), so that client timeouts can be exercised.
	SlowDelay time.Duration

	// Outcomes weighs how payouts end once processed; all zero means every
	// payout COMPLETES.
	Outcomes OutcomeMix

	// Calypso's inconsistencies. See faults.go; every one can also be
	// changed while the sandbox runs, with SetFaults, SetAccountLatency and
	// HangAccount.

	// LookupLag: for this long after a create (scaled by TimeScale),
	// payout/mass — by id or idempotencyKey — answers 004 "not found", as
	// Calypso's read side lags behind its write side.
	LookupLag time.Duration
	// ValidationAfterAmbiguous is the probability that a create whose
	// idempotency key already exists answers 016 "Can not create deal.
	// Validation failed" instead of 016 "IdempotencyKey … already exists"
	// (Calypso validates before it checks the key). It never creates twice.
	ValidationAfterAmbiguous float64
	// Totals is how creates and payout/mass report totalWithdrawalAmount
	// (default TotalsExact). The sandbox's own records (Payouts) stay exact.
	Totals TotalsMode
	// TotalsCurrencies limits Totals to these currencies; empty means all.
	TotalsCurrencies []string
	// AccountLatency delays every API call of an account (by account id) by
	// this long, in real time, before it is answered.
	AccountLatency map[string]time.Duration
	// HangAccounts: API calls of these accounts are never answered, and
	// nothing is processed, until the caller gives up (its request ends),
	// the account is released (HangAccount(id, false)) or the sandbox
	// closes (the connection is then reset).
	HangAccounts map[string]bool
	// AccountRateLimit allows an account this many API calls per second (a
	// token bucket holding one second's worth, at least one call); calls
	// above it get HTTP 429 with Retry-After, like Fault429, and are not
	// processed. Zero or absent: no limit.
	AccountRateLimit map[string]float64
	// RefusedAddresses: a create with any recipient at one of these
	// addresses is refused with 400 001 "massAddresses[i].depositAddress:
	// invalid address <addr>" (the first such row) and creates nothing.
	RefusedAddresses []string
}

// OutcomeMix weighs the terminal states of processed payouts.
type OutcomeMix struct {
	Completed, Partial, Failed float64
}

// Fault is one API fault, for InjectFault.
type Fault string

// API faults.
const (
	Fault5xx          Fault = "5xx"
	Fault429          Fault = "429"
	FaultSlow         Fault = "slow"
	FaultReset        Fault = "reset"
	FaultLostResponse Fault = "lost-response"
)

func (c Config) withDefaults() Config {
	if c.TimeScale <= 0 {
		c.TimeScale = 1
	}
	if c.StepDelay <= 0 {
		c.StepDelay = 2 * time.Second
	}
	if c.Currencies == nil {
		c.Currencies = calypso.DefaultCurrencies()
	}
	// Copies, so a caller changing its maps later cannot race the sandbox.
	c.Currencies = maps.Clone(c.Currencies)
	c.Tariff = maps.Clone(c.Tariff)
	if c.Webhook.RetryGaps == nil {
		c.Webhook.RetryGaps = DefaultRetryGaps()
	}
	if c.Webhook.Timeout <= 0 {
		c.Webhook.Timeout = 5 * time.Second
	}
	if c.Webhook.Client == nil {
		c.Webhook.Client = &http.Client{}
	}
	c.Faults = c.Faults.normalized()
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
