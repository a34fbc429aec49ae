package pipeline_test

import (
	"net/http/httptest"
	"testing"

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

	w := &calypsoWorld{sb: sb, url: srv.URL, accounts: pipeline.Accounts{}}
	for _, a := range accounts {
		cl, err := calypso.NewClient(calypso.Config{
			BaseURL: srv.URL, Account: a, APIKey: "key-" + a, APISecret: calypso.Secret("secret-" + a),
			RateLimit: -1, Retry: calypso.RetryPolicy{BaseDelay: 5e6, MaxDelay: 50e6}, // 5ms..50ms
		})
		if err != nil {
			t.Fatal(err)
		}
		w.accounts[a] = cl
	}
	return w
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
