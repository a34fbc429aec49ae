package main

import (
	"context"
	"crypto/subtle"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/calypso/sandbox"
	"github.com/payoutd/payoutd/pipeline"
)

// sandboxCmd serves the Calypso sandbox alone, as docker-compose runs it.
type sandboxCmd struct {
	Listen   string   `name:"listen" env:"PAYOUTD_SANDBOX_LISTEN" default:"127.0.0.1:8081" help:"Listen address of the sandbox API and /sandbox/ introspection. Loopback by default; beyond it --introspection-token is required."`
	Accounts []string `name:"account" env:"PAYOUTD_SANDBOX_ACCOUNTS" sep:";" placeholder:"id=ID,key=KEY,secret=SECRET,balance=CUR:AMOUNT" help:"A merchant account with its API key pair and balances (balance=CUR:AMOUNT, repeatable). Repeat the flag, or separate accounts with ';'."`
	Fees     []string `name:"fee" env:"PAYOUTD_SANDBOX_FEES" placeholder:"CUR=FIXED" help:"Fixed fee per withdrawal of a currency (default: free)."`

	WebhookURL        string         `name:"webhook-url" env:"PAYOUTD_SANDBOX_WEBHOOK_URL" help:"Where webhooks go, e.g. http://payoutd:8080/webhooks/calypso (empty: recorded, not sent)."`
	WebhookKey        string         `name:"webhook-key" env:"PAYOUTD_SANDBOX_WEBHOOK_KEY" help:"Public key sent in the webhooks' Key header."`
	WebhookSecret     calypso.Secret `name:"webhook-secret" env:"PAYOUTD_SANDBOX_WEBHOOK_SECRET" help:"Secret that signs the webhooks."`
	WebhookSecretFile string         `name:"webhook-secret-file" env:"PAYOUTD_SANDBOX_WEBHOOK_SECRET_FILE" placeholder:"PATH" help:"File holding --webhook-secret."`

	IntrospectionToken     calypso.Secret `name:"introspection-token" env:"PAYOUTD_SANDBOX_INTROSPECTION_TOKEN" help:"Bearer token the /sandbox/ endpoints (balances, confirm, cancel, records) require; required when --listen is not loopback. Prefer --introspection-token-file."`
	IntrospectionTokenFile string         `name:"introspection-token-file" env:"PAYOUTD_SANDBOX_INTROSPECTION_TOKEN_FILE" placeholder:"PATH" help:"File holding --introspection-token."`

	TimeScale          float64       `name:"time-scale" env:"PAYOUTD_SANDBOX_TIME_SCALE" default:"1" help:"Multiplies every delay (steps, webhook retries); 0.001 turns seconds into milliseconds."`
	StepDelay          time.Duration `name:"step-delay" env:"PAYOUTD_SANDBOX_STEP_DELAY" default:"2s" help:"Unscaled pause between a payout's automatic state changes."`
	Verification       bool          `name:"verification" env:"PAYOUTD_SANDBOX_VERIFICATION" help:"New payouts wait in PENDING_CONFIRMATION for POST /sandbox/payouts/{id}/confirm."`
	faultFlags         `embed:""`
	inconsistencyFlags `embed:""`
	logFlags           `embed:""`

	cfg    sandbox.Config
	inline []string // settings whose secrets were given inline, to warn about
}

