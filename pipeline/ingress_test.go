package pipeline_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/calypso/sandbox"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
)

// Every Calypso payout event type, driven through the sandbox, reaches the
// outcomes topic typed, in order per payout, schema-valid, with the raw
// bytes archived beside it; and every intent ends in exactly one outcome.
func TestIngressEveryEventTypeEndToEnd(t *testing.T) {
	t.Parallel()
	w := newWebhookWorld(t, worldOptions{
		sandbox:   func(c *sandbox.Config) { c.Verification = true },
		pollAfter: time.Hour, // webhooks only: every event below comes from one
	})
	set := mustSchemas(t)

	type run struct {
		batch    events.BatchPlanned
		payout   string
		confirm  bool
		terminal calypso.State
	}
	runs := []*run{
		{confirm: true, terminal: calypso.StateCompleted},
		{confirm: true, terminal: calypso.StatePartial},
		{confirm: true, terminal: calypso.StateFailed},
		{confirm: false, terminal: calypso.StateCanceled},
	}
	intents := 0
	for _, r := range runs {
		forced := r.terminal
		if forced == calypso.StateCanceled {
			forced = ""
		}
		r.batch, r.payout = w.payout(t, 3, forced)
		intents += 3
	}
	for _, r := range runs {
		waitUntil(t, 30*time.Second, "payout "+r.payout+" pending confirmation", func() bool {
			p, _ := w.sb.Payout(r.payout)
			return p.State == calypso.StatePendingConfirmation
		})
		decide := w.sb.Cancel
		if r.confirm {
			decide = w.sb.Confirm
		}
		if err := decide(r.payout); err != nil {
			t.Fatal(err)
		}
	}

	// Wait for every intent's outcome and for every webhook to be delivered
	// and archived.
	w.outcomes.waitFor(t, time.Minute, "an outcome per intent", func(recs []*kgo.Record) bool {
		ids, _ := intentOutcomes(decodeAll(t, set, recs))
		return len(ids) == intents
	})
	var sent []sandbox.WebhookRecord
	waitUntil(t, time.Minute, "every webhook delivered", func() bool {
		sent = w.sb.Webhooks()
		for _, h := range sent {
			if !h.Delivered {
				return false
			}
		}
		return len(sent) > 0
	})
	raw := w.raw.waitFor(t, time.Minute, "every webhook archived", func(recs []*kgo.Record) bool { return len(recs) >= len(sent) })
	// Each webhook is archived at least once, and at most once per delivery
	// attempt: a commit whose 200 did not reach Calypso in time (503) is
	// archived again when Calypso resends it, with the same typed ce_id.
	copies := map[string]int{}
	for _, r := range raw {
		wh, err := calypso.ParseWebhook(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		copies[string(wh.ID)]++
	}
	for _, h := range sent {
		if n := copies[fmt.Sprint(h.ID)]; n < 1 || n > len(h.Attempts) {
			t.Fatalf("webhook %d archived %d times after %d delivery attempts", h.ID, n, len(h.Attempts))
		}
	}
	outs := decodeAll(t, set, w.outcomes.snapshot())

	// Raw archive: exact bytes, keyed by payout, with the audit headers.
	byID := map[string]sandbox.WebhookRecord{}
	for _, h := range sent {
		byID[fmt.Sprint(h.ID)] = h
	}
	typed := map[string]*kgo.Record{}
	for _, d := range outs {
		typed[d.meta.ID] = d.rec
	}
	for _, r := range raw {
		wh, err := calypso.ParseWebhook(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		h := byID[string(wh.ID)]
		if !bytes.Equal(r.Value, h.Body) || string(r.Key) != h.PayoutID {
			t.Fatalf("raw record %s/%s differs from webhook %d", r.Key, r.Value, h.ID)
		}
		for _, k := range []string{pipeline.HeaderReceivedAt, calypso.HeaderKey, calypso.HeaderSign, pipeline.HeaderRemoteAddr} {
			if headerOf(r, k) == "" {
				t.Fatalf("raw record %s lacks header %s", wh.ID, k)
			}
		}
		// Replay: the raw bytes alone give the typed record, byte for byte.
		evs, err := pipeline.OutcomeEvents(r.Value)
		if err != nil || len(evs) != 1 {
			t.Fatalf("replaying %s: %v %v", wh.ID, evs, err)
		}
		again, err := events.NewRecord(w.topics.Outcomes, "payoutd/ingress", evs[0])
		if err != nil {
			t.Fatal(err)
		}
		orig := typed[evs[0].ID()]
		if orig == nil || !bytes.Equal(orig.Value, again.Value) || !bytes.Equal(orig.Key, again.Key) {
			t.Fatalf("replaying webhook %s does not reproduce its outcome event %s", wh.ID, evs[0].ID())
		}
	}

	// Typed events per payout, in the order Calypso sent them.
	seenTypes := map[events.Type]bool{}
	for _, r := range runs {
		var want, got []string
		for _, h := range sent {
			if h.PayoutID == r.payout {
				want = append(want, fmt.Sprintf("%s/%d", h.EventType, h.ID))
			}
		}
		names := map[events.Type]string{
			events.TypePayoutStatusChanged: calypso.EventPayoutChangeStatus, events.TypePayoutConfirmed: calypso.EventPayoutConfirmed,
			events.TypePayoutHashReceived: calypso.EventPayoutHashReceived, events.TypePayoutValidationError: calypso.EventPayoutValidationError,
		}
		var last calypso.State
		ids := map[string]bool{} // as a ledger does: a redelivery repeats a ce_id
		for _, d := range outs {
			st, ok := events.StatusOf(d.ev)
			if !ok || st.PayoutID != r.payout || ids[d.meta.ID] {
				continue
			}
			ids[d.meta.ID] = true
			seenTypes[d.meta.Type] = true
			if st.Source != events.FromWebhook || st.BatchID != r.batch.BatchID || string(d.rec.Key) != r.payout {
				t.Fatalf("event %s: source %s batch %s key %s", d.meta.ID, st.Source, st.BatchID, d.rec.Key)
			}
			got = append(got, names[d.meta.Type]+"/"+st.WebhookEventID)
			last = calypso.State(st.State)
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("payout %s (%s):\n got %v\nwant %v", r.payout, r.terminal, got, want)
		}
		if last != r.terminal {
			t.Fatalf("payout %s ended %s, want %s", r.payout, last, r.terminal)
		}
	}
	for _, typ := range []events.Type{events.TypePayoutStatusChanged, events.TypePayoutConfirmed, events.TypePayoutHashReceived, events.TypePayoutValidationError} {
		if !seenTypes[typ] {
			t.Fatalf("no %s event", typ)
		}
	}

	// Per intent: exactly one outcome, matching what the sandbox did.
	ids, last := intentOutcomes(outs)
	for _, r := range runs {
		p, _ := w.sb.Payout(r.payout)
		failedAddr := map[string]bool{}
		for _, it := range p.Items {
			if it.State == "FAILED" {
				failedAddr[it.DepositAddress] = true
			}
		}
		if r.terminal == calypso.StatePartial && (len(failedAddr) == 0 || len(failedAddr) == len(p.Items)) {
			t.Fatalf("PARTIAL payout failed %d of %d items", len(failedAddr), len(p.Items))
		}
		for _, it := range r.batch.Items {
			if len(ids[it.IntentID]) != 1 {
				t.Fatalf("intent %s has %d outcomes", it.IntentID, len(ids[it.IntentID]))
			}
			switch e := last[it.IntentID].(type) {
			case events.IntentSettled:
				if failedAddr[it.Address] || e.PayoutState != string(r.terminal) || !e.Amount.Equal(it.Amount) || e.PayoutID != r.payout {
					t.Fatalf("intent %s settled wrongly: %+v", it.IntentID, e)
				}
			case events.IntentFailed:
				if !failedAddr[it.Address] && r.terminal != calypso.StateCanceled || e.Reason == "" || e.PayoutState != string(r.terminal) {
					t.Fatalf("intent %s failed wrongly: %+v", it.IntentID, e)
				}
			}
		}
	}
	// The tracker writes SUBMITTED, then the final state: the last state of
	// every intent is final, and no intent ever moves backwards.
	latest := map[string]events.IntentStatus{}
	w.intents.waitFor(t, time.Minute, "a final state per intent", func(recs []*kgo.Record) bool {
		latest = map[string]events.IntentStatus{}
		for _, d := range decodeAll(t, set, recs) {
			st := d.ev.(events.IntentState)
			if prev, ok := latest[st.IntentID]; ok && !st.State.Advances(prev) {
				t.Fatalf("intent %s moved from %s to %s", st.IntentID, prev, st.State)
			}
			latest[st.IntentID] = st.State
		}
		final := 0
		for _, s := range latest {
			if s.Final() {
				final++
			}
		}
		return final >= intents
	})
}

func headerOf(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Requests that fail a check get their status and publish nothing; only
// authentic webhooks reach Kafka.
func TestIngressRejectsBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	raw, outcomes := e.follow(e.topics.WebhooksRaw), e.follow(e.topics.Outcomes)
	in, _, _ := startIngress(t, e, func(c *pipeline.IngressConfig) {
		c.Keys = calypso.WebhookKeys{whPubKey: whSecret, "wh-pub-old": "wh-secret-old"}
	})

	batch := uuid.NewString()
	good := webhookBody(1, calypso.EventPayoutChangeStatus, "900001", "IN_PROGRESS", batch)
	unknownType := []byte(`{"requestId":"sub-1","id":2,"createdDate":"2026-01-02T10:00:00","eventType":"INVOICE_PAID","data":{"amount":1}}`)
	rotated := webhookBody(3, calypso.EventPayoutChangeStatus, "900003", "COMPLETED", batch)
	url := "http://ingress" + pipeline.WebhookPath
	big := append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("x"), 2<<20)...), `"}`...)

	cases := []struct {
		name string
		req  *http.Request
		want int
	}{
		{"wrong signature", signed(http.MethodPost, url, good, whPubKey, "not-the-secret"), 401},
		{"unknown key", signed(http.MethodPost, url, good, "wh-pub-unknown", whSecret), 401},
		{"no signature", httptest.NewRequest(http.MethodPost, url, bytes.NewReader(good)), 401},
		{"malformed signature", func() *http.Request {
			r := signed(http.MethodPost, url, good, whPubKey, whSecret)
			r.Header.Set(calypso.HeaderSign, "zz")
			return r
		}(), 401},
		{"2 MiB body", signed(http.MethodPost, url, big, whPubKey, whSecret), 413},
		{"wrong method", signed(http.MethodGet, url, good, whPubKey, whSecret), 405},
		{"wrong path", signed(http.MethodPost, "http://ingress/webhooks/other", good, whPubKey, whSecret), 404},
		{"unknown event type", signed(http.MethodPost, url, unknownType, whPubKey, whSecret), 200},
		{"rotated key", signed(http.MethodPost, url, rotated, "wh-pub-old", "wh-secret-old"), 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			in.ServeHTTP(rec, c.req)
			if rec.Code != c.want {
				t.Fatalf("status %d, want %d", rec.Code, c.want)
			}
			if c.want == 405 && rec.Header().Get("Allow") != http.MethodPost {
				t.Fatalf("405 without Allow: POST")
			}
		})
	}
	// A last good webhook fences the checks: once it is visible, everything
	// sent before it would be too.
	rec := httptest.NewRecorder()
	in.ServeHTTP(rec, signed(http.MethodPost, url, good, whPubKey, whSecret))
	if rec.Code != 200 {
		t.Fatalf("good webhook: %d", rec.Code)
	}
	got := raw.waitFor(t, 30*time.Second, "three archived webhooks", func(r []*kgo.Record) bool { return len(r) >= 3 })
	typed := outcomes.waitFor(t, 30*time.Second, "two typed events", func(r []*kgo.Record) bool { return len(r) >= 2 })
	var keys []string
	for _, r := range got {
		keys = append(keys, string(r.Key))
	}
	if len(got) != 3 || len(typed) != 2 {
		t.Fatalf("published %d raw (%v) and %d typed records, want 3 and 2", len(got), keys, len(typed))
	}
	if want := []string{"2", "900003", "900001"}; strings.Join(keys, ",") != strings.Join(want, ",") {
		t.Fatalf("raw keys %v, want %v", keys, want)
	}
	if !bytes.Equal(got[0].Value, unknownType) {
		t.Fatalf("unknown type archived as %s", got[0].Value)
	}
	if n := in.Stats.UnknownTypes.Load(); n != 1 {
		t.Fatalf("%d unknown types counted, want 1", n)
	}
	if a, b, c := in.Stats.Unauthorized.Load(), in.Stats.TooLarge.Load(), in.Stats.OK.Load(); a != 4 || b != 1 || c != 3 {
		t.Fatalf("counted %d 401, %d 413, %d 200; want 4, 1, 3", a, b, c)
	}
}

