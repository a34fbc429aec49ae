package main

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
)

// Every record sent with `payoutd produce` carries CloudEvents headers, and
// the DLQ keeps them: the pretty view must still say why it was rejected,
// and an upstream header named like payoutd's must not pass for the reason.
func TestTailShowsTheDLQReasonOfEveryRecord(t *testing.T) {
	t.Parallel()
	now := time.Now()
	in := events.PayoutRequested{RequestedAt: &now, IntentID: "i-1", Account: "demo", Currency: "USDT_TRX",
		Amount: mustAmount(t, "1.1234567"), Address: "T1"}
	orig, err := events.NewRecord("payouts.requests", "payoutd/produce", in)
	if err != nil {
		t.Fatal(err)
	}
	orig.Headers = append(orig.Headers, kgo.RecordHeader{Key: pipeline.HeaderDLQReason, Value: []byte("spoofed")})
	// As the batcher writes it: the original's headers, then payoutd's.
	dlq := &kgo.Record{Topic: "payouts.requests.dlq", Key: orig.Key, Value: orig.Value, Timestamp: time.Now(),
		Headers: append(append([]kgo.RecordHeader(nil), orig.Headers...),
			kgo.RecordHeader{Key: pipeline.HeaderDLQReason, Value: []byte(pipeline.ReasonPrecision)},
			kgo.RecordHeader{Key: pipeline.HeaderDLQError, Value: []byte("amount: at most 6 decimals")})}
	line := pretty(dlq)
	if !strings.Contains(line, "reason="+string(pipeline.ReasonPrecision)) || strings.Contains(line, "spoofed") ||
		!strings.Contains(line, "at most 6 decimals") || !strings.Contains(line, "original=payout.requested.v1") {
		t.Fatalf("pretty DLQ line: %s", line)
	}
}

func mustAmount(t *testing.T, s string) events.Amount {
	t.Helper()
	a, err := events.ParseAmount(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
