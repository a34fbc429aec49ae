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

// Scenario 6: the batch id hashes the whole content, so an intent id re-sent
// with another amount or address is another batch (another idempotency key),
// never a batch that contradicts the payout Calypso holds under the old key.
func TestBatchIDHashesEveryItemsAddressAndAmount(t *testing.T) {
	base := events.BatchPlanned{Account: "acct", Currency: "ETH", Items: []events.BatchItem{
		{IntentID: "i-1", Address: "0xa", Amount: events.MustAmount("1.5")},
		{IntentID: "i-2", Address: "0xb", Amount: events.MustAmount("2")},
	}}
	id := batchID(base)
	for name, edit := range map[string]func(*events.BatchPlanned){
		"amount":  func(b *events.BatchPlanned) { b.Items[1].Amount = events.MustAmount("2.000000000000000001") },
		"address": func(b *events.BatchPlanned) { b.Items[0].Address = "0xc" },
		"intent":  func(b *events.BatchPlanned) { b.Items[0].IntentID = "i-3" },
	} {
		t.Run(name, func(t *testing.T) {
			b := base
			b.Items = append([]events.BatchItem(nil), base.Items...)
			edit(&b)
			if batchID(b) == id {
				t.Fatalf("batch id unchanged after changing the %s", name)
			}
		})
	}
	same := base
	same.Items = append([]events.BatchItem(nil), base.Items...)
	same.Items[0].Amount = events.MustAmount("1.50")
	if batchID(same) != id {
		t.Fatal("an equal amount written with a trailing zero changed the batch id")
	}
}
