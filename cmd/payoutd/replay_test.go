package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/calypso/sandbox"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/kafkatest"
	"github.com/payoutd/payoutd/pipeline"
)

// TestReplayReproducesOutcomes writes webhooks through the real ingress (from
// the sandbox, duplicates included), then audits: replay must find zero
// differences; after one outcome record is tampered with, it must report it.
func TestReplayReproducesOutcomes(t *testing.T) {
	t.Parallel()
	c := kafkatest.Start(t)
	tt := newTestTopics(t)
	tt.ensure(t, c, 2)

	in, err := pipeline.NewIngress(pipeline.IngressConfig{Topics: tt.Topics, Keys: calypso.WebhookKeys{"wk": "ws"}}, kgo.SeedBrokers(c.Seeds...))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	srv := httptest.NewServer(in)
	t.Cleanup(func() { srv.Close(); cancel(); <-done })

	sb := sandbox.New(sandbox.Config{
		Accounts: map[string]sandbox.Account{"acc": {APIKey: "k", APISecret: "s",
			Balances: map[string]calypso.Amount{"USDT_TRX": calypso.MustParseAmount("1000")}}},
		TimeScale: 0.001,
		Webhook:   sandbox.WebhookConfig{URL: srv.URL + pipeline.WebhookPath, PublicKey: "wk", Secret: "ws"},
		Faults:    sandbox.Faults{Seed: 3, DuplicateWebhook: 0.3, Outcomes: sandbox.OutcomeMix{Completed: 0.5, Failed: 0.5}},
	})
	sbSrv := httptest.NewServer(sb)
	t.Cleanup(func() { sbSrv.Close(); sb.Close() })
	cl, err := calypso.NewClient(calypso.Config{BaseURL: sbSrv.URL, Account: "acc", APIKey: "k", APISecret: "s", RateLimit: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		_, err := cl.CreateMassPayout(ctx, calypso.MassPayoutRequest{Currency: "USDT_TRX", Name: "replay", IdempotencyKey: uuid.NewString(),
			Items: []calypso.MassPayoutItem{{DepositAddress: fmt.Sprintf("T%d", i), Amount: calypso.MustParseAmount("1.5")}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 30*time.Second, "every webhook delivered", func() bool {
		terminal := 0
		for _, p := range sb.Payouts() {
			if p.State.Terminal() {
				terminal++
			}
		}
		for _, w := range sb.Webhooks() {
			if !w.Delivered {
				return false
			}
		}
		return terminal == 4
	})

	outFile := filepath.Join(t.TempDir(), "replayed.jsonl")
	args := append([]string{"replay", brokersFlag(c), "--out-file=" + outFile}, tt.flags()...)
	r := payoutd(t, 30*time.Second, nil, args...)
	if r.code != 0 || !strings.Contains(r.stdout, " 0 difference(s)") {
		t.Fatalf("replay of untouched topics:\n%s", r)
	}
	lines, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(lines), "\n"); n == 0 || !strings.Contains(r.stdout, fmt.Sprintf("→ %d event(s)", n)) {
		t.Fatalf("out file has %d events:\n%s", n, r)
	}

	// tail shows the same topic, as JSON (CloudEvents headers included) and pretty.
	tailArgs := append([]string{"tail", brokersFlag(c), "--topic=outcomes", "--from=start", "--no-follow"}, tt.flags()...)
	r = payoutd(t, 30*time.Second, nil, append(tailArgs, "--json")...)
	if r.code != 0 || !strings.Contains(r.stdout, `"ce_id":`) || !strings.Contains(r.stdout, `"payoutId":`) {
		t.Fatalf("tail --json:\n%s", r)
	}
	r = payoutd(t, 30*time.Second, nil, append(tailArgs, "--limit=1")...)
	if r.code != 0 || strings.Count(r.stdout, "\n") != 1 || !strings.Contains(r.stdout, "payout.") {
		t.Fatalf("tail --limit=1:\n%s", r)
	}

	// Tamper: the same event (ce_id and headers), another body.
	var victim *kgo.Record
	for _, rec := range readAll(t, c, tt.Outcomes) {
		if m, err := events.ReadMeta(rec); err == nil && m.Source == pipeline.SourceIngress {
			victim = rec
			break
		}
	}
	if victim == nil {
		t.Fatal("no ingress event on the outcomes topic")
	}
	forged := &kgo.Record{Topic: tt.Outcomes, Key: victim.Key, Headers: victim.Headers,
		Value: []byte(strings.Replace(string(victim.Value), `"state":"`, `"state":"X`, 1))}
	pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer pcancel()
	if err := c.Client(t).ProduceSync(pctx, forged).FirstErr(); err != nil {
		t.Fatal(err)
	}
	id := header(victim, events.HeaderID)
	r = payoutd(t, 30*time.Second, nil, args...)
	if r.code != exitFailed || !strings.Contains(r.stdout, "different  "+id) || !strings.Contains(r.stdout, "1 difference(s)") {
		t.Fatalf("replay after tampering with %s:\n%s", id, r)
	}
}

// waitUntil polls cond until it holds, or fails the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
