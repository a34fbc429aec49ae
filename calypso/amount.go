package calypso

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/payoutd/payoutd/money"
)

// Amount is an exact decimal amount of money.
//
// It is written to JSON as a number built from its decimal text (Calypso's
// examples use numbers, never strings) and read from a JSON number or string,
// so digits are never lost to float64. The zero value is 0.
type Amount struct {
	d decimal.Decimal
}

// NewAmount wraps d.
func NewAmount(d decimal.Decimal) Amount { return Amount{d: d} }

// ParseAmount parses decimal text such as "12.5" or "1e-18", within the
// bounds of package money, the ones our events apply too: an input like
// 1e999999999 never expands into a billion digits when printed. Its errors
// wrap money.ErrNotDecimal or money.ErrOutOfBounds.
func ParseAmount(s string) (Amount, error) {
	d, err := money.Parse(s)
	if err != nil {
		return Amount{}, fmt.Errorf("calypso: invalid amount: %w", err)
	}
	return Amount{d: d}, nil
}

// MustParseAmount is ParseAmount for constants in tests and examples; it
// panics on bad input.
func MustParseAmount(s string) Amount {
	a, err := ParseAmount(s)
	if err != nil {
		panic(err)
	}
	return a
}

// Decimal returns the underlying decimal.
func (a Amount) Decimal() decimal.Decimal { return a.d }

// String returns the plain decimal text, without exponent.
func (a Amount) String() string { return a.d.String() }

// IsZero reports whether a == 0; it also lets `omitzero` drop zero amounts.
func (a Amount) IsZero() bool { return a.d.IsZero() }

// Sign returns -1, 0 or +1.
func (a Amount) Sign() int { return a.d.Sign() }

// Cmp compares a and b like decimal.Decimal.Cmp.
func (a Amount) Cmp(b Amount) int { return a.d.Cmp(b.d) }

// Equal reports whether a and b are numerically equal (1.50 == 1.5).
func (a Amount) Equal(b Amount) bool { return a.d.Equal(b.d) }

// Add returns a + b.
func (a Amount) Add(b Amount) Amount { return Amount{d: a.d.Add(b.d)} }

// Sub returns a - b.
func (a Amount) Sub(b Amount) Amount { return Amount{d: a.d.Sub(b.d)} }

// FitsDecimals reports whether a has at most places digits after the point
// (trailing zeros do not count).
func (a Amount) FitsDecimals(places int32) bool { return a.d.Equal(a.d.Truncate(places)) }

// MarshalJSON writes the decimal text as a JSON number.
func (a Amount) MarshalJSON() ([]byte, error) { return []byte(a.d.String()), nil }

// UnmarshalJSON accepts a JSON number or a string holding one; null leaves
// a unchanged.
func (a *Amount) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		var err error
		if s, err = strconv.Unquote(s); err != nil {
			return fmt.Errorf("calypso: invalid amount %s", truncate(string(b), 64))
		}
	}
	v, err := ParseAmount(s)
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// ID is a Calypso object id. Calypso sends ids as JSON strings in some places
// and as numbers in others (webhook parentExternalId), so ID accepts both and
// keeps the text. It is written back as a JSON string.
type ID string

// String returns the id text.
func (id ID) String() string { return string(id) }

// UnmarshalJSON accepts a JSON string or number; null gives "".
func (id *ID) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*id = ""
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("calypso: invalid id: %w", err)
		}
		*id = ID(s)
		return nil
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("calypso: invalid id %s", truncate(string(b), 64))
		}
		*id = ID(n.String())
		return nil
	}
}

// Time is a Calypso date-time. It reads every form Calypso has been seen to
// send: ISO-8601 with or without a zone (no zone means UTC), with 0 to 9
// fractional digits, and epoch milliseconds as a number. It writes
// ISO-8601 UTC with milliseconds and a Z, as Calypso's API responses do.
type Time struct {
	time.Time
}

// MarshalJSON writes "2006-01-02T15:04:05.000Z", or null for the zero time.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.Time.IsZero() {
		return []byte("null"), nil
	}
	return []byte(`"` + FormatTime(t.Time) + `"`), nil
}

// UnmarshalJSON accepts a string (see ParseTime), a number of epoch
// milliseconds, null or "".
func (t *Time) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		t.Time = time.Time{}
		return nil
	}
	if len(b) > 0 && b[0] != '"' {
		ms, err := strconv.ParseInt(string(b), 10, 64)
		if err != nil {
			return fmt.Errorf("calypso: invalid time %s", truncate(string(b), 64))
		}
		t.Time = time.UnixMilli(ms).UTC()
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("calypso: invalid time: %w", err)
	}
	if s == "" {
		t.Time = time.Time{}
		return nil
	}
	v, err := ParseTime(s)
	if err != nil {
		return err
	}
	t.Time = v
	return nil
}

// FormatTime writes t as Calypso expects in requests: UTC, milliseconds, Z.
func FormatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// ParseTime parses an ISO-8601 date-time leniently: "T" separator, 0–9
// fractional digits, and an optional "Z" or ±hh:mm / ±hhmm offset; no zone
// means UTC (Calypso's webhook times carry none). The result is in UTC.
func ParseTime(s string) (time.Time, error) {
	// Calypso's webhooks carry no zone, the last layout below; trying it
	// first spares two failed parses (and their errors) per webhook. The
	// result is the same: a value the zone-less layout takes ends after
	// the seconds and their fraction, where the other two need a zone.
	if len(s) >= 19 && !strings.ContainsAny(s[19:], "Z+-") {
		if t, err := time.Parse(timeLayoutNoZone, s); err == nil {
			return t.UTC(), nil
		}
	}
	// Go's parser accepts a fraction after the seconds even when the layout
	// has none, so these layouts cover 0–9 digits.
	for _, layout := range [...]string{
		"2006-01-02T15:04:05Z07:00",
		"2006-01-02T15:04:05Z0700",
		timeLayoutNoZone,
	} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("calypso: invalid time %q", truncate(s, 64))
}

const timeLayoutNoZone = "2006-01-02T15:04:05"

// truncate keeps error text bounded when echoing untrusted input.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
