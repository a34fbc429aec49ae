package pipeline

import (
	"strings"
	"testing"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
)

// After a 016, the payout found under the batch's idempotency key counts as
// the batch only if it is the batch: anything else must not become a
// PayoutSubmitted (invariants 1 and 3).
func TestFoundPayoutMustMatchItsBatch(t *testing.T) {
	b := events.BatchPlanned{BatchID: "b-1", Currency: "BTC", Total: events.MustAmount("0.30"),
		Items: []events.BatchItem{{Amount: events.MustAmount("0.1")}, {Amount: events.MustAmount("0.2")}}}
	same := calypso.MassPayout{ID: "p", Currency: "BTC", TotalWithdrawalAmount: calypso.MustParseAmount("0.3"), ExternalID: "b-1"}
	for name, tc := range map[string]struct {
		edit func(*calypso.MassPayout)
		want string
	}{
		"same batch":          {func(*calypso.MassPayout) {}, ""},
		"no external id":      {func(p *calypso.MassPayout) { p.ExternalID = "" }, ""},
		"other currency":      {func(p *calypso.MassPayout) { p.Currency = "ETH" }, "in ETH"},
		"other total":         {func(p *calypso.MassPayout) { p.TotalWithdrawalAmount = calypso.MustParseAmount("0.3000001") }, "totals"},
		"another external id": {func(p *calypso.MassPayout) { p.ExternalID = "b-2" }, "external id"},
	} {
		t.Run(name, func(t *testing.T) {
			p := same
			tc.edit(&p)
			err := matches(&p, b)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("matches: %v, want %q", err, tc.want)
			}
		})
	}
}
