package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/kafkatest"
	"github.com/payoutd/payoutd/internal/topicscan"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// readAll reads every committed record of topic present now.
func readAll(t *testing.T, c *kafkatest.Cluster, topic string) []*kgo.Record {
	t.Helper()
	cl := c.Client(t, kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := topicscan.StableEnds(ctx, newAdminFrom(cl), topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(ends) == 0 {
		return nil
	}
	starts := map[int32]kgo.Offset{}
	for p := range ends {
		starts[p] = kgo.NewOffset().AtStart()
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: starts})
	var out []*kgo.Record
	for len(ends) > 0 {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %v", topic, ctx.Err())
		}
		f.EachRecord(func(r *kgo.Record) {
			if end, ok := ends[r.Partition]; ok && r.Offset+1 >= end {
				delete(ends, r.Partition)
			}
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
		})
	}
	return out
}

func TestProduce(t *testing.T) {
	t.Parallel()
	c := kafkatest.Start(t)

	t.Run("good CSV lands keyed and exact", func(t *testing.T) {
		t.Parallel()
		tt := newTestTopics(t)
		tt.ensure(t, c, 2)
		file := writeFile(t, "intents.csv", `intentId,account,currency,amount,address,executionDate,comment
i-1,acme,ETH,0.100000000000000001,0xabc,,first
i-2,acme,USDT_TRX,12.50,TAddr,2027-01-02T03:04:05Z,"with, comma"
i-3,acme,BTC,99999999.12345678,bc1q,,
`)
		r := payoutd(t, 30*time.Second, nil, append([]string{"produce", file, brokersFlag(c), "--quiet"}, tt.flags()...)...)
		if r.code != 0 || !strings.Contains(r.stdout, "sent 3 intent(s)") {
			t.Fatalf("produce:\n%s", r)
		}
		want := map[string]string{"i-1": "0.100000000000000001", "i-2": "12.5", "i-3": "99999999.12345678"}
		recs := readAll(t, c, tt.Requests)
		if len(recs) != 3 {
			t.Fatalf("want 3 records, got %d", len(recs))
		}
		for _, rec := range recs {
			var raw map[string]json.RawMessage
			if err := json.Unmarshal(rec.Value, &raw); err != nil {
				t.Fatal(err)
			}
			var in events.PayoutRequested
			if err := json.Unmarshal(rec.Value, &in); err != nil {
				t.Fatal(err)
			}
			if string(rec.Key) != in.IntentID {
				t.Errorf("record key %q, intent %q", rec.Key, in.IntentID)
			}
			if got := string(raw["amount"]); got != `"`+want[in.IntentID]+`"` {
				t.Errorf("%s: amount %s, want %q exactly", in.IntentID, got, want[in.IntentID])
			}
			if m, err := events.ReadMeta(rec); err != nil || m.Type != events.TypePayoutRequested {
				t.Errorf("%s: CloudEvents headers: %v %v", in.IntentID, m, err)
			}
		}
	})

	t.Run("bad file names every line and sends nothing", func(t *testing.T) {
		t.Parallel()
		tt := newTestTopics(t)
		tt.ensure(t, c, 1)
		file := writeFile(t, "intents.jsonl", `{"intentId":"j-1","account":"acme","currency":"USDT_TRX","amount":"5","address":"T1"}
{"intentId":"j-2","account":"acme","currency":"USDT_TRX","amount":"-5","address":"T2"}

{"intentId":"j-3","account":"acme","currency":"NOPE","amount":"5","address":"T3"}
{"intentId":"j-1","account":"acme","currency":"USDT_TRX","amount":"5","address":"T1"}
{"intentId":"j-5","account":"acme","currency":"USDT_TRX","amount":"1.1234567","address":"T5"}
not json
{"intentId":"j-7","account":"acme","currency":"USDT_TRX","amount":"5"}
`)
		r := payoutd(t, 30*time.Second, nil, append([]string{"produce", file, brokersFlag(c)}, tt.flags()...)...)
		if r.code != exitFailed {
			t.Fatalf("want exit %d:\n%s", exitFailed, r)
		}
		for _, line := range []string{"line 2:", "line 4:", "line 5:", "line 6:", "line 7:", "line 8:"} {
			if !strings.Contains(r.stderr, line) {
				t.Errorf("stderr does not report %q:\n%s", line, r.stderr)
			}
		}
		for _, line := range []string{"line 1:", "line 3:"} {
			if strings.Contains(r.stderr, line) {
				t.Errorf("stderr reports good %q:\n%s", line, r.stderr)
			}
		}
		if n := len(readAll(t, c, tt.Requests)); n != 0 {
			t.Fatalf("%d records were sent from a bad file", n)
		}
	})
}
