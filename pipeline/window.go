package pipeline

import (
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/money"
)

// groupKey is what one mass payout shares: account, currency, execution date.
type groupKey struct {
	account, currency string
	// The execution date as unix seconds and nanoseconds (never one int64
	// of nanoseconds: that overflows after 2262 and 2300 became 1715).
	hasExecution bool
	execSec      int64
	execNsec     int32
}

type pendingIntent struct {
	intent      events.PayoutRequested
	source      events.Offset
	traceparent string
}

// window is a tumbling window of requests: everything consumed since it
// opened, which one transaction will turn into batches, intent states and
// DLQ records together with the consumed offsets.
type window struct {
	opened  time.Time
	groups  map[groupKey][]pendingIntent
	order   []groupKey // first-seen order, so plans are reproducible
	dlq     []*kgo.Record
	reasons []Reason         // of each dlq record
	ids     map[string]int32 // intent ids in this window, and their partitions
	records int
	bytes   int
	full    bool // a group reached its item limit
}

func newWindow() *window {
	return &window{groups: make(map[groupKey][]pendingIntent), ids: make(map[string]int32)}
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

func (w *window) reject(r *kgo.Record, reason Reason) {
	w.dlq = append(w.dlq, r)
	w.reasons = append(w.reasons, reason)
}

func (w *window) add(in events.PayoutRequested, src events.Offset, traceparent string, maxItems int) {
	k := groupKey{account: in.Account, currency: in.Currency}
	if d := in.ExecutionDate; d != nil {
		k.hasExecution, k.execSec, k.execNsec = true, d.Unix(), int32(d.Nanosecond())
	}
	if _, ok := w.groups[k]; !ok {
		w.order = append(w.order, k)
	}
	w.groups[k] = append(w.groups[k], pendingIntent{in, src, traceparent})
	w.ids[in.IntentID] = src.Partition
	if len(w.groups[k]) >= maxItems {
		w.full = true
	}
}

// plan turns the window's intents into batches: per group, chunks of at most
// the currency's item limit and of at most maxBytes encoded, never two items
// with one address in a chunk (first fit, so an address repeated n times
// spreads over n batches). A batch larger than Kafka takes would abort the
// window again and again.
func (w *window) plan(currencies map[string]calypso.CurrencyRule, maxBytes int, now time.Time) []events.BatchPlanned {
	var out []events.BatchPlanned
	for _, k := range w.order {
		limit := maxItems(currencies, k.currency)
		type chunk struct {
			items []events.BatchItem
			addrs map[string]bool
			bytes int
		}
		base := batchOverhead(k.account, k.currency)
		var chunks []*chunk
		for _, p := range w.groups[k] {
			it := events.BatchItem{
				IntentID: p.intent.IntentID, Address: p.intent.Address, Amount: p.intent.Amount,
				Comment: p.intent.Comment, Source: p.source, Traceparent: p.traceparent,
			}
			size := itemSize(it)
			var c *chunk
			for _, cand := range chunks {
				if len(cand.items) < limit && !cand.addrs[it.Address] && (len(cand.items) == 0 || cand.bytes+size <= maxBytes) {
					c = cand
					break
				}
			}
			if c == nil {
				c = &chunk{addrs: make(map[string]bool), bytes: base}
				chunks = append(chunks, c)
			}
			c.addrs[it.Address] = true
			c.items = append(c.items, it)
			c.bytes += size
		}
		for _, c := range chunks {
			b := events.BatchPlanned{
				Account: k.account, Currency: k.currency, Items: c.items, PlannedAt: now,
			}
			if k.hasExecution {
				t := time.Unix(k.execSec, int64(k.execNsec)).UTC()
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

// batchOverhead bounds the encoded size of a BatchPlanned without its items,
// with its record's key and CloudEvents headers.
func batchOverhead(account, currency string) int {
	const fixed = 1024 // ids, times, field names, headers: about 600 bytes
	return fixed + jsonLen(account) + jsonLen(currency) + 2*(money.MaxText+8)
}

// maxAmountJSON bounds an amount's JSON: quotes, sign, point and money's
// digits. Planning counts it instead of printing every amount twice.
const maxAmountJSON = 4 + money.MaxIntegerDigits + money.MaxFractionDigits

// itemSize bounds the length of an item's JSON in a BatchPlanned, with its
// comma: exact but for the amount (FuzzRequestPath holds it to never
// under-count).
func itemSize(it events.BatchItem) int {
	n := len(`{"intentId":,"address":,"amount":,"source":{"topic":,"partition":,"offset":}},`) +
		jsonLen(it.IntentID) + jsonLen(it.Address) + maxAmountJSON + jsonLen(it.Source.Topic) +
		digits(int64(it.Source.Partition)) + digits(it.Source.Offset)
	if it.Comment != "" {
		n += len(`,"comment":`) + jsonLen(it.Comment)
	}
	if it.Traceparent != "" {
		n += len(`,"traceparent":`) + jsonLen(it.Traceparent)
	}
	return n
}

// digits is the length of n in decimal.
func digits(n int64) int {
	d := 1
	if n < 0 {
		d, n = 2, -n
	}
	for ; n >= 10; n /= 10 {
		d++
	}
	return d
}

// jsonLen is the length of s as a JSON string written by encoding/json:
// quotes, escapes, and its HTML-safe escaping of <, > and &.
func jsonLen(s string) int {
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || r == '\u2028' || r == '\u2029' {
			n += 6
		} else {
			n += size
		}
		i += size
	}
	return n
}