// With Kafka unreachable the ingress answers 503 and nothing is published;
// once Kafka is back, Calypso's retries land every webhook, raw and typed.
func TestIngressKafkaDown(t *testing.T) {
	t.Parallel()
	link := &partition{}
	link.set(true)
	w := newWebhookWorld(t, worldOptions{
		kafka:   []kgo.Opt{kgo.Dialer(link.dial)},
		ingress: func(c *pipeline.IngressConfig) { c.AckTimeout = 300 * time.Millisecond },
		sandbox: func(c *sandbox.Config) {
			// 19 retries 200ms apart (scaled): seconds of outage survive.
			c.Webhook.RetryGaps = make([]time.Duration, 19)
			for i := range c.Webhook.RetryGaps {
				c.Webhook.RetryGaps[i] = 40 * time.Second
			}
		},
	})
	set := mustSchemas(t)
	for range 2 {
		w.payout(t, 1, calypso.StateCompleted)
	}
	waitUntil(t, time.Minute, "six webhook deliveries refused with 503", func() bool {
		n := 0
		for _, h := range w.sb.Webhooks() {
			for _, a := range h.Attempts {
				if a.Status == http.StatusServiceUnavailable {
					n++
				}
				if a.Status == http.StatusOK {
					t.Fatalf("webhook %d accepted while Kafka is down", h.ID)
				}
			}
		}
		return n >= 6
	})
	if n := len(w.raw.snapshot()); n != 0 {
		t.Fatalf("%d raw records published while Kafka was down", n)
	}
	for _, d := range decodeAll(t, set, w.outcomes.snapshot()) {
		if d.meta.Type != events.TypePayoutSubmitted { // ours, written around the partition
			t.Fatalf("%s published while Kafka was down", d.meta.Type)
		}
	}

	link.set(false)
	var sent []sandbox.WebhookRecord
	waitUntil(t, time.Minute, "every webhook delivered after Kafka returned", func() bool {
		sent = w.sb.Webhooks()
		for _, h := range sent {
			if !h.Delivered {
				if h.GaveUp {
					t.Fatalf("sandbox gave up on webhook %d", h.ID)
				}
				return false
			}
		}
		return len(sent) == 10 // 2 × CREATION_IN_PROGRESS, CONFIRMED, IN_PROGRESS, hash, COMPLETED
	})
	raw := w.raw.waitFor(t, 30*time.Second, "every webhook archived", func(r []*kgo.Record) bool { return len(rawIDs(t, r)) == len(sent) })
	outs := decodeAll(t, set, w.outcomes.waitFor(t, 30*time.Second, "every webhook typed", func(r []*kgo.Record) bool {
		return len(r) >= len(sent)+2
	}))
	typedByEvent := map[string]bool{}
	for _, d := range outs {
		if st, ok := events.StatusOf(d.ev); ok {
			typedByEvent[st.WebhookEventID] = true
		}
	}
	for id := range rawIDs(t, raw) {
		if !typedByEvent[id] {
			t.Fatalf("webhook %s archived without its typed event", id)
		}
	}
	if len(typedByEvent) != len(sent) {
		t.Fatalf("%d webhooks typed, %d sent", len(typedByEvent), len(sent))
	}
	if w.ingress.Stats.Unavailable.Load() < 6 {
		t.Fatalf("stats: %d × 503", w.ingress.Stats.Unavailable.Load())
	}
}

