package pipeline_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
)

// FuzzIngressHandler drives the handler's parsing path with arbitrary bodies,
// signed (so they get past the signature check) or not. It must never panic,
// and must answer 401 to unsigned bodies, 413 to bodies over the cap, and
// otherwise try Kafka whatever the body holds (an authentic body the parser
// refuses is archived too): with no producer running, that is a 503, never
// a 200.
func FuzzIngressHandler(f *testing.F) {
	in, err := pipeline.NewIngress(pipeline.IngressConfig{
		Keys: calypso.WebhookKeys{whPubKey: whSecret}, AckTimeout: time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(webhookBody(1, calypso.EventPayoutChangeStatus, "1001", "COMPLETED", uuid.NewString()), true)
	f.Add(webhookBody(2, calypso.EventPayoutValidationError, `"1002"`, "", ""), true)
	f.Add(webhookBody(3, calypso.EventPayoutHashReceived, "1e3", "IN_PROGRESS", "k"), true)
	f.Add([]byte(`{"id":"4","eventType":"PAYOUT_CONFIRMED","data":{"parentExternalId":null}}`), true)
	f.Add([]byte(`{"id":5,"eventType":"SOMETHING_NEW","data":"x"}`), true)
	f.Add([]byte(`{"id":6,"eventType":"PAYOUT_CHANGE_STATUS","data":{"payoutStatus":7}}`), true)
	f.Add([]byte(`[]`), true)
	f.Add([]byte(``), false)
	f.Fuzz(func(t *testing.T, body []byte, sign bool) {
		r := httptest.NewRequest(http.MethodPost, "http://ingress"+pipeline.WebhookPath, bytes.NewReader(body))
		if sign {
			r.Header.Set(calypso.HeaderKey, whPubKey)
			r.Header.Set(calypso.HeaderSign, calypso.SignBody(whSecret, body))
		}
		rec := httptest.NewRecorder()
		in.ServeHTTP(rec, r)
		var want int
		switch {
		case !sign:
			want = http.StatusUnauthorized
		case len(body) > 256<<10:
			want = http.StatusRequestEntityTooLarge
		default:
			want = http.StatusServiceUnavailable
		}
		if rec.Code != want {
			t.Fatalf("status %d, want %d", rec.Code, want)
		}
	})
}

// FuzzOutcomeEvents checks the mapping the ingress and any replay share: a
// pure function (twice the same bytes, twice the same records) whose events
// always encode and match their schemas.
func FuzzOutcomeEvents(f *testing.F) {
	set := mustSchemas(f)
	f.Add(webhookBody(1, calypso.EventPayoutChangeStatus, "1001", "PARTIAL", uuid.NewString()))
	f.Add(webhookBody(2, calypso.EventPayoutConfirmed, "1002", "", "b"))
	f.Add([]byte(`{"id":3,"createdDate":1767348000000,"eventType":"PAYOUT_HASH_RECEIVED","data":{"parentExternalId":9,"hash":"0x1"}}`))
	f.Add([]byte(`{"id":4,"createdDate":"2026-01-02T10:00:00+02:00","eventType":"PAYOUT_VALIDATION_ERROR","data":{"parentExternalId":9,"dealWithdrawalId":"w","validationStatus":"NO_BALANCE"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		a, errA := pipeline.OutcomeEvents(body)
		b, errB := pipeline.OutcomeEvents(body)
		if (errA == nil) != (errB == nil) || len(a) != len(b) {
			t.Fatalf("not deterministic: %v/%v, %d/%d events", errA, errB, len(a), len(b))
		}
		if errA != nil && !errors.Is(errA, calypso.ErrMalformedWebhook) && !errors.Is(errA, pipeline.ErrUnmappedWebhook) {
			t.Fatalf("unclassified error: %v", errA)
		}
		for i := range a {
			ra, err := events.NewRecord("outcomes", "payoutd/ingress", a[i])
			if err != nil {
				t.Fatalf("encoding %T: %v", a[i], err)
			}
			rb, _ := events.NewRecord("outcomes", "payoutd/ingress", b[i])
			if !bytes.Equal(ra.Value, rb.Value) || a[i].ID() != b[i].ID() {
				t.Fatalf("not deterministic: %s vs %s", ra.Value, rb.Value)
			}
			// The ingress relies on this instead of validating per request.
			if err := set.Validate(events.SchemaName(a[i].Type()), ra.Value); err != nil {
				t.Fatalf("OutcomeEvents returned an event its schema refuses: %v\n%s", err, ra.Value)
			}
		}
	})
}

func benchBodies(n int) [][]byte {
	out := make([][]byte, n)
	batch := uuid.NewString()
	for i := range out {
		out[i] = webhookBody(i+1, calypso.EventPayoutChangeStatus, fmt.Sprint(800000+i), "IN_PROGRESS", batch)
	}
	return out
}
