package events_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/schemas"
)

// sample builds each event type from the example downstream teams read, so
// the examples, the Go types and the schemas cannot drift apart.
func sample(t *testing.T, typ events.Type) events.Event {
	t.Helper()
	ex, err := schemas.Example(events.SchemaName(typ))
	if err != nil {
		t.Fatalf("%s has no example: %v", typ, err)
	}
	e, err := events.DecodeValue(typ, ex)
	if err != nil {
		t.Fatalf("example of %s does not decode: %v", typ, err)
	}
	// Every field of the example must survive into the Go type.
	var want, got map[string]any
	_ = json.Unmarshal(ex, &want)
	b, _ := json.Marshal(e)
	_ = json.Unmarshal(b, &got)
	for k := range want {
		if _, ok := got[k]; !ok {
			t.Fatalf("%s: example field %q has no Go field", typ, k)
		}
	}
	return e
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func TestEveryEventRoundTripsAndValidates(t *testing.T) {
	set := schemas.MustLoad()
	if got, want := len(events.Types()), len(set.Names()); got != want {
		t.Fatalf("%d event types but %d schemas", got, want)
	}
	for _, typ := range events.Types() {
		t.Run(string(typ), func(t *testing.T) {
			e := sample(t, typ)
			r, err := events.NewRecord("topic", "payoutd/test", e)
			if err != nil {
				t.Fatal(err)
			}
			if string(r.Key) != e.Key() || r.Key == nil || len(r.Key) == 0 {
				t.Fatalf("key %q, want %q", r.Key, e.Key())
			}
			if err := set.Validate(events.SchemaName(typ), r.Value); err != nil {
				t.Fatalf("encoded value breaks its schema: %v", err)
			}
			for k, want := range map[string]string{
				events.HeaderSpecVersion: "1.0",
				events.HeaderID:          e.ID(),
				events.HeaderType:        string(typ),
				events.HeaderSource:      "payoutd/test",
				events.HeaderTime:        e.Time().UTC().Format(time.RFC3339Nano),
				events.HeaderContentType: "application/json",
				events.HeaderDataSchema:  "urn:payoutd:schema:" + events.SchemaName(typ),
			} {
				if got := header(r, k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			meta, back, err := events.Decode(r)
			if err != nil {
				t.Fatal(err)
			}
			// Compared as written JSON: 12.50 and 12.5 are the same amount.
			if reflect.TypeOf(back) != reflect.TypeOf(e) {
				t.Fatalf("decoded as %T, want %T", back, e)
			}
			again, _ := json.Marshal(back)
			if string(again) != string(r.Value) {
				t.Fatalf("round trip changed the event:\n got %s\nwant %s", again, r.Value)
			}
			if meta.ID != e.ID() || meta.Type != typ || !meta.Time.Equal(e.Time()) {
				t.Fatalf("meta %+v", meta)
			}
		})
	}
}

func TestIDsAreDeterministic(t *testing.T) {
	at := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	a := events.PayoutStatusChanged{PayoutStatus: events.PayoutStatus{PayoutID: "7341", State: "COMPLETED", Terminal: true, Source: events.FromWebhook, WebhookEventID: "42", OccurredAt: at}}
	redelivered := a
	polled := a
	polled.Source, polled.WebhookEventID, polled.OccurredAt = events.FromPoll, "", at.Add(time.Minute)
	other := a
	other.State = "IN_PROGRESS"
	if a.ID() != redelivered.ID() || a.ID() != polled.ID() {
		t.Fatal("the same payout state must have one id, whether webhook, redelivery or poll")
	}
	if a.ID() == other.ID() {
		t.Fatal("different states must have different ids")
	}
	s1 := events.IntentState{IntentID: "i-1", State: events.StatusBatched}
	s2 := events.IntentState{IntentID: "i-1", State: events.StatusSettled}
	if s1.ID() == s2.ID() {
		t.Fatal("an intent's states must have different ids")
	}
}

func TestDecodeRejectsForeignRecords(t *testing.T) {
	if _, _, err := events.Decode(&kgo.Record{Value: []byte(`{}`)}); !errors.Is(err, events.ErrNotCloudEvent) {
		t.Fatalf("record without headers: %v", err)
	}
	r := &kgo.Record{Value: []byte(`{}`), Headers: []kgo.RecordHeader{
		{Key: events.HeaderSpecVersion, Value: []byte("1.0")},
		{Key: events.HeaderID, Value: []byte("x")},
		{Key: events.HeaderType, Value: []byte("payoutd.something.v9")},
	}}
	var ut *events.UnknownTypeError
	if _, _, err := events.Decode(r); !errors.As(err, &ut) {
		t.Fatalf("unknown type: %v", err)
	}
	if _, err := events.NewRecord("t", "s", events.IntentState{IntentID: "i"}); err == nil {
		t.Fatal("an event without a time must not be written")
	}
}

func TestSchemaName(t *testing.T) {
	for typ, want := range map[events.Type]string{
		events.TypePayoutRequested:       "payout-requested.v1",
		events.TypePayoutStatusChanged:   "payout-status-changed.v1",
		events.TypePayoutValidationError: "payout-validation-error.v1",
		events.TypeIntentState:           "intent-state.v1",
	} {
		if got := events.SchemaName(typ); got != want {
			t.Errorf("SchemaName(%s) = %s, want %s", typ, got, want)
		}
	}
}

func TestStatusOfEveryStatusEvent(t *testing.T) {
	status := map[events.Type]bool{events.TypePayoutStatusChanged: true, events.TypePayoutConfirmed: true,
		events.TypePayoutHashReceived: true, events.TypePayoutValidationError: true}
	for _, typ := range events.Types() {
		e := sample(t, typ)
		st, ok := events.StatusOf(e)
		if ok != status[typ] {
			t.Errorf("%s: StatusOf ok=%v", typ, ok)
		}
		if ok && (st.PayoutID == "" || st.State == "") {
			t.Errorf("%s: status %+v", typ, st)
		}
	}
}

// Two alerts about different things are two alerts, also when no payout,
// batch or intent id names them (a webhook that could not be typed).
func TestAlertIDsTellSubjectsApart(t *testing.T) {
	at := time.Now()
	a := events.Alert{Kind: "WEBHOOK_UNMAPPED", Subject: "sha256:aa", Message: "x", RaisedAt: at}
	b := events.Alert{Kind: "WEBHOOK_UNMAPPED", Subject: "sha256:bb", Message: "x", RaisedAt: at}
	again := events.Alert{Kind: "WEBHOOK_UNMAPPED", Subject: "sha256:aa", Message: "found again", RaisedAt: at.Add(time.Hour)}
	if a.ID() == b.ID() || a.ID() != again.ID() {
		t.Fatalf("alert ids: %s %s %s", a.ID(), b.ID(), again.ID())
	}
}

// Issue 11, scenario 14: an intent id paid again after the dedup horizon is
// a new payment; a ledger that drops repeats by ce_id must not drop its
// outcome. The same outcome redelivered keeps its id.
func TestIntentOutcomeIDsNameTheBatch(t *testing.T) {
	at := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	first := events.IntentOutcome{IntentID: "i-1", BatchID: "b-1", PayoutID: "p-1", Account: "a", Currency: "BTC",
		Amount: events.MustAmount("1"), Address: "bc1", PayoutState: "COMPLETED", ResolvedAt: at}
	again := first
	again.BatchID, again.PayoutID, again.ResolvedAt = "b-2", "p-2", at.AddDate(0, 1, 0)
	redelivered := first
	redelivered.ResolvedAt = at.Add(time.Hour)
	if (events.IntentSettled{IntentOutcome: first}).ID() == (events.IntentSettled{IntentOutcome: again}).ID() {
		t.Error("IntentSettled of two payments of one intent id share a ce_id")
	}
	if (events.IntentFailed{IntentOutcome: first}).ID() == (events.IntentFailed{IntentOutcome: again}).ID() {
		t.Error("IntentFailed of two payments of one intent id share a ce_id")
	}
	if (events.IntentSettled{IntentOutcome: first}).ID() != (events.IntentSettled{IntentOutcome: redelivered}).ID() {
		t.Error("a redelivered IntentSettled changed its ce_id")
	}
}
