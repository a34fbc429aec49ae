package pipeline_test

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/calypso/sandbox"
	"github.com/payoutd/payoutd/pipeline"
)

// calypsoWorld is a sandbox Calypso and one client per account on it.
type calypsoWorld struct {
	sb       *sandbox.Sandbox
	url      string
	accounts pipeline.Accounts
}

// newCalypso starts a sandbox whose accounts hold balance of every currency
// in currencies, and returns clients for them. mod adjusts the sandbox config.
func newCalypso(t testing.TB, accounts []string, currencies []string, balance string, mod func(*sandbox.Config)) *calypsoWorld {
	t.Helper()
	cfg := sandbox.Config{Accounts: map[string]sandbox.Account{}, TimeScale: 0.001}
	for _, a := range accounts {
		bal := map[string]calypso.Amount{}
		for _, c := range currencies {
			bal[c] = calypso.MustParseAmount(balance)
		}
		cfg.Accounts[a] = sandbox.Account{APIKey: "key-" + a, APISecret: calypso.Secret("secret-" + a), Balances: bal}
	}
	if mod != nil {
		mod(&cfg)
	}
	sb := sandbox.New(cfg)
	srv := httptest.NewServer(sb)
	t.Cleanup(func() { srv.Close(); sb.Close() })

	w := &calypsoWorld{sb: sb, url: srv.URL}
	w.connect(t, accounts, 0)
	return w
}

// connect makes a client per account; timeout bounds each attempt (0: the default).
func (w *calypsoWorld) connect(t testing.TB, accounts []string, timeout time.Duration) {
	t.Helper()
	w.accounts = pipeline.Accounts{}
	for _, a := range accounts {
		cl, err := calypso.NewClient(calypso.Config{
			BaseURL: w.url, Account: a, APIKey: "key-" + a, APISecret: calypso.Secret("secret-" + a), Timeout: timeout,
			RateLimit: -1, Retry: calypso.RetryPolicy{BaseDelay: 5 * time.Millisecond, MaxDelay: 50 * time.Millisecond},
		})
		if err != nil {
			t.Fatal(err)
		}
		w.accounts[a] = cl
	}
}

// payoutsByIntent maps every intent id the sandbox was asked to pay (row
// comment = intent id) to the ids of the payouts it is in.
func (w *calypsoWorld) payoutsByIntent() map[string][]string {
	out := map[string][]string{}
	for _, p := range w.sb.Payouts() {
		for _, it := range p.Items {
			out[it.Comment] = append(out[it.Comment], p.ID)
		}
	}
	return out
}
