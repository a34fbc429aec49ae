package main

import (
	"strings"
	"testing"
	"time"

	"github.com/payoutd/payoutd/internal/kafkatest"
)

// TestDevReachesEveryIntent runs the newcomer's command: 200 sample intents
// must all reach a terminal outcome, and the summary must say so.
func TestDevReachesEveryIntent(t *testing.T) {
	t.Parallel()
	check := func(t *testing.T, r result) {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("payoutd dev:\n%s", r)
		}
		for _, want := range []string{"every intent reached a terminal outcome: 200/200", "DLQ", "payouts reached:", "/sandbox/payouts", "payoutd tail"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("summary lacks %q:\n%s", want, r.stdout)
			}
		}
	}
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		check(t, payoutd(t, 90*time.Second, nil, "dev", "--intents=200", "--rate=1000", "--deadline=60s"))
	})
	t.Run("shared broker", func(t *testing.T) {
		t.Parallel()
		c := kafkatest.Start(t)
		tt := newTestTopics(t)
		tt.cleanup(t, c)
		args := append([]string{"dev", "--intents=200", "--rate=1000", "--deadline=60s", "--partitions=2",
			"--kafka=" + strings.Join(c.Seeds, ","), "--group-prefix=" + kafkatest.Name(t, "dev")}, tt.flags()...)
		check(t, payoutd(t, 90*time.Second, nil, args...))
	})
}
