package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/kafkatest"
)

// chromium finds a headless-capable Chromium. Without one the test cannot
// run: it fails where PAYOUTD_REQUIRE_BROWSER=1 (CI installs Debian's
// chromium), and is skipped, saying so, on a machine that has none.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("PAYOUTD_REQUIRE_BROWSER") == "1" {
		t.Fatal("PAYOUTD_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
	}
	t.Skip("no chromium on PATH; CI runs this test with PAYOUTD_REQUIRE_BROWSER=1")
	return ""
}

// The console against a running pipeline, in a real browser: look up an
// intent and see its timeline reach its terminal outcome.
func TestConsoleFollowsAnIntentInABrowser(t *testing.T) {
	t.Parallel()
	browser := chromium(t)
	// The shared broker: Apache Kafka in CI, kfake otherwise.
	c := kafkatest.Start(t)
	tt := newTestTopics(t)
	tt.cleanup(t, c)
	args := append([]string{"dev", "--intents=20", "--forever", "--rate=40", "--partitions=2",
		"--kafka=" + strings.Join(c.Seeds, ","), "--group-prefix=" + kafkatest.Name(t, "console")}, tt.flags()...)
	dev := startPayoutd(t, nil, args...)
	t.Cleanup(func() { dev.signal(syscall.SIGTERM); dev.wait(t, time.Minute) })
	dev.waitOutput(t, 60*time.Second, "Console:")
	out := dev.stdout.String()
	consoleURL := regexp.MustCompile(`Console:\s+(\S+)`).FindStringSubmatch(out)
	follow := regexp.MustCompile(`--kafka-brokers (\S+) --topic-outcomes (\S+)`).FindStringSubmatch(out)
	if consoleURL == nil || follow == nil {
		t.Fatalf("dev did not print the console and outcomes:\n%s", out)
	}

	// An intent that settled, read from the outcomes topic as a ledger would.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(follow[1], ",")...), kgo.ConsumeTopics(follow[2]),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var intent string
	for intent == "" {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("no intent settled within 2 minutes:\n%s", dev.stdout)
		}
		f.EachRecord(func(r *kgo.Record) {
			if _, e, err := events.Decode(r); err == nil {
				if s, ok := e.(events.IntentSettled); ok && intent == "" {
					intent = s.IntentID
				}
			}
		})
	}

	actx, acancel := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.WindowSize(1400, 1000))...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	err = chromedp.Do(bctx,
		chromedp.Navigate(consoleURL[1]),
		chromedp.WaitVisible(`#health`),
		chromedp.SendKeys(`header input[name=q]`, intent),
		chromedp.Submit(`header input[name=q]`),
		chromedp.WaitVisible(`#outcome`),
	)
	if err != nil {
		t.Fatal(err)
	}
	outcome, err := chromedp.Run(bctx, chromedp.Text(`#outcome`))
	if err != nil {
		t.Fatal(err)
	}
	timeline, err := chromedp.Run(bctx, chromedp.Text(`#timeline`))
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("PAYOUTD_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "payoutd-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err == nil {
		p := filepath.Join(dir, "console-follow-intent.png")
		if err := os.WriteFile(p, shot, 0o644); err == nil {
			t.Logf("screenshot: %s", p)
		}
	}
	if strings.TrimSpace(outcome) != "SETTLED" {
		t.Fatalf("the console shows %s's outcome as %q:\n%s", intent, outcome, timeline)
	}
	for _, step := range []string{"payout.requested.v1", "batch.planned.v1", "payout.submitted.v1", "intent.settled.v1"} {
		if !strings.Contains(timeline, step) {
			t.Errorf("the timeline of %s lacks %s:\n%s", intent, step, timeline)
		}
	}
}
