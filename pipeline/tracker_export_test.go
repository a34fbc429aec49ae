package pipeline

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
)

// TrackerStoreEntry encodes an open payout of items recipients as the
// tracker's changelog holds it, for benchmarks that fill the changelog.
func TrackerStoreEntry(payoutID, batchID, account string, items int, heard time.Time) []byte {
	e := storedPayout{V: storeVersion, Kind: entryPayout, PayoutID: payoutID, BatchID: batchID, Account: account, Currency: "USDT_TRX",
		Submitted: true, State: calypso.StateInProgress, FirstHeard: heard, Heard: heard, PollEvery: time.Hour}
	for i := range items {
		e.Items = append(e.Items, events.BatchItem{IntentID: fmt.Sprintf("%s-%d", payoutID, i), Address: fmt.Sprintf("T%s%d", payoutID, i),
			Amount: events.MustAmount("1.5"), Source: events.Offset{Topic: "payouts.requests", Offset: int64(i)}})
	}
	b, _ := json.Marshal(e)
	return b
}
