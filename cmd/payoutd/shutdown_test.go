package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso/sandbox"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/kafkatest"
)

// TestSIGTERMUnderLoadLosesAndDoublesNothing stops `payoutd run` with
// SIGTERM while intents stream in and webhooks arrive, restarts it, and
// checks with the sandbox's own records and the topics that every intent
// was paid in exactly one payout and reached a terminal outcome.
func TestSIGTERMUnderLoadLosesAndDoublesNothing(t *testing.T) {
	t.Parallel()
	c := kafkatest.Start(t)
	tt := newTestTopics(t)
	tt.ensure(t, c, 2)

	ingressAddr := freeAddr(t)
	sb := startPayoutd(t, nil, "sandbox", "--listen=127.0.0.1:0", "--time-scale=0.001",
		"--account=id=acc,key=k,secret=s,balance=USDT_TRX:1000000,balance=BTC:1000",
		"--webhook-url=http://"+ingressAddr+"/webhooks/calypso", "--webhook-key=wk", "--webhook-secret=ws",
		"--duplicate-webhooks=0.1", "--drop-webhooks=0.05", "--seed=7")
	sbURL := waitMatch(t, sb, regexp.MustCompile(`url=(http://\S+)`))

	name := kafkatest.Name(t, "run")
	args := append([]string{"run", brokersFlag(c), "--calypso-url=" + sbURL, "--calypso-account=id=acc,key=k,secret=s",
		"--calypso-rate-limit=-1", "--webhook-key=wk=ws", "--ingress-addr=" + ingressAddr, "--ops-addr=127.0.0.1:0",
		"--batcher-group=" + name + "-b", "--submitter-group=" + name + "-s", "--tracker-group=" + name + "-t",
		// Fixed ids, as in production: the restarted instance fences the stopped one.
		"--batcher-transactional-id=" + name + "-b", "--submitter-transactional-id=" + name + "-s",
		"--ingress-transactional-id=" + name + "-i", "--tracker-transactional-id=" + name + "-t",
		"--batcher-max-wait=100ms", "--tracker-poll-after=500ms", "--submitter-retry-delay=200ms", "--shutdown-timeout=20s"},
		tt.flags()...)

	first := startPayoutd(t, nil, args...)
	first.waitOutput(t, 30*time.Second, "payoutd running")

	// Load: 400 intents over ~2s, in the background.
	const total = 400
	ids := make([]string, total)
	var produced sync.WaitGroup
	produced.Add(1)
	progress := make(chan int, total)
	go func() {
		defer produced.Done()
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.Seeds...), kgo.DefaultProduceTopic(tt.Requests))
		if err != nil {
			t.Error(err)
			return
		}
		defer cl.Close()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < total; i += 2 {
			var recs []*kgo.Record
			for j := i; j < i+2; j++ {
				ids[j] = fmt.Sprintf("%s-%04d", name, j)
				cur := []string{"USDT_TRX", "BTC"}[j%2]
				v, _ := json.Marshal(map[string]string{"intentId": ids[j], "account": "acc", "currency": cur, "amount": "0.5", "address": fmt.Sprintf("addr-%d", j)})
				recs = append(recs, &kgo.Record{Key: []byte(ids[j]), Value: v})
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := cl.ProduceSync(ctx, recs...).FirstErr()
			cancel()
			if err != nil {
				t.Error(err)
				return
			}
			progress <- i + 2
			<-tick.C
		}
	}()

	// Stop mid-load, once payouts are being made and webhooks come in.
	for n := 0; n < total/3; {
		select {
		case n = <-progress:
		case <-time.After(30 * time.Second):
			t.Fatalf("load stalled at %d intents", n)
		}
	}
	waitUntil(t, 20*time.Second, "first payouts created", func() bool { return len(sandboxPayouts(t, sbURL)) > 0 })
	first.signal(syscall.SIGTERM)
	if r := first.wait(t, 30*time.Second); r.code != 0 || !strings.Contains(r.stderr, "stopped cleanly") {
		t.Fatalf("first run after SIGTERM:\n%s", r)
	}
	paidBefore := len(sandboxPayouts(t, sbURL))

	second := startPayoutd(t, nil, args...)
	second.waitOutput(t, 30*time.Second, "payoutd running")
	produced.Wait()

	waitUntil(t, 45*time.Second, "every intent at a terminal outcome", func() bool {
		return len(terminalIntents(t, c, tt.Outcomes)) == total
	})
	second.signal(syscall.SIGTERM)
	if r := second.wait(t, 30*time.Second); r.code != 0 {
		t.Fatalf("second run after SIGTERM:\n%s", r)
	}

	// The sandbox is the payer: no intent in two payouts, none missing.
	inPayouts := map[string][]string{}
	for _, p := range sandboxPayouts(t, sbURL) {
		for _, it := range p.Items {
			inPayouts[it.Comment] = append(inPayouts[it.Comment], p.ID)
		}
	}
	for _, id := range ids {
		if n := len(inPayouts[id]); n != 1 {
			t.Errorf("intent %s is in %d payouts %v", id, n, inPayouts[id])
		}
	}
	if n := len(readAll(t, c, tt.DLQ)); n != 0 {
		t.Errorf("%d valid intents went to the DLQ", n)
	}
	t.Logf("%d intents, %d payouts before SIGTERM, %d after restart", total, paidBefore, len(sandboxPayouts(t, sbURL))-paidBefore)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitMatch waits for re in the process's output and returns its first group.
func waitMatch(t *testing.T, p *proc, re *regexp.Regexp) string {
	t.Helper()
	var m []string
	waitUntil(t, 15*time.Second, "output matching "+re.String(), func() bool {
		m = re.FindStringSubmatch(p.stderr.String() + p.stdout.String())
		return m != nil
	})
	return m[1]
}

func sandboxPayouts(t *testing.T, base string) []sandbox.Payout {
	t.Helper()
	resp, err := http.Get(base + "/sandbox/payouts")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ps []sandbox.Payout
	if err := json.NewDecoder(resp.Body).Decode(&ps); err != nil {
		t.Fatal(err)
	}
	return ps
}

// terminalIntents returns the intents with an IntentSettled or IntentFailed.
func terminalIntents(t *testing.T, c *kafkatest.Cluster, topic string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, r := range readAll(t, c, topic) {
		m, err := events.ReadMeta(r)
		if err == nil && (m.Type == events.TypeIntentSettled || m.Type == events.TypeIntentFailed) {
			out[string(r.Key)] = true
		}
	}
	return out
}