// faultFlags inject Calypso's failures: probabilities in [0,1].
type faultFlags struct {
	Seed              int64   `name:"seed" env:"PAYOUTD_SANDBOX_SEED" default:"1" help:"Seed of the fault generator, so runs repeat."`
	DropWebhooks      float64 `name:"drop-webhooks" env:"PAYOUTD_SANDBOX_DROP_WEBHOOKS" help:"Probability a webhook is never delivered."`
	DuplicateWebhooks float64 `name:"duplicate-webhooks" env:"PAYOUTD_SANDBOX_DUPLICATE_WEBHOOKS" help:"Probability a webhook is delivered twice."`
	ReorderWebhooks   float64 `name:"reorder-webhooks" env:"PAYOUTD_SANDBOX_REORDER_WEBHOOKS" help:"Probability a webhook is overtaken by later ones."`
	DelayWebhooks     float64 `name:"delay-webhooks" env:"PAYOUTD_SANDBOX_DELAY_WEBHOOKS" help:"Probability a webhook is delivered 60s (scaled) late."`
	API5xx            float64 `name:"api-5xx" env:"PAYOUTD_SANDBOX_API_5XX" help:"Probability an API call answers 500."`
	API429            float64 `name:"api-429" env:"PAYOUTD_SANDBOX_API_429" help:"Probability an API call answers 429."`
	SlowResponses     float64 `name:"slow-responses" env:"PAYOUTD_SANDBOX_SLOW_RESPONSES" help:"Probability an API call stalls 2s."`
	LostResponses     float64 `name:"lost-responses" env:"PAYOUTD_SANDBOX_LOST_RESPONSES" help:"Probability a call is processed but its answer lost."`
	Partial           float64 `name:"partial" env:"PAYOUTD_SANDBOX_PARTIAL" help:"Share of payouts that end PARTIAL."`
	Failed            float64 `name:"failed" env:"PAYOUTD_SANDBOX_FAILED" help:"Share of payouts that end FAILED (the rest COMPLETE)."`
}

func (f faultFlags) validate(p *problems) {
	for name, v := range map[string]float64{
		"--drop-webhooks": f.DropWebhooks, "--duplicate-webhooks": f.DuplicateWebhooks, "--reorder-webhooks": f.ReorderWebhooks,
		"--delay-webhooks": f.DelayWebhooks, "--api-5xx": f.API5xx, "--api-429": f.API429, "--slow-responses": f.SlowResponses,
		"--lost-responses": f.LostResponses, "--partial": f.Partial, "--failed": f.Failed,
	} {
		if v < 0 || v > 1 {
			p.add(name, "must be a probability in [0,1], got %v", v)
		}
	}
	if f.Partial+f.Failed > 1 {
		p.add("--partial/--failed", "together must not exceed 1")
	}
}

func (f faultFlags) faults() sandbox.Faults {
	fs := sandbox.Faults{
		Seed: f.Seed, DropWebhook: f.DropWebhooks, DuplicateWebhook: f.DuplicateWebhooks, ReorderWebhook: f.ReorderWebhooks,
		DelayWebhook: f.DelayWebhooks, API5xx: f.API5xx, API429: f.API429, SlowResponse: f.SlowResponses, LostResponse: f.LostResponses,
	}
	if f.Partial > 0 || f.Failed > 0 {
		fs.Outcomes = sandbox.OutcomeMix{Completed: 1 - f.Partial - f.Failed, Partial: f.Partial, Failed: f.Failed}
	}
	return fs
}

