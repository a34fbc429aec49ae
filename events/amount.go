package events

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/shopspring/decimal"

	"github.com/payoutd/payoutd/money"
)

// Amount is an exact decimal amount of a currency.
//
// In our events it is a JSON string ("12.50" stays exactly 12.5); from
// upstream it is also accepted as a JSON number, read from its text, so
// 0.1000000000000000055511 is not rounded through a float64. The zero value
// is 0.
type Amount struct{ d decimal.Decimal }

// ParseAmount reads a plain decimal such as "12.5", "-3" or "1e-8", within
// the bounds of package money (the ones package calypso applies too). Its
// errors wrap money.ErrNotDecimal or money.ErrOutOfBounds.
func ParseAmount(s string) (Amount, error) {
	d, err := money.Parse(s)
	if err != nil {
		return Amount{}, fmt.Errorf("amount %q: %w", money.Truncate(s, 64), err)
	}
	return Amount{d}, nil
}

// MustAmount is ParseAmount for constants in code and tests; it panics on bad input.
func MustAmount(s string) Amount {
	a, err := ParseAmount(s)
	if err != nil {
		panic(err)
	}
	return a
}

// AmountOf wraps a decimal.
func AmountOf(d decimal.Decimal) Amount { return Amount{d} }

// Decimal returns the amount as a decimal.Decimal for arithmetic.
func (a Amount) Decimal() decimal.Decimal { return a.d }

// String returns the exact decimal text, without exponent or trailing zeros.
func (a Amount) String() string { return a.d.String() }

// Add returns a + b, exactly.
func (a Amount) Add(b Amount) Amount { return Amount{a.d.Add(b.d)} }

// Sub returns a - b, exactly.
func (a Amount) Sub(b Amount) Amount { return Amount{a.d.Sub(b.d)} }

// Cmp compares a and b: -1, 0 or +1.
func (a Amount) Cmp(b Amount) int { return a.d.Cmp(b.d) }

// Equal reports whether a and b are the same number (12.5 equals 12.50).
func (a Amount) Equal(b Amount) bool { return a.d.Equal(b.d) }

// IsPositive reports whether a > 0.
func (a Amount) IsPositive() bool { return a.d.IsPositive() }

// FitsDecimals reports whether a needs at most places digits after the point.
func (a Amount) FitsDecimals(places int32) bool { return a.d.Equal(a.d.Truncate(places)) }

// MarshalJSON writes the amount as a JSON string.
func (a Amount) MarshalJSON() ([]byte, error) {
	return []byte(`"` + a.d.String() + `"`), nil
}

// UnmarshalJSON reads a JSON string or number, from its text.
func (a *Amount) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		return errors.New("amount is null")
	}
	if len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"' {
		b = b[1 : len(b)-1]
	}
	v, err := ParseAmount(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}
