package calypso

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

// fastSeeds are bodies at the edges of what the fast path reads; each must
// give what encoding/json gives, whether or not the fast path takes it.
var fastSeeds = []string{
	`{"requestId":"bf9348b7","id":42,"createdDate":"2025-01-01T10:00:00.000000","level":"SUCCESS","service":"PAYOUT","eventType":"PAYOUT_CHANGE_STATUS",` +
		`"data":{"type":"PAYOUT_CHANGE_STATUS","parentExternalId":12345,"payoutStatus":"COMPLETED","hash":"0xabc","currency":"USDT_TRX",` +
		`"idempotencyKey":"123e4567-e89b-12d3-a456-426614174000","externalId":"w-1","createdDate":"2025-01-01T09:58:00.000000","someNewField":{"x":[1,2.5e3,null,true]}}}`,
	`{"id":"7","eventType":"PAYOUT_CONFIRMED","data":{"parentExternalId":"9","approved":[{"name":"x"}]}}`,
	`{"id":8,"eventType":"PAYOUT_HASH_RECEIVED","data":{"parentExternalId":9,"hash":"0x1"}}`,
	`{"id":9,"eventType":"PAYOUT_VALIDATION_ERROR","data":{"parentExternalId":9,"dealWithdrawalId":77,"validationStatus":"NOT_ENOUGH_FUNDS","message":"m"}}`,
	`{"id":10,"eventType":"INVOICE_CHANGE_STATUS","data":{"whatever":[1,2]}}`,
	`{"id":10,"eventType":"INVOICE_CHANGE_STATUS","data":[1,"x"]}`,
	`{"id":11,"createdDate":"2025-01-01T10:00:00.1+01:00","eventType":"PAYOUT_CHANGE_STATUS","data":{"parentExternalId":1,"payoutStatus":"IN_PROGRESS"}}`,
	` { "id" : -0.5e+2 , "eventType" : "X" , "createdDate" : 1735725600000 } `,
	`{"id":null,"eventType":"X"}`,
	`{"id":1,"eventType":"X","createdDate":null}`,
	`{"id":1,"eventType":"X","createdDate":""}`,
	`{"id":1,"eventType":"PAYOUT_CONFIRMED","data":null}`,
	`{"id":1,"eventType":"X","data":null}`,
	`{"id":1,"eventType":"PAYOUT_CONFIRMED","data":{"approved":null,"parentExternalId":"1"}}`,
	`{"id":1,"eventType":"PAYOUT_CONFIRMED","data":"x"}`,
	`{"id":1,"eventType":"PAYOUT_CONFIRMED"}`,
	`{"id":1,"eventType":"X","createdDate":"soon"}`,
	`{"id":1,"eventType":"X","createdDate":1.5}`,
	`{"id":true,"eventType":"X"}`,
	`{"id":{},"eventType":"X"}`,
	`{"id":"a\u0062","eventType":"X\n"}`,
	`{"id":1,"id":2,"eventType":"X"}`,
	`{"ID":1,"eventType":"X"}`,
	`{"id":1,"EventType":"X","eventType":"Y"}`,
	`{"id":1,"event_type":"X","eventType":"Y"}`,
	`{"id":1,"eventType":"X","ſervice":"s"}`,
	`{"id":1,"eventType":"PAYOUT_CONFIRMED","data":{"parentExternalId":1,"Hash":"h"}}`,
	`{"id":1,"eventType":"PAYOUT_CONFIRMED","data":{"parentExternalId":1,"hash":"h","hash":"i"}}`,
	`{"id":1,"eventType":"X","level":5}`,
	`{"id":1,"eventType":"X","level":null}`,
	`{"id":1,"eventType":"X","level":"\xff"}`,
	`{"id":1,"eventType":"X","other":"\xff\u00e9"}`,
	`{"id":1,"eventType":"X"} x`,
	`{"id":1,"eventType":"X",}`,
	`{"id":01,"eventType":"X"}`,
	`{"id":1,"eventType":"X","data":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
	`[1]`, `null`, `"x"`, ``, `{`, `{"id":1,"eventType":"X","data":{"a":1`,
}

// TestParseWebhookFastAgrees holds the fast path to encoding/json on the
// edge cases above, and checks it takes the common form itself.
func TestParseWebhookFastAgrees(t *testing.T) {
	for _, body := range fastSeeds {
		checkFastAgrees(t, []byte(body))
	}
	if _, ok := parseWebhookFast([]byte(fastSeeds[0])); !ok {
		t.Fatal("the fast path refused a plain webhook")
	}
}

// FuzzParseWebhookFast is the differential test of the two decoders: the
// fast path may decline any body, but what it accepts encoding/json must
// accept and decode to the same Webhook.
func FuzzParseWebhookFast(f *testing.F) {
	for _, body := range fastSeeds {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkFastAgrees(t, body) })
}

func checkFastAgrees(t *testing.T, body []byte) {
	t.Helper()
	fast, ok := parseWebhookFast(body)
	slow, err := parseWebhookSlow(body)
	if !ok {
		if fast != nil {
			t.Fatalf("%q: declined with a result", body)
		}
		return
	}
	if err != nil {
		t.Fatalf("%q: fast path accepted what encoding/json refuses: %v", body, err)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("%q: decoded differently:\nfast %#v\n     %#v\nslow %#v\n     %#v", body, fast, fast.Payout, slow, slow.Payout)
	}
}

// parseTimeInOrder is ParseTime as it was: the three layouts in order.
func parseTimeInOrder(s string) (time.Time, error) {
	for _, layout := range [...]string{"2006-01-02T15:04:05Z07:00", "2006-01-02T15:04:05Z0700", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, errors.New("invalid")
}

// FuzzParseTime holds ParseTime, which tries the zone-less layout first,
// to what trying the layouts in order gives.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{
		"2025-01-01T10:00:00", "2025-01-01T10:00:00.000000", "2025-01-01T10:00:00.123456789", "2025-01-01T10:00:00,5",
		"2025-01-01T10:00:00Z", "2025-01-01T10:00:00.1Z", "2025-01-01T10:00:00+01:00", "2025-01-01T10:00:00.1-0130",
		"2025-01-01T10:00:00 ", "2025-01-01T10:00:00.", "2025-01-01 10:00:00", "2025-02-30T10:00:00", "soon", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTime(s)
		want, wantErr := parseTimeInOrder(s)
		if (err == nil) != (wantErr == nil) || !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: got %v, %v; in order %v, %v", s, got, err, want, wantErr)
		}
	})
}