// inconsistencyFlags make the sandbox slow and inconsistent the way
// Calypso is: a lagging read side, overloaded 016, inexact totals, slow,
// hung or rate-limited accounts, refused addresses. All default off.
type inconsistencyFlags struct {
	LookupLag                time.Duration `name:"fault-lookup-lag" env:"PAYOUTD_SANDBOX_FAULT_LOOKUP_LAG" help:"For this long (scaled by --time-scale) after a create, payout/mass answers 004 not found (0: off)."`
	ValidationAfterAmbiguous float64       `name:"fault-validation-after-ambiguous" env:"PAYOUTD_SANDBOX_FAULT_VALIDATION_AFTER_AMBIGUOUS" help:"Probability that a create reusing a key answers 016 'Validation failed' instead of 016 'already exists'."`
	Totals                   string        `name:"fault-totals" env:"PAYOUTD_SANDBOX_FAULT_TOTALS" default:"exact" enum:"exact,float,zero-while-creating,fee-inclusive" help:"How totalWithdrawalAmount is reported: exact, float (rounded through float64), zero-while-creating (0 while CREATION_IN_PROGRESS) or fee-inclusive."`
	TotalsCurrencies         []string      `name:"fault-totals-currency" env:"PAYOUTD_SANDBOX_FAULT_TOTALS_CURRENCIES" placeholder:"CUR" help:"Limit --fault-totals to these currencies (repeatable; default: all)."`
	AccountLatency           []string      `name:"fault-account-latency" env:"PAYOUTD_SANDBOX_FAULT_ACCOUNT_LATENCY" placeholder:"ACCOUNT=DUR" help:"Delay every API call of an account by DUR, real time (repeatable)."`
	HangAccounts             []string      `name:"fault-hang-account" env:"PAYOUTD_SANDBOX_FAULT_HANG_ACCOUNTS" placeholder:"ACCOUNT" help:"Never answer this account's API calls until the caller gives up (repeatable)."`
	AccountRate              []string      `name:"fault-account-rate" env:"PAYOUTD_SANDBOX_FAULT_ACCOUNT_RATE" placeholder:"ACCOUNT=N" help:"Allow an account N API calls per second; above it answer 429 (repeatable)."`
	RefusedAddresses         []string      `name:"fault-refused-address" env:"PAYOUTD_SANDBOX_FAULT_REFUSED_ADDRESSES" placeholder:"ADDRESS" help:"Refuse a create with a recipient at this address: 400 001 naming the row (repeatable)."`
}

// apply validates the flags and sets them on f; accounts are the
// configured account ids, which the per-account flags must name.
func (in inconsistencyFlags) apply(p *problems, f *sandbox.Faults, accounts map[string]sandbox.Account) {
	if in.LookupLag < 0 {
		p.add("--fault-lookup-lag (PAYOUTD_SANDBOX_FAULT_LOOKUP_LAG)", "must not be negative, got %s", in.LookupLag)
	}
	f.LookupLag = in.LookupLag
	if v := in.ValidationAfterAmbiguous; v < 0 || v > 1 {
		p.add("--fault-validation-after-ambiguous (PAYOUTD_SANDBOX_FAULT_VALIDATION_AFTER_AMBIGUOUS)", "must be a probability in [0,1], got %v", v)
	}
	f.ValidationAfterAmbiguous = in.ValidationAfterAmbiguous
	mode, err := sandbox.ParseTotalsMode(in.Totals)
	if err != nil {
		p.add("--fault-totals (PAYOUTD_SANDBOX_FAULT_TOTALS)", "%v", err)
	}
	f.Totals, f.TotalsCurrencies = mode, nonEmpty(in.TotalsCurrencies)
	known := func(setting, id string) bool {
		if _, ok := accounts[id]; !ok {
			p.add(setting, "names account %q, which no --account configures", id)
			return false
		}
		return true
	}
	const latency = "--fault-account-latency (PAYOUTD_SANDBOX_FAULT_ACCOUNT_LATENCY)"
	for _, spec := range nonEmpty(in.AccountLatency) {
		id, v, ok := strings.Cut(spec, "=")
		d, err := time.ParseDuration(v)
		if !ok || err != nil || d <= 0 {
			p.add(latency, "%q is not ACCOUNT=DURATION with a positive duration", spec)
			continue
		}
		if known(latency, id) {
			if f.AccountLatency == nil {
				f.AccountLatency = map[string]time.Duration{}
			}
			f.AccountLatency[id] = d
		}
	}
	const hang = "--fault-hang-account (PAYOUTD_SANDBOX_FAULT_HANG_ACCOUNTS)"
	for _, id := range nonEmpty(in.HangAccounts) {
		if known(hang, id) {
			if f.HangAccounts == nil {
				f.HangAccounts = map[string]bool{}
			}
			f.HangAccounts[id] = true
		}
	}
	const rate = "--fault-account-rate (PAYOUTD_SANDBOX_FAULT_ACCOUNT_RATE)"
	for _, spec := range nonEmpty(in.AccountRate) {
		id, v, ok := strings.Cut(spec, "=")
		n, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil || !(n > 0) || math.IsInf(n, 0) {
			p.add(rate, "%q is not ACCOUNT=N with N a positive number of calls per second", spec)
			continue
		}
		if known(rate, id) {
			if f.AccountRateLimit == nil {
				f.AccountRateLimit = map[string]float64{}
			}
			f.AccountRateLimit[id] = n
		}
	}
	f.RefusedAddresses = nonEmpty(in.RefusedAddresses)
}

