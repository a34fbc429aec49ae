package pipeline

import (
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
)

// groupKey is what one mass payout shares: account, currency, execution date.
type groupKey struct {
	account, currency string
	execution         int64 // unix nanoseconds; 0 for "as soon as possible"
}

type pendingIntent struct {
	intent events.PayoutRequested
	source events.Offset
}

// window is a tumbling window of requests: everything consumed since it
// opened, which one transaction will turn into batches, intent states and
// DLQ records together with the consumed offsets.
type window struct {
	opened  time.Time
	groups  map[groupKey][]pendingIntent
	order   []groupKey // first-seen order, so plans are reproducible
	dlq     []*kgo.Record
	ids     map[string]bool // intent ids in this window
	records int
	bytes   int
	full    bool // a group reached its item limit
}

func newWindow() *window {
	return &window{groups: make(map[groupKey][]pendingIntent), ids: make(map[string]bool)}
}

func (w *window) empty() bool { return w.records == 0 }

// note counts a consumed record towards the window's bounds.
func (w *window) note(r *kgo.Record, now time.Time) {
	if w.records == 0 {
		w.opened = now
	}
	w.records++
	w.bytes += len(r.Key) + len(r.Value)
}

func (w *window) reject(r *kgo.Record) { w.dlq = append(w.dlq, r) }

func (w *window) add(in events.PayoutRequested, src events.Offset, maxItems int) {
	k := groupKey{account: in.Account, currency: in.Currency}
	if in.ExecutionDate != nil {
		k.execution = in.ExecutionDate.UnixNano()
	}
	if _, ok := w.groups[k]; !ok {
		w.order = append(w.order, k)
	}
	w.groups[k] = append(w.groups[k], pendingIntent{in, src})
	w.ids[in.IntentID] = true
	if len(w.groups[k]) >= maxItems {
		w.full = true
	}
}

// plan turns the window's intents into batches: per group, chunks of at most
// the currency's item limit, never two items with one address in a chunk
// (first fit, so an address repeated n times spreads over n batches).
func (w *window) plan(currencies map[string]calypso.CurrencyRule, now time.Time) []events.BatchPlanned {
	var out []events.BatchPlanned
	for _, k := range w.order {
		limit := maxItems(currencies, k.currency)
		type chunk struct {
			items []events.BatchItem
			addrs map[string]bool
		}
		var chunks []*chunk
		for _, p := range w.groups[k] {
			var c *chunk
			for _, cand := range chunks {
				if len(cand.items) < limit && !cand.addrs[p.intent.Address] {
					c = cand
					break
				}
			}
			if c == nil {
				c = &chunk{addrs: make(map[string]bool)}
				chunks = append(chunks, c)
			}
			c.addrs[p.intent.Address] = true
			c.items = append(c.items, events.BatchItem{
				IntentID: p.intent.IntentID, Address: p.intent.Address, Amount: p.intent.Amount,
				Comment: p.intent.Comment, Source: p.source,
			})
		}
		for _, c := range chunks {
			b := events.BatchPlanned{
				Account: k.account, Currency: k.currency, Items: c.items, PlannedAt: now,
			}
			if k.execution != 0 {
				t := time.Unix(0, k.execution).UTC()
				b.ExecutionDate = &t
			}
			b.Total = b.Sum()
			b.BatchID = batchID(b)
			b.IdempotencyKey = b.BatchID
			out = append(out, b)
		}
	}
	return out
}

func maxItems(currencies map[string]calypso.CurrencyRule, currency string) int {
	if n := currencies[currency].MaxItems; n > 0 {
		return n
	}
	return calypso.DefaultMaxItems
}

var batchNamespace = uuid.MustParse("b7c1f0a4-5e2d-4f6b-9a3c-1d8e7f6a5b4c")

// batchID derives the batch id (and so Calypso's idempotency key) from what
// the batch pays: account, currency, date and every item's intent id,
// address and amount. A window replanned after an abort gets the same ids;
// should the same intents ever be planned twice, Calypso answers 016 instead
// of paying twice; and an intent id re-sent with another amount or address
// makes another batch, never one that contradicts the payout under its key.
func batchID(b events.BatchPlanned) string {
	var s strings.Builder
	s.WriteString(b.Account + "\x00" + b.Currency + "\x00")
	if b.ExecutionDate != nil {
		s.WriteString(b.ExecutionDate.Format(time.RFC3339Nano))
	}
	for _, it := range b.Items {
		s.WriteString("\x00" + it.IntentID + "\x00" + it.Address + "\x00" + it.Amount.String())
	}
	return uuid.NewSHA1(batchNamespace, []byte(s.String())).String()
}
