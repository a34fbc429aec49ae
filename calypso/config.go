package calypso

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"time"

	"github.com/payoutd/payoutd/money"
)

// ProductionBaseURL is Calypso's production API. It is never a default: a
// client talks to production only when its configuration says so.
const ProductionBaseURL = "https://api.calypso.finance"

// Defaults applied by NewClient to zero fields of Config.
const (
	DefaultTimeout           = 30 * time.Second
	DefaultRateLimit         = 5.0
	DefaultMaxAttempts       = 4
	DefaultBaseDelay         = 200 * time.Millisecond
	DefaultMaxDelay          = 5 * time.Second
	DefaultMaxItems          = 100
	DefaultWithdrawalIDField = "requestId"
)

// Config configures a Client.
type Config struct {
	// BaseURL is the API root, e.g. ProductionBaseURL or a sandbox's URL.
	// Required; there is deliberately no default.
	BaseURL string
	// Account is the merchant account id sent in every request envelope.
	// Opaque: Calypso's docs show both 0x-hex and UUID forms.
	Account string
	// APIKey is the public API key, sent in the Key header.
	APIKey string
	// APISecret is the secret API key used to sign requests.
	APISecret Secret
	// Timeout bounds one HTTP attempt (default 30s). The caller's context
	// bounds the whole call, retries included.
	Timeout time.Duration
	// RateLimit is the client-side ceiling in requests per second across
	// all operations (default 5; Calypso documents no limit, so stay
	// polite). Negative disables the limiter; WithLimiter replaces it, e.g.
	// with one limiter per account shared by several clients.
	RateLimit float64
	// Retry says how retryable failures are retried.
	Retry RetryPolicy
	// Currencies holds per-currency rules; nil means DefaultCurrencies().
	// A create for a currency missing here is refused locally, because its
	// decimal places are unknown.
	Currencies map[string]CurrencyRule
	// WithdrawalIDField is the payload key of the get-withdrawal request.
	// Calypso's rendered docs show "requestId", older docs "withdrawalId";
	// default "requestId".
	WithdrawalIDField string
}

// RetryPolicy is capped exponential backoff with jitter: attempt n waits a
// random duration in [d/2, d] with d = min(BaseDelay·2^(n-1), MaxDelay).
type RetryPolicy struct {
	// MaxAttempts counts the first try (default 4; 1 makes exactly one
	// attempt per call, for a caller that owns its retry policy).
	MaxAttempts int
	// BaseDelay is the first backoff (default 200ms).
	BaseDelay time.Duration
	// MaxDelay caps every backoff, including a server's Retry-After
	// (default 5s).
	MaxDelay time.Duration
}

// CurrencyRule is what the client enforces locally before a create.
type CurrencyRule struct {
	// Decimals is the most digits allowed after the decimal point.
	Decimals int32
	// MaxItems is the most recipients in one mass payout (0 = 100).
	MaxItems int
	// Max, when positive, is the largest amount of one payment; zero means
	// none beyond package money's global bounds.
	Max Amount
}

// AmountRule is the rule package money checks amounts of this currency by.
func (r CurrencyRule) AmountRule() money.Rule { return money.Rule{Decimals: r.Decimals, Max: r.Max.d} }

// DefaultCurrencies returns the rules from the API notes: 100 recipients per
// mass payout, 1000 for ETH and ERC-20 tokens (plain USDT is ERC-20); decimals
// per chain (BTC 8, ETH 18, USDT on Ethereum and Tron 6). The notes mark
// these as inferred: confirm with Calypso before go-live. A fresh map is
// returned so callers may change it.
func DefaultCurrencies() map[string]CurrencyRule {
	return map[string]CurrencyRule{
		"BTC":        {Decimals: 8, MaxItems: 100},
		"ETH":        {Decimals: 18, MaxItems: 1000},
		"USDT":       {Decimals: 6, MaxItems: 1000},
		"USDC":       {Decimals: 6, MaxItems: 1000},
		"DAI":        {Decimals: 18, MaxItems: 1000},
		"FRAX":       {Decimals: 18, MaxItems: 1000},
		"BUSD_ETH":   {Decimals: 18, MaxItems: 1000},
		"TRX":        {Decimals: 6, MaxItems: 100},
		"USDT_TRX":   {Decimals: 6, MaxItems: 100},
		"BNB":        {Decimals: 18, MaxItems: 100},
		"BUSD":       {Decimals: 18, MaxItems: 100},
		"USDT_BSC":   {Decimals: 18, MaxItems: 100},
		"MATIC":      {Decimals: 18, MaxItems: 100},
		"USDT_MATIC": {Decimals: 6, MaxItems: 100},
		"XDG":        {Decimals: 8, MaxItems: 100},
	}
}

