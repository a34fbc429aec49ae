package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/payoutd/payoutd/internal/chaos"
	"github.com/payoutd/payoutd/internal/kafkatest"
)

// A short chaos run through the binary: processes killed mid-payout, every
// invariant held. CI also runs a longer one with a broker restart, as its own
// step, because restarting the broker here would break the tests of other
// packages that share it.
func TestChaosKeepsTheInvariants(t *testing.T) {
	c := kafkatest.Start(t)
	res := payoutd(t, 5*time.Minute, nil,
		"chaos", "--kafka-brokers="+strings.Join(c.Seeds, ","), "--intents=400", "--kill-every=1s", "--max-kills=3",
		"--deadline=4m", "--log-dir="+t.TempDir())
	if res.code != 0 {
		t.Fatalf("chaos failed (exit %d):\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	// 400 valid intents paid once; the 4 sent to an address Calypso refuses
	// failed alone, the rest of their batches paid.
	if !strings.Contains(res.stdout, "paid_once=400 ") || !strings.Contains(res.stdout, " refused=4 double_paid=0 lost=0") {
		t.Fatalf("summary: %s", res.stdout)
	}
	t.Log(strings.TrimSpace(res.stdout))
}

// A run that killed nothing (every intent resolved before the first kill)
// fails: it proved nothing about crashes.
func TestChaosFailsWhenItKilledNothing(t *testing.T) {
	for _, tc := range []struct {
		name string
		rep  chaos.Report
		code int
	}{
		{"killed and held", chaos.Report{Intents: 10, PaidOnce: 10, Kills: 2}, exitOK},
		{"killed nothing", chaos.Report{Intents: 10, PaidOnce: 10}, exitFailed},
		{"violation", chaos.Report{Intents: 10, Kills: 1, Problems: []string{"lost"}}, exitFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := chaosVerdict(tc.rep)
			code := exitOK
			var f *failure
			if errors.As(err, &f) {
				code = f.code
			} else if err != nil {
				t.Fatalf("verdict %v is not a failure", err)
			}
			if code != tc.code {
				t.Fatalf("exit %d, want %d (%v)", code, tc.code, err)
			}
			if code != exitOK && f.msg == "" {
				t.Fatal("a failed verdict says nothing")
			}
		})
	}
}
