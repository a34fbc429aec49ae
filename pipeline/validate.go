package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/money"
	"github.com/payoutd/payoutd/schemas"
)

// intentRules decides whether a request can be paid.
type intentRules struct {
	schemas        *schemas.Set
	currencies     map[string]calypso.CurrencyRule
	accounts       map[string]bool // empty: any account
	maxRecordBytes int
	// executionHorizon is how far ahead an executionDate may be.
	executionHorizon time.Duration
}

var requestSchema = events.SchemaName(events.TypePayoutRequested)

// check validates r as a PayoutRequested: size, raw bytes, schema, key,
// text, currency, amount, execution date, account. Duplicates and
// partitions are the batcher's business, not this one's.
//
// check is the validation boundary: a panic in it or in a library it calls
// becomes a rejection of this one record (reason unprocessable), never the
// end of the process. A record that kills the process is never committed,
// so every restart would die on it again.
func (v *intentRules) check(r *kgo.Record, now time.Time) (in events.PayoutRequested, rej *Rejection) {
	key := string(r.Key)
	return v.checkValue(r.Value, &key, len(r.Key), now)
}

// checkValue is check on a record's value; key, if not nil, must be the
// intent id, and keyLen counts toward the record's size.
func (v *intentRules) checkValue(value []byte, key *string, keyLen int, now time.Time) (in events.PayoutRequested, rej *Rejection) {
	defer func() {
		if p := recover(); p != nil {
			in, rej = events.PayoutRequested{}, &Rejection{ReasonUnprocessable,
				money.Truncate(fmt.Sprintf("validating the request panicked: %v", p), 512)}
		}
	}()
	if size := keyLen + len(value); size > v.maxRecordBytes {
		return in, &Rejection{ReasonOversized, fmt.Sprintf("record is %d bytes, the limit is %d", size, v.maxRecordBytes)}
	}
	if rej := scanRequest(value); rej != nil {
		return in, rej
	}
	in, plain := fastRequest(value)
	if !plain {
		// The schema validator decides, and names what is wrong.
		if err := v.schemas.Validate(requestSchema, value); err != nil {
			if errors.Is(err, schemas.ErrNotJSON) {
				return in, &Rejection{ReasonMalformed, err.Error()}
			}
			return in, &Rejection{ReasonSchema, err.Error()}
		}
		if err := json.Unmarshal(value, &in); err != nil {
			if errors.Is(err, money.ErrOutOfBounds) {
				return in, &Rejection{ReasonAmount, err.Error()}
			}
			return in, &Rejection{ReasonSchema, err.Error()}
		}
	}
	if key != nil && *key != in.IntentID {
		// Dedup needs every record of an intent in one partition, which the
		// intent id as key guarantees.
		return in, &Rejection{ReasonKeyMismatch, fmt.Sprintf("record key %q is not the intent id %q",
			money.Truncate(*key, 256), in.IntentID)}
	}
	for _, f := range [...]struct{ name, value string }{{"intentId", in.IntentID}, {"account", in.Account}, {"address", in.Address}} {
		if rej := checkIdentifier(f.name, f.value); rej != nil {
			return in, rej
		}
	}
	if rej := checkComment("comment", in.Comment); rej != nil {
		return in, rej
	}
	rule, ok := v.currencies[in.Currency]
	if !ok {
		return in, &Rejection{ReasonUnknownCurrency, fmt.Sprintf("currency %q is not configured", in.Currency)}
	}
	if !in.Amount.IsPositive() {
		return in, &Rejection{ReasonSchema, fmt.Sprintf("/amount: %s is not positive", in.Amount)}
	}
	if err := rule.AmountRule().Check(in.Amount.Decimal()); err != nil {
		if errors.Is(err, money.ErrPrecision) {
			return in, &Rejection{ReasonPrecision, fmt.Sprintf("amount %s has more than the %d decimals of %s", in.Amount, rule.Decimals, in.Currency)}
		}
		return in, &Rejection{ReasonAmount, fmt.Sprintf("amount of %s: %v", in.Currency, err)}
	}
	if d := in.ExecutionDate; d != nil {
		if latest := addSaturating(now, v.executionHorizon); d.After(latest) {
			return in, &Rejection{ReasonExecutionDate, fmt.Sprintf("executionDate %s is more than %s ahead (after %s): beyond the execution horizon",
				d.UTC().Format(time.RFC3339), v.executionHorizon, latest.UTC().Format(time.RFC3339))}
		}
		if d.Year() < 1970 {
			return in, &Rejection{ReasonExecutionDate, fmt.Sprintf("executionDate %s is before 1970", d.UTC().Format(time.RFC3339))}
		}
	}
	if len(v.accounts) > 0 && !v.accounts[in.Account] {
		return in, &Rejection{ReasonUnknownAccount, fmt.Sprintf("account %q is not configured", in.Account)}
	}
	return in, nil
}

// addSaturating is t+d, held at the far ends of time instead of wrapping.
func addSaturating(t time.Time, d time.Duration) time.Time {
	const maxYear = 9999
	if d > 0 && t.Year() >= maxYear {
		return t
	}
	u := t.Add(d)
	if (d > 0 && u.Before(t)) || (d < 0 && u.After(t)) {
		return t
	}
	return u
}

// RequestChecker checks payout requests by the batcher's own rules, for a
// tool that validates before it sends (payoutd produce): what it refuses is
// what the batcher would send to the DLQ, with the same reason and words.
// Accounts are not checked: the batcher's list is its own configuration.
type RequestChecker struct{ rules intentRules }

// NewRequestChecker returns a checker for the given currencies (nil: the
// defaults), record size limit (0: the batcher's default) and execution
// horizon (0: DefaultExecutionHorizon).
func NewRequestChecker(currencies map[string]calypso.CurrencyRule, maxRecordBytes int, executionHorizon time.Duration) (*RequestChecker, error) {
	set, err := schemas.Load()
	if err != nil {
		return nil, err
	}
	if currencies == nil {
		currencies = calypso.DefaultCurrencies()
	}
	if maxRecordBytes <= 0 {
		maxRecordBytes = DefaultMaxRecordBytes
	}
	if executionHorizon <= 0 {
		executionHorizon = DefaultExecutionHorizon
	}
	return &RequestChecker{intentRules{schemas: set, currencies: currencies, maxRecordBytes: maxRecordBytes, executionHorizon: executionHorizon}}, nil
}

// Check validates one request value, to be sent keyed by its intent id.
func (c *RequestChecker) Check(value []byte, now time.Time) (events.PayoutRequested, *Rejection) {
	return c.rules.checkValue(value, nil, 0, now)
}