// Validate reports the first invalid field of c, by name. Zero values that
// have defaults are valid.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("calypso: config: %s %s", field, fmt.Sprintf(format, args...)))
	}
	if c.BaseURL == "" {
		bad("BaseURL", "is required (no default, so production is never reached by accident)")
	} else if u, err := url.Parse(c.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("BaseURL", "must be an absolute http(s) URL, got %q", truncate(c.BaseURL, 100))
	}
	if c.Account == "" {
		bad("Account", "is required")
	}
	if c.APIKey == "" {
		bad("APIKey", "is required")
	}
	if c.APISecret == "" {
		bad("APISecret", "is required")
	}
	if c.Timeout < 0 {
		bad("Timeout", "must not be negative")
	}
	if math.IsNaN(c.RateLimit) {
		bad("RateLimit", "must be a number")
	}
	if c.Retry.MaxAttempts < 0 {
		bad("Retry.MaxAttempts", "must not be negative")
	}
	if c.Retry.BaseDelay < 0 {
		bad("Retry.BaseDelay", "must not be negative")
	}
	if c.Retry.MaxDelay < 0 {
		bad("Retry.MaxDelay", "must not be negative")
	}
	if c.Retry.BaseDelay > 0 && c.Retry.MaxDelay > 0 && c.Retry.MaxDelay < c.Retry.BaseDelay {
		bad("Retry.MaxDelay", "must not be below Retry.BaseDelay")
	}
	for cur, r := range c.Currencies {
		if cur == "" {
			bad("Currencies", "has an empty currency code")
		}
		if r.Decimals < 0 || r.Decimals > 36 {
			bad("Currencies["+cur+"].Decimals", "must be in 0..36, got %d", r.Decimals)
		}
		if r.MaxItems < 0 {
			bad("Currencies["+cur+"].MaxItems", "must not be negative")
		}
	}
	return errors.Join(errs...)
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.RateLimit == 0 {
		c.RateLimit = DefaultRateLimit
	}
	if c.Retry.MaxAttempts == 0 {
		c.Retry.MaxAttempts = DefaultMaxAttempts
	}
	if c.Retry.BaseDelay == 0 {
		c.Retry.BaseDelay = DefaultBaseDelay
	}
	if c.Retry.MaxDelay == 0 {
		c.Retry.MaxDelay = max(DefaultMaxDelay, c.Retry.BaseDelay)
	}
	if c.Currencies == nil {
		c.Currencies = DefaultCurrencies()
	} else {
		// Copy so later changes by the caller do not race with the client.
		m := make(map[string]CurrencyRule, len(c.Currencies))
		for k, v := range c.Currencies {
			m[k] = v
		}
		c.Currencies = m
	}
	if c.WithdrawalIDField == "" {
		c.WithdrawalIDField = DefaultWithdrawalIDField
	}
	return c
}

// Rule returns the rule for currency with MaxItems defaulted, and whether the
// currency is configured.
func (c Config) Rule(currency string) (CurrencyRule, bool) {
	cur := c.Currencies
	if cur == nil {
		cur = DefaultCurrencies()
	}
	r, ok := cur[currency]
	if r.MaxItems == 0 {
		r.MaxItems = DefaultMaxItems
	}
	return r, ok
}
