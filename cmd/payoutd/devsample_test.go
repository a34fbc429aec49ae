package main

import (
	"math"
	"testing"
	"time"
)

// dev --rate is what is sent: a rate below 20/s used to be raised to 20/s.
func TestDevRateIsKept(t *testing.T) {
	t.Parallel()
	for _, rate := range []int{1, 5, 19, 20, 100, 1000} {
		tick, per := pace(rate)
		if got := float64(per) * float64(time.Second) / float64(tick); math.Abs(got-float64(rate)) > 0.001*float64(rate) {
			t.Errorf("--rate=%d sends %.2f intents/s (%d per %s)", rate, got, per, tick)
		}
	}
}
