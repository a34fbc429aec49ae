package main

import (
	"strings"
	"testing"
	"time"

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