func (s *sandboxCmd) validate(p *problems) {
	s.logFlags.validate(p)
	s.faultFlags.validate(p)
	checkAddr(p, "--listen (PAYOUTD_SANDBOX_LISTEN)", s.Listen)
	if s.IntrospectionToken != "" {
		s.inline = append(s.inline, "--introspection-token (PAYOUTD_SANDBOX_INTROSPECTION_TOKEN)")
	}
	if s.WebhookSecret != "" {
		s.inline = append(s.inline, "--webhook-secret (PAYOUTD_SANDBOX_WEBHOOK_SECRET)")
	}
	s.IntrospectionToken = secretFrom(p, "--introspection-token", "--introspection-token-file (PAYOUTD_SANDBOX_INTROSPECTION_TOKEN_FILE)",
		s.IntrospectionToken, s.IntrospectionTokenFile)
	if !isLoopback(s.Listen) && s.IntrospectionToken == "" {
		p.add("--listen (PAYOUTD_SANDBOX_LISTEN)", "%q is reachable beyond this host: set --introspection-token (PAYOUTD_SANDBOX_INTROSPECTION_TOKEN) so /sandbox/ (balances, confirm, cancel) is not open to anyone, or listen on loopback", s.Listen)
	}
	if s.TimeScale <= 0 {
		p.add("--time-scale (PAYOUTD_SANDBOX_TIME_SCALE)", "must be positive, got %v", s.TimeScale)
	}
	positive(p, "--step-delay (PAYOUTD_SANDBOX_STEP_DELAY)", s.StepDelay)
	s.cfg = sandbox.Config{Accounts: map[string]sandbox.Account{}, Tariff: map[string]sandbox.Fee{},
		TimeScale: s.TimeScale, StepDelay: s.StepDelay, Verification: s.Verification, Faults: s.faultFlags.faults()}
	for _, spec := range nonEmpty(s.Accounts) {
		id, acc, err := parseSandboxAccount(spec)
		if err != nil {
			p.add("--account (PAYOUTD_SANDBOX_ACCOUNTS)", "%v", err)
			continue
		}
		s.cfg.Accounts[id] = acc
	}
	for _, f := range s.Fees {
		cur, amt, ok := strings.Cut(f, "=")
		a, err := calypso.ParseAmount(amt)
		if !ok || err != nil || a.Sign() < 0 {
			p.add("--fee (PAYOUTD_SANDBOX_FEES)", "%q is not CUR=AMOUNT", f)
			continue
		}
		s.cfg.Tariff[cur] = sandbox.Fee{Fixed: a}
	}
	s.inconsistencyFlags.apply(p, &s.cfg.Faults, s.cfg.Accounts)
	secret := secretFrom(p, "--webhook-secret", "--webhook-secret-file (PAYOUTD_SANDBOX_WEBHOOK_SECRET_FILE)", s.WebhookSecret, s.WebhookSecretFile)
	if s.WebhookURL != "" && (s.WebhookKey == "" || secret == "") {
		p.add("--webhook-url (PAYOUTD_SANDBOX_WEBHOOK_URL)", "needs --webhook-key and --webhook-secret (or --webhook-secret-file)")
	}
	s.cfg.Webhook = sandbox.WebhookConfig{URL: s.WebhookURL, PublicKey: s.WebhookKey, Secret: secret, RequestID: "payoutd-sandbox"}
}

