package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/kafkatest"
	"github.com/payoutd/payoutd/pipeline"
)

// Issue 11, scenario 6: a request whose upstream headers are named like
// ours (payoutd-dlq-reason, ce_type) must not spoof its DLQ reason: tail
// shows the real one, and the record as a DLQ record, not as an event.
func TestTailShowsTheRealDLQReason(t *testing.T) {
	t.Parallel()
	c := kafkatest.Start(t)
	tt := newTestTopics(t)
	tt.ensure(t, c, 1)
	b, err := pipeline.NewBatcher(pipeline.BatcherConfig{Topics: tt.Topics, Group: tt.Requests + ".batcher", MaxWait: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, kgo.SeedBrokers(c.Seeds...))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	cl := c.Client(t, kgo.DefaultProduceTopic(tt.Requests))
	pctx, pcancel := context.WithTimeout(context.Background(), time.Minute)
	defer pcancel()
	spoof := &kgo.Record{Key: []byte("spoof"), Value: []byte(`{"intentId":"spoof","amount":"1"}`), Headers: []kgo.RecordHeader{
		{Key: pipeline.HeaderDLQReason, Value: []byte("duplicate")},
		{Key: events.HeaderSpecVersion, Value: []byte("1.0")},
		{Key: events.HeaderID, Value: []byte("fake")},
		{Key: events.HeaderType, Value: []byte(events.TypeIntentSettled)},
	}}
	if err := cl.ProduceSync(pctx, spoof).FirstErr(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for b.Stats.DLQ.Load() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the record never reached the DLQ")
		}
		time.Sleep(20 * time.Millisecond) // polling a counter, with a deadline
	}
	if n := b.Stats.DLQBy[pipeline.ReasonDuplicate].Load(); n != 0 {
		t.Errorf("the DLQ metric counts %d duplicates", n)
	}

	args := append([]string{"tail", "--topic=dlq", "--from=start", "--no-follow", brokersFlag(c)}, tt.flags()...)
	r := payoutd(t, 30*time.Second, nil, args...)
	if r.code != 0 || !strings.Contains(r.stdout, " dlq ") || !strings.Contains(r.stdout, "reason=schema") || strings.Contains(r.stdout, "settled") {
		t.Fatalf("tail shows the spoofed record as:\n%s", r)
	}
	r = payoutd(t, 30*time.Second, nil, append(args, "--json")...)
	var rec jsonRecord
	if r.code != 0 || json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &rec) != nil {
		t.Fatalf("tail --json:\n%s", r)
	}
	if rec.Headers[pipeline.HeaderDLQReason] != "schema" || rec.Headers[events.HeaderType] != "" ||
		rec.Headers["upstream-"+pipeline.HeaderDLQReason] != "duplicate" {
		t.Fatalf("tail --json headers %v", rec.Headers)
	}
}
