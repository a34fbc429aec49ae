package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/kafkatest"
	"github.com/payoutd/payoutd/internal/status"
)

// payoutd status follows a payment through the topics, and says plainly
// when there is nothing to follow.
func TestStatusFollowsAPaymentFromTheCommandLine(t *testing.T) {
	t.Parallel()
	c := kafkatest.Start(t)
	tt := newTestTopics(t)
	tt.ensure(t, c, 2)
	now := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	batch := "44444444-4444-5444-8444-444444444444"
	amt := mustAmount(t, "7.5")
	var recs []*kgo.Record
	for _, e := range []struct {
		topic string
		ev    events.Event
	}{
		{tt.Requests, events.PayoutRequested{IntentID: "inv-77", Account: "acc", Currency: "USDT_TRX", Amount: amt, Address: "TADDR77", RequestedAt: &now}},
		{tt.Batches, events.BatchPlanned{BatchID: batch, IdempotencyKey: batch, Account: "acc", Currency: "USDT_TRX",
			Items: []events.BatchItem{{IntentID: "inv-77", Address: "TADDR77", Amount: amt}}, Total: amt, PlannedAt: now.Add(time.Second)}},
		{tt.Outcomes, events.PayoutSubmitted{BatchID: batch, PayoutID: "9001", IdempotencyKey: batch, Account: "acc", Currency: "USDT_TRX",
			ItemCount: 1, Total: amt, State: "CREATION_IN_PROGRESS", SubmittedAt: now.Add(2 * time.Second)}},
	} {
		r, err := events.NewRecord(e.topic, "test", e.ev)
		if err != nil {
			t.Fatal(err)
		}
		r.Timestamp = e.ev.Time()
		recs = append(recs, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Client(t).ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	args := append([]string{"status", brokersFlag(c)}, tt.flags()...)
	r := payoutd(t, 30*time.Second, nil, append(args, "TADDR77")...)
	if r.code != exitOK || !strings.Contains(r.stdout, "TADDR77 (address): under way") || !strings.Contains(r.stdout, "payouts  9001") ||
		!strings.Contains(r.stdout, "payout.submitted.v1") {
		t.Fatalf("status TADDR77:\n%s", r)
	}
	r = payoutd(t, 30*time.Second, nil, append(args, "--json", "9001")...)
	var tl status.Timeline
	if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &tl) != nil || tl.Kind != "payout" || len(tl.Steps) != 2 || tl.Steps[0].What != "batch.planned.v1" {
		t.Fatalf("status --json 9001:\n%s", r)
	}
	r = payoutd(t, 30*time.Second, nil, append(args, "no-such-payment")...)
	if r.code != exitFailed || !strings.Contains(r.stdout, "nothing found") {
		t.Fatalf("status of an unknown id:\n%s", r)
	}
	r = payoutd(t, 30*time.Second, nil, args...)
	if r.code != exitOK || !strings.Contains(r.stdout, "OPEN PAYOUTS: 1") || !strings.Contains(r.stdout, "9001") {
		t.Fatalf("status summary:\n%s", r)
	}
}