// parseSandboxAccount reads id=…,key=…,secret=…[,balance=CUR:AMOUNT]….
func parseSandboxAccount(spec string) (string, sandbox.Account, error) {
	var rest []string
	balances := map[string]calypso.Amount{}
	for _, part := range strings.Split(spec, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(part), "balance="); ok {
			cur, amt, ok := strings.Cut(v, ":")
			a, err := calypso.ParseAmount(amt)
			if !ok || err != nil {
				return "", sandbox.Account{}, fmt.Errorf("balance %q is not CUR:AMOUNT", v)
			}
			balances[cur] = a
			continue
		}
		rest = append(rest, part)
	}
	a, err := parseAccount(strings.Join(rest, ","))
	if err != nil {
		return "", sandbox.Account{}, err
	}
	return a.ID, sandbox.Account{Name: a.ID, APIKey: a.Key, APISecret: a.Secret, Balances: balances}, nil
}

func (s *sandboxCmd) run(ctx context.Context, out io.Writer) error {
	log := s.logFlags.logger()
	s.cfg.Logger = log.With("component", "sandbox")
	for _, setting := range s.inline {
		log.Warn("a secret is given inline; prefer its file setting (an inline secret shows in the process list, shell history and container specs)",
			"setting", setting)
	}
	sb := sandbox.New(s.cfg)
	ln, err := net.Listen("tcp", s.Listen)
	if err != nil {
		sb.Close()
		return fmt.Errorf("sandbox listen %s: %w", s.Listen, err)
	}
	log.Info("Calypso sandbox serving", "url", "http://"+ln.Addr().String(), "accounts", len(s.cfg.Accounts),
		"webhooks", s.WebhookURL, "time_scale", s.TimeScale)
	return serveSandbox(ctx, sb, ln, s.IntrospectionToken, log)
}

// serveSandbox serves sb on ln until ctx ends, then stops both. With a
// token, the /sandbox/ introspection endpoints require it as a bearer
// token; /healthz answers without one (container health checks).
func serveSandbox(ctx context.Context, sb *sandbox.Sandbox, ln net.Listener, token calypso.Secret, log *slog.Logger) error {
	srv := sandboxServer(sb, token, log)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		sb.Close()
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	sb.Close()
	log.Info("sandbox stopped")
	return err
}

// sandboxServer is the sandbox's HTTP server, with every timeout set.
func sandboxServer(sb http.Handler, token calypso.Secret, log *slog.Logger) *http.Server {
	return &http.Server{Handler: guardIntrospection(sb, token), ReadHeaderTimeout: 10 * time.Second,
		// Room for the slow and hanging responses the fault injection makes.
		ReadTimeout: 30 * time.Second, WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
}

// guardIntrospection puts the sandbox's /sandbox/ endpoints behind token
// (none: open, for loopback) and answers GET /healthz.
func guardIntrospection(next http.Handler, token calypso.Secret) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && r.Method == http.MethodGet {
			_, _ = io.WriteString(w, "ok\n")
			return
		}
		if token != "" && strings.HasPrefix(r.URL.Path, "/sandbox/") {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token.Reveal())) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="sandbox"`)
				http.Error(w, "introspection needs the sandbox's bearer token", http.StatusUnauthorized)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// isLoopback reports whether a listen address is reachable only from this
// host ("127.0.0.1:8081", "[::1]:0", "localhost:8081"; not ":8081").
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	return isLoopbackHost(host)
}

// isLoopbackHost reports whether a host name or address is this host's
// loopback.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// webhookURL is the ingress endpoint on addr, for the sandbox to call.
func webhookURL(addr net.Addr) string { return "http://" + addr.String() + pipeline.WebhookPath }
