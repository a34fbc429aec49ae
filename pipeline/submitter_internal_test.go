package pipeline

import (
	"strings"
	"testing"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
)

// After a 016, the payout found under the batch's idempotency key counts as
// the batch only if it is the batch: anything else must not become a
// PayoutSubmitted (invariants 1 and 3). Scenario 6: totals Calypso reports
// rounded through float64, with fees included, or as 0 while the payout is
// being created are the batch (or read again), not a contradiction.
func TestFoundPayoutMustMatchItsBatch(t *testing.T) {
	b := events.BatchPlanned{BatchID: "b-1", Currency: "ETH", Total: events.MustAmount("0.123456789012345678"),
		Items: []events.BatchItem{{Amount: events.MustAmount("0.1")}, {Amount: events.MustAmount("0.023456789012345678")}}}
	same := calypso.MassPayout{ID: "p", Currency: "ETH", State: calypso.StateInProgress,
		TotalWithdrawalAmount: calypso.MustParseAmount("0.123456789012345678"), ExternalID: "b-1"}
	for name, tc := range map[string]struct {
		edit func(*calypso.MassPayout)
		want verdict
		why  string
	}{
		"same batch":          {func(*calypso.MassPayout) {}, verdictSame, ""},
		"no external id":      {func(p *calypso.MassPayout) { p.ExternalID = "" }, verdictSame, ""},
		"float-rounded total": {func(p *calypso.MassPayout) { p.TotalWithdrawalAmount = calypso.MustParseAmount("0.12345678901234568") }, verdictSame, ""},
		"fee-inclusive total": {func(p *calypso.MassPayout) {
			p.TotalWithdrawalAmount = calypso.MustParseAmount("0.133456789012345678")
			p.TotalFee = calypso.MustParseAmount("0.01")
		}, verdictSame, ""},
		"zero while creating": {func(p *calypso.MassPayout) {
			p.State = calypso.StateCreationInProgress
			p.TotalWithdrawalAmount = calypso.Amount{}
		}, verdictCreating, ""},
		"other currency":      {func(p *calypso.MassPayout) { p.Currency = "BTC" }, verdictContradicts, "in BTC"},
		"other total":         {func(p *calypso.MassPayout) { p.TotalWithdrawalAmount = calypso.MustParseAmount("0.1235") }, verdictContradicts, "totals"},
		"another external id": {func(p *calypso.MassPayout) { p.ExternalID = "b-2" }, verdictContradicts, "external id"},
	} {
		t.Run(name, func(t *testing.T) {
			p := same
			tc.edit(&p)
			v, why := judge(&p, b)
			if v != tc.want || !strings.Contains(why, tc.why) {
				t.Fatalf("judge: %v %q, want %v %q", v, why, tc.want, tc.why)
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

// Scenario 11: a refusal names one row by its address or by its index in
// the request; anything less certain names none (the whole batch is refused).
func TestNamedRowOfARefusal(t *testing.T) {
	b := events.BatchPlanned{Items: []events.BatchItem{{Address: "Ta"}, {Address: "Tab"}, {Address: "Tc"}}}
	for _, tc := range []struct {
		msg  string
		want int
		ok   bool
	}{
		{"massAddresses[2].depositAddress: invalid address Tc", 2, true},
		{"invalid address Tc", 2, true},
		{"massAddresses[1].amount has more than 6 decimals", 1, true},
		{"invalid address Tab", 0, false}, // "Ta" is in it too: not certain
		{"massAddresses[1].depositAddress: invalid address Tab", 1, true},
		{"massAddresses[2].depositAddress: invalid address Tab", 0, false},
		{"massAddresses[0] and massAddresses[2] are invalid", 0, false},
		{"massAddresses[7].depositAddress is required", 0, false},
		{"too many withdrawals: 3, the TRX limit is 2", 0, false},
	} {
		i, ok := namedRow(b, tc.msg)
		if ok != tc.ok || ok && i != tc.want {
			t.Errorf("namedRow(%q) = %d, %v; want %d, %v", tc.msg, i, ok, tc.want, tc.ok)
		}
	}
}
