package events_test

import (
	"encoding/json"
	"testing"

	"github.com/payoutd/payoutd/events"
)

func TestAmountKeepsEveryDigit(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`"12.50"`, `"12.5"`},
		{`12.50`, `"12.5"`},
		{`0.1000000000000000055511151231257827`, `"0.1000000000000000055511151231257827"`},
		{`"123456789012345678901234567890.000000000000000001"`, `"123456789012345678901234567890.000000000000000001"`},
		{`1e-8`, `"0.00000001"`},
		{`"0.000000000000000001"`, `"0.000000000000000001"`},
	} {
		var a events.Amount
		if err := json.Unmarshal([]byte(tc.in), &a); err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		out, _ := json.Marshal(a)
		if string(out) != tc.want {
			t.Errorf("%s -> %s, want %s", tc.in, out, tc.want)
		}
	}
}

func TestAmountRejectsNonNumbers(t *testing.T) {
	for _, in := range []string{`"abc"`, `null`, `"1,5"`, `true`, `""`, `{}`} {
		var a events.Amount
		if err := json.Unmarshal([]byte(in), &a); err == nil {
			t.Errorf("%s accepted as %s", in, a)
		}
	}
}

func TestAmountArithmeticIsExact(t *testing.T) {
	var sum events.Amount
	for range 10 {
		sum = sum.Add(events.MustAmount("0.1"))
	}
	if !sum.Equal(events.MustAmount("1")) {
		t.Fatalf("0.1 added ten times is %s", sum)
	}
	for _, tc := range []struct {
		amount string
		places int32
		fits   bool
	}{{"12.50", 2, true}, {"12.505", 2, false}, {"1", 0, true}, {"0.000001", 6, true}, {"0.0000001", 6, false}} {
		if got := events.MustAmount(tc.amount).FitsDecimals(tc.places); got != tc.fits {
			t.Errorf("%s fits %d places: %v, want %v", tc.amount, tc.places, got, tc.fits)
		}
	}
}
