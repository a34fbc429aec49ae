package chaos

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/calypso/sandbox"
	"github.com/payoutd/payoutd/internal/kafkatest"
	"github.com/payoutd/payoutd/pipeline"
)

// The audit is the chaos run's verdict, so it must see a violation when
// there is one: an intent paid twice, an intent never paid, an invalid
// record missing from the DLQ.
func TestAuditFindsViolations(t *testing.T) {
	c := kafkatest.Start(t)
	topics := kafkatest.Topics(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := topics.Ensure(ctx, kadm.NewClient(c.Client(t)), 0, 1, 1); err != nil {
		t.Fatal(err)
	}

	sb := sandbox.New(sandbox.Config{TimeScale: 0.001, Accounts: map[string]sandbox.Account{
		"a": {APIKey: "k", APISecret: "s", Balances: map[string]calypso.Amount{"TRX": calypso.MustParseAmount("100")}}}})
	srv := httptest.NewServer(sb)
	defer srv.Close()
	defer sb.Close()
	cl, err := calypso.NewClient(calypso.Config{BaseURL: srv.URL, Account: "a", APIKey: "k", APISecret: "s", RateLimit: -1})
	if err != nil {
		t.Fatal(err)
	}
	// "twice" is paid in two payouts under two keys: a double payout.
	for _, key := range []string{"00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"} {
		_, err := cl.CreateMassPayout(ctx, calypso.MassPayoutRequest{Currency: "TRX", Name: "n", IdempotencyKey: key,
			Items: []calypso.MassPayoutItem{{DepositAddress: "T1", Amount: calypso.MustParseAmount("1"), Comment: "twice"}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	// An invalid record that did reach the DLQ.
	dlq := &kgo.Record{Topic: topics.DLQ, Key: []byte("bad-1"), Value: []byte("{}"),
		Headers: []kgo.RecordHeader{{Key: pipeline.HeaderDLQReason, Value: []byte(pipeline.ReasonSchema)}}}
	if err := c.Client(t).ProduceSync(ctx, dlq).FirstErr(); err != nil {
		t.Fatal(err)
	}

	rep, err := Audit(ctx, []kgo.Opt{kgo.SeedBrokers(c.Seeds...)}, topics, sb, Expect{
		Valid:   map[string]bool{"twice": true, "never": true},
		Invalid: map[string]bool{"bad-1": true, "bad-2": true},
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.DoublePaid != 1 || rep.Lost != 2 || rep.DLQ != 1 || rep.PaidOnce != 0 {
		t.Fatalf("audit missed violations: %s\n%s", rep, strings.Join(rep.Problems, "\n"))
	}
	if !strings.Contains(rep.String(), "double_paid=1 lost=2") {
		t.Fatalf("summary line %q", rep)
	}
}