func rawIDs(t *testing.T, recs []*kgo.Record) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	for _, r := range recs {
		wh, err := calypso.ParseWebhook(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		ids[string(wh.ID)] = true
	}
	return ids
}

// Many webhooks in flight at once all land.
func TestIngressConcurrentWebhooks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 3)
	raw := e.follow(e.topics.WebhooksRaw)
	in, _, _ := startIngress(t, e, func(c *pipeline.IngressConfig) {
		c.AckTimeout = time.Minute // not a timing test
	})
	const n = 400
	var wg sync.WaitGroup
	batch := uuid.NewString()
	for i := range n {
		wg.Go(func() {
			body := webhookBody(i+1, calypso.EventPayoutChangeStatus, fmt.Sprint(700000+i), "IN_PROGRESS", batch)
			rec := httptest.NewRecorder()
			in.ServeHTTP(rec, signed(http.MethodPost, "http://ingress"+pipeline.WebhookPath, body, whPubKey, whSecret))
			if rec.Code != 200 {
				t.Errorf("webhook %d: %d", i, rec.Code)
			}
		})
	}
	wg.Wait()
	raw.waitFor(t, 30*time.Second, "every webhook archived", func(r []*kgo.Record) bool { return len(r) == n })
}

func TestIngressServerHasTimeouts(t *testing.T) {
	t.Parallel()
	in, err := pipeline.NewIngress(pipeline.IngressConfig{Keys: calypso.WebhookKeys{whPubKey: whSecret}})
	if err != nil {
		t.Fatal(err)
	}
	srv := in.Server(":0")
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 || srv.Handler != in {
		t.Fatalf("server without timeouts: %+v", srv)
	}
	if _, err := pipeline.NewIngress(pipeline.IngressConfig{}); err == nil {
		t.Fatal("an ingress without webhook keys was accepted")
	}
}
