package main

import (
	"bytes"
	"fmt"
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

// A sandbox out of balance is said once per account and currency, with how
// to top it up, instead of a warning per deferred batch.
func TestDevSaysOnceThatTheSandboxRanOutOfBalance(t *testing.T) {
	t.Parallel()
	r := payoutd(t, 90*time.Second, nil, "dev", "--intents=100", "--rate=1000", "--deadline=6s", "--balance=0")
	if r.code != exitFailed {
		t.Fatalf("want exit 1 (intents left unresolved):\n%s", r)
	}
	if strings.Contains(r.stderr, "batch deferred") {
		t.Fatalf("a warning per deferral:\n%s", r.stderr)
	}
	for _, a := range devAccounts {
		for _, cur := range a.currencies {
			said := "sandbox account " + a.id + " is out of " + cur + " "
			if n := strings.Count(r.stdout, said); n != 1 {
				t.Errorf("%q said %d times, want once:\n%s", said, n, r.stdout)
			}
		}
	}
	if !strings.Contains(r.stdout, "/sandbox/balance -d '{\"account\":\"acme-eu\",\"currency\":\"USDT_TRX\",\"amount\":") {
		t.Errorf("no top-up command:\n%s", r.stdout)
	}
}

// On a terminal the live summary is redrawn in place (carriage returns, no
// new line per update) and a notice is printed above it; elsewhere (a pipe,
// CI) each update is its own line.
func TestDevSummaryRedrawsInPlaceOnATerminal(t *testing.T) {
	var tty bytes.Buffer
	v := newTermView(&tty, 100, 0) // no throttle: every update is drawn
	for i := range 5 {
		v.update("long line", fmt.Sprintf("sent %d │ settled %d", 100, i*20), i*20, 100)
	}
	v.notice("sandbox account a is out of BTC")
	v.done()
	out := tty.String()
	if !strings.Contains(out, "\r") || !strings.Contains(out, "settled 80") || !strings.Contains(out, "80/100") {
		t.Fatalf("no redraw in place: %q", out)
	}
	if strings.Count(out, "\n") != 1 || strings.Contains(out, "long line") {
		t.Fatalf("want one new line, for the notice, and the short summary only: %q", out)
	}

	var pipe bytes.Buffer
	p := newDevView(&pipe, 100)
	p.update("line 1", "short", 0, 100)
	p.update("line 2", "short", 0, 100)
	if pipe.String() != "line 1\nline 2\n" {
		t.Fatalf("not a terminal: %q, want plain lines", pipe.String())
	}
}
