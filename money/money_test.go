package money_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/shopspring/decimal"

	"github.com/payoutd/payoutd/money"
)

func TestParseBounds(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error // nil: accepted
	}{
		{"12.5", nil},
		{"1e-18", nil},
		{"1e30", money.ErrOutOfBounds},
		{"1e29", nil},
		{strings.Repeat("9", 30), nil},
		{strings.Repeat("9", 31), money.ErrOutOfBounds},
		{"1e10000001", money.ErrOutOfBounds},
		{"1e-10000001", money.ErrOutOfBounds},
		{"1e400", money.ErrOutOfBounds},
		{"1E+65", money.ErrOutOfBounds},
		{"0." + strings.Repeat("0", 39) + "1", nil},
		{"0." + strings.Repeat("0", 40) + "1", money.ErrOutOfBounds},
		{"1." + strings.Repeat("0", 60), nil}, // trailing zeros do not count
		{strings.Repeat("1", 101), money.ErrOutOfBounds},
		{"abc", money.ErrNotDecimal},
		{"1e", money.ErrNotDecimal},
	} {
		_, err := money.Parse(tc.in)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("Parse(%.40q) = %v, want %v", tc.in, err, tc.want)
		}
		if err != nil && len(err.Error()) > 200 {
			t.Errorf("Parse(%.40q): error of %d bytes echoes the input", tc.in, len(err.Error()))
		}
	}
}

func TestRuleCheck(t *testing.T) {
	btc := money.Rule{Decimals: 8, Max: decimal.RequireFromString("21000000")}
	for _, tc := range []struct {
		in   string
		want error
	}{
		{"0.00000001", nil},
		{"0.000000001", money.ErrPrecision},
		{"1.500000000", nil},
		{"21000000", nil},
		{"21000000.00000001", money.ErrAboveMax},
	} {
		err := btc.Check(decimal.RequireFromString(tc.in))
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("Check(%s) = %v, want %v", tc.in, err, tc.want)
		}
	}
	if err := (money.Rule{Decimals: 18}).Check(decimal.RequireFromString("1e29")); err != nil {
		t.Errorf("no maximum: %v", err)
	}
}
