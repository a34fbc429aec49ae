// Package money is the one rule for the exact decimal amounts payoutd reads,
// shared by our events (package events) and Calypso's API (package calypso),
// which must not import each other: how amount text is parsed, the bounds
// every amount meets, and the per-currency check (decimals, an optional
// maximum).
//
// The bounds are far beyond any real payment but small enough that no input
// expands into thousands of digits when printed, summed or sent: an
// upstream's 1e10000 once became a 10,001-digit batch total that Calypso
// refused, failing every valid intent beside it.
package money

import (
	"errors"
	"fmt"

	"github.com/shopspring/decimal"
)

// Bounds of every amount, whatever its currency.
const (
	// MaxText is the longest amount text accepted, in bytes.
	MaxText = 100
	// MaxExponent bounds the exponent written in the text ("1e64"), checked
	// before anything expands it.
	MaxExponent = 64
	// MaxIntegerDigits is the most digits before the decimal point: 10^30
	// units of any currency is more than exists.
	MaxIntegerDigits = 30
	// MaxFractionDigits is the most digits after the point that can matter;
	// a currency allows at most its own decimals (18 at most today).
	MaxFractionDigits = 40
)

// ErrNotDecimal is wrapped by errors for text that is no decimal number.
var ErrNotDecimal = errors.New("not a decimal number")

// ErrOutOfBounds is wrapped by errors for an amount beyond the bounds.
var ErrOutOfBounds = errors.New("amount out of bounds")

// Parse reads decimal text such as "12.5", "-3" or "1e-8" within the bounds.
// Error texts quote at most 64 bytes of the input.
func Parse(s string) (decimal.Decimal, error) {
	if len(s) > MaxText {
		return decimal.Decimal{}, fmt.Errorf("%w: %d characters, the most is %d", ErrOutOfBounds, len(s), MaxText)
	}
	if err := CheckNumberText([]byte(s)); err != nil {
		return decimal.Decimal{}, err
	}
	d, err := decimal.NewFromString(s)
	if err != nil {
		return decimal.Decimal{}, fmt.Errorf("%w: %q", ErrNotDecimal, Truncate(s, 64))
	}
	if err := CheckDigits(d); err != nil {
		return decimal.Decimal{}, err
	}
	return d, nil
}

// CheckNumberText checks the length and written exponent of a number token
// without parsing it, so that a caller can refuse "1e10000001" before a
// library (a JSON Schema validator, big.Rat) tries to expand it.
func CheckNumberText(tok []byte) error {
	if len(tok) > MaxText {
		return fmt.Errorf("%w: a number of %d characters, the most is %d", ErrOutOfBounds, len(tok), MaxText)
	}
	for i, c := range tok {
		if c != 'e' && c != 'E' {
			continue
		}
		exp := tok[i+1:]
		if len(exp) > 0 && (exp[0] == '+' || exp[0] == '-') {
			exp = exp[1:]
		}
		n := 0
		for _, d := range exp {
			if d < '0' || d > '9' {
				return nil // not a number; the parser says so
			}
			n = n*10 + int(d-'0')
			if n > MaxExponent {
				return fmt.Errorf("%w: %q has an exponent beyond ±%d", ErrOutOfBounds, Truncate(string(tok), 64), MaxExponent)
			}
		}
		return nil
	}
	return nil
}

// CheckDigits checks d against the digit bounds.
func CheckDigits(d decimal.Decimal) error {
	if d.IsZero() {
		return nil
	}
	exp := int64(d.Exponent())
	if ints := int64(d.NumDigits()) + exp; ints > MaxIntegerDigits {
		return fmt.Errorf("%w: %d digits before the point, the most is %d", ErrOutOfBounds, ints, MaxIntegerDigits)
	}
	if -exp > MaxFractionDigits {
		// Trailing zeros do not count: 1.5000 has one decimal.
		if t := d.Truncate(MaxFractionDigits); !t.Equal(d) {
			return fmt.Errorf("%w: more than %d digits after the point", ErrOutOfBounds, MaxFractionDigits)
		}
	}
	return nil
}

// Rule is what one currency allows.
type Rule struct {
	// Decimals is the most digits after the point.
	Decimals int32
	// Max, when positive, is the largest amount of one payment.
	Max decimal.Decimal
}

// ErrPrecision is wrapped by Check's error for more decimals than the
// currency has; ErrAboveMax for an amount above its maximum.
var (
	ErrPrecision = errors.New("more decimals than the currency has")
	ErrAboveMax  = errors.New("above the currency's maximum")
)

// Check reports whether d, a payment of a currency under r, is within the
// global bounds, the currency's decimals and its maximum. It does not
// decide the sign: callers say what a zero or negative amount means.
func (r Rule) Check(d decimal.Decimal) error {
	if err := CheckDigits(d); err != nil {
		return err
	}
	if !d.Equal(d.Truncate(r.Decimals)) {
		return fmt.Errorf("%w: %s has more than %d decimals", ErrPrecision, d.String(), r.Decimals)
	}
	if r.Max.IsPositive() && d.GreaterThan(r.Max) {
		return fmt.Errorf("%w: %s is above %s", ErrAboveMax, d.String(), r.Max.String())
	}
	return nil
}

// Truncate keeps error text bounded when echoing untrusted input.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
