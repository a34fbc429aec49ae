package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/schemas"
)

// intentRules decides whether a request can be paid.
type intentRules struct {
	schemas        *schemas.Set
	currencies     map[string]calypso.CurrencyRule
	accounts       map[string]bool // empty: any account
	maxRecordBytes int
}

var requestSchema = events.SchemaName(events.TypePayoutRequested)

// check validates r as a PayoutRequested: size, schema, key, currency,
// decimals, account. Duplicates are the window's business, not this one's.
func (v *intentRules) check(r *kgo.Record) (events.PayoutRequested, *Rejection) {
	var in events.PayoutRequested
	if size := len(r.Key) + len(r.Value); size > v.maxRecordBytes {
		return in, &Rejection{ReasonOversized, fmt.Sprintf("record is %d bytes, the limit is %d", size, v.maxRecordBytes)}
	}
	in, plain := fastRequest(r.Value)
	if !plain {
		// The schema validator decides, and names what is wrong.
		if err := v.schemas.Validate(requestSchema, r.Value); err != nil {
			if errors.Is(err, schemas.ErrNotJSON) {
				return in, &Rejection{ReasonMalformed, err.Error()}
			}
			return in, &Rejection{ReasonSchema, err.Error()}
		}
		if err := json.Unmarshal(r.Value, &in); err != nil {
			return in, &Rejection{ReasonSchema, err.Error()}
		}
	}
	if string(r.Key) != in.IntentID {
		// Dedup needs every record of an intent in one partition, which the
		// intent id as key guarantees.
		return in, &Rejection{ReasonKeyMismatch, fmt.Sprintf("record key %q is not the intent id %q", r.Key, in.IntentID)}
	}
	rule, ok := v.currencies[in.Currency]
	if !ok {
		return in, &Rejection{ReasonUnknownCurrency, fmt.Sprintf("currency %q is not configured", in.Currency)}
	}
	if !in.Amount.IsPositive() {
		return in, &Rejection{ReasonSchema, fmt.Sprintf("/amount: %s is not positive", in.Amount)}
	}
	if !in.Amount.FitsDecimals(rule.Decimals) {
		return in, &Rejection{ReasonPrecision, fmt.Sprintf("amount %s has more than the %d decimals of %s", in.Amount, rule.Decimals, in.Currency)}
	}
	if len(v.accounts) > 0 && !v.accounts[in.Account] {
		return in, &Rejection{ReasonUnknownAccount, fmt.Sprintf("account %q is not configured", in.Account)}
	}
	return in, nil
}
