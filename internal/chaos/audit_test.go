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
	"github.com/payoutd/payoutd/events"
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

// The audit's money-safety checks of issue 10: a refusal of what Calypso
// holds, a batch created after its rejection, a final intent state
// overwritten. Each is fed once and reported; the legitimate cases next to
// them are not.
func TestAuditFindsRefusalsOfPaidBatchesAndOverwrittenStates(t *testing.T) {
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
	create := func(key, intent string) *calypso.MassPayout {
		t.Helper()
		p, err := cl.CreateMassPayout(ctx, calypso.MassPayoutRequest{Currency: "TRX", Name: "n", IdempotencyKey: key,
			Items: []calypso.MassPayoutItem{{DepositAddress: "T1", Amount: calypso.MustParseAmount("1"), Comment: intent}}})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	produce := func(topic string, evs ...events.Event) {
		t.Helper()
		for _, e := range evs {
			r, err := events.NewRecord(topic, "test", e)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Client(t).ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	const (
		paidKey     = "00000000-0000-4000-8000-0000000000a1"
		replayedKey = "00000000-0000-4000-8000-0000000000a2"
		failedKey   = "00000000-0000-4000-8000-0000000000a3"
	)
	now := time.Now()
	outcome := func(intent, batch, payout string) events.IntentOutcome {
		return events.IntentOutcome{IntentID: intent, BatchID: batch, PayoutID: payout, Account: "a", Currency: "TRX",
			Amount: events.MustAmount("1"), Address: "T1", PayoutState: "FAILED", ResolvedAt: now}
	}

	// Paid at Calypso, then reported rejected, its intent failed, and an
	// intent of its batch failed by a refusal.
	create(paidKey, "paid")
	produce(topics.Outcomes,
		events.PayoutRejected{BatchID: paidKey, Account: "a", Currency: "TRX", ItemCount: 1, Total: events.MustAmount("1"), Code: "016", Message: "Can not create deal. Validation failed", RejectedAt: time.Now()},
		events.IntentFailed{IntentOutcome: outcome("paid", paidKey, ""), Code: "016", Reason: "rejected"},
		events.IntentFailed{IntentOutcome: outcome("paid-sibling", paidKey, ""), Code: "016", Reason: "rejected"})

	// Rejected first, created afterwards: a replayed batch.
	produce(topics.Outcomes, events.PayoutRejected{BatchID: replayedKey, Account: "a", Currency: "TRX", ItemCount: 1,
		Total: events.MustAmount("1"), Code: "001", Message: "in the past", RejectedAt: time.Now()})
	create(replayedKey, "replayed")

	// Legitimate: a payout that FAILED at Calypso, its intent failed by the tracker.
	sb.ForceOutcome(failedKey, calypso.StateFailed)
	fp := create(failedKey, "failed-there")
	deadline := time.Now().Add(30 * time.Second)
	for p, _ := sb.Payout(string(fp.ID)); p.State != calypso.StateFailed; p, _ = sb.Payout(string(fp.ID)) {
		if time.Now().After(deadline) {
			t.Fatalf("payout %s still %s", fp.ID, p.State)
		}
		time.Sleep(time.Millisecond)
	}
	produce(topics.Outcomes, events.IntentFailed{IntentOutcome: outcome("failed-there", failedKey, string(fp.ID)), Code: "FAILED", Reason: "payout failed"})

	// Intent states: one final state overwritten in sequence, one whose
	// final state is missing behind its outcome, one fine.
	state := func(intent string, s events.IntentStatus) events.IntentState {
		return events.IntentState{IntentID: intent, State: s, BatchID: "b", UpdatedAt: now}
	}
	produce(topics.Intents,
		state("flip", events.StatusBatched), state("flip", events.StatusSubmitted), state("flip", events.StatusSettled), state("flip", events.StatusSubmitted),
		state("behind", events.StatusBatched), state("behind", events.StatusSubmitted),
		state("fine", events.StatusBatched), state("fine", events.StatusSubmitted), state("fine", events.StatusFailed))
	produce(topics.Outcomes,
		events.IntentSettled{IntentOutcome: outcome("behind", "b", "p")},
		events.IntentFailed{IntentOutcome: outcome("fine", "b", "p"), Reason: "payout failed"})

	// Refused recipients: one failed alone as it must, one left without an outcome.
	produce(topics.Outcomes, events.IntentFailed{IntentOutcome: outcome("refused-ok", "b-refused", ""), Code: "001", Reason: "invalid address"})

	rep, err := Audit(ctx, []kgo.Opt{kgo.SeedBrokers(c.Seeds...)}, topics, sb, Expect{Valid: map[string]bool{}, Invalid: map[string]bool{},
		Refused: map[string]bool{"refused-ok": true, "refused-silent": true}})
	if err != nil {
		t.Fatal(err)
	}
	problems := strings.Join(rep.Problems, "\n")
	if rep.RejectedButPaid != 3 || rep.CreatedAfterRejection != 1 || rep.FinalOverwritten != 2 || rep.Refused != 1 || rep.Lost != 1 {
		t.Fatalf("want rejected_but_paid=3 created_after_rejection=1 final_overwritten=2 refused=1 lost=1: %s\n%s", rep, problems)
	}
	for _, w := range []string{
		"batch " + paidKey + " reported rejected",
		"intent paid reported failed",
		"intent paid-sibling reported failed",
		"batch " + replayedKey + " rejected at",
		"intent flip: final state SETTLED overwritten by SUBMITTED",
		"intent behind: outcome says SETTLED, its latest state is SUBMITTED",
		"intent refused-silent to a refused address has no outcome",
	} {
		if !strings.Contains(problems, w) {
			t.Errorf("problems lack %q:\n%s", w, problems)
		}
	}
	for _, w := range []string{"failed-there", "intent fine", "refused-ok"} {
		if strings.Contains(problems, w) {
			t.Errorf("a legitimate case was reported (%s):\n%s", w, problems)
		}
	}
	if !strings.Contains(rep.String(), "rejected_but_paid=3 created_after_rejection=1 final_overwritten=2") {
		t.Fatalf("summary line %q", rep)
	}
}
