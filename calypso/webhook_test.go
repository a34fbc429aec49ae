package calypso_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/payoutd/payoutd/calypso"
)

const sampleWebhook = `{"requestId":"bf9348b7-2c14-46d7-868c-b597852da319","id":42,"createdDate":"2025-01-01T10:00:00.000000",
 "level":"SUCCESS","service":"PAYOUT","eventType":"PAYOUT_CHANGE_STATUS",
 "data":{"type":"PAYOUT_CHANGE_STATUS","parentExternalId":12345,"payoutStatus":"COMPLETED",
         "hash":"0xabc","currency":"USDT_TRX","idempotencyKey":"123e4567-e89b-12d3-a456-426614174000","externalId":"w-1",
         "createdDate":"2025-01-01T09:58:00.000000","someNewField":{"x":1}}}`

func TestWebhookVerify(t *testing.T) {
	body := []byte(sampleWebhook)
	oldKey, newKey := "pub-old", "pub-new"
	oldSecret, newSecret := calypso.Secret("secret-old"), calypso.Secret("secret-new")
	// Two keys at once: the rotation window.
	v := calypso.NewWebhookVerifier(calypso.WebhookKeys{oldKey: oldSecret, newKey: newSecret})
	good := calypso.SignBody(newSecret, body)
	tests := []struct {
		name      string
		key, sign string
		body      []byte
		want      error
	}{
		{"good", newKey, good, body, nil},
		{"good uppercase hex", newKey, strings.ToUpper(good), body, nil},
		{"rotated: old key still valid", oldKey, calypso.SignBody(oldSecret, body), body, nil},
		{"sign of other key", oldKey, good, body, calypso.ErrSignatureMismatch},
		{"body changed", newKey, good, append([]byte(" "), body...), calypso.ErrSignatureMismatch},
		{"missing sign", newKey, "", body, calypso.ErrMissingSignature},
		{"missing key", "", good, body, calypso.ErrMissingSignature},
		{"unknown key", "pub-other", good, body, calypso.ErrUnknownKey},
		{"not hex", newKey, "zz" + good[2:], body, calypso.ErrMalformedSignature},
		{"too short", newKey, good[:64], body, calypso.ErrMalformedSignature},
		{"sha256 length", newKey, strings.Repeat("ab", 32), body, calypso.ErrMalformedSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.Verify(tt.key, tt.sign, tt.body)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("want ok, got %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("want %v, got %v", tt.want, err)
			}
		})
	}
	t.Run("after rotation old key is refused", func(t *testing.T) {
		v := calypso.NewWebhookVerifier(calypso.WebhookKeys{newKey: newSecret})
		if err := v.Verify(oldKey, calypso.SignBody(oldSecret, body), body); !errors.Is(err, calypso.ErrUnknownKey) {
			t.Fatalf("want ErrUnknownKey, got %v", err)
		}
	})
}

func TestParseWebhook(t *testing.T) {
	t.Run("payout change status", func(t *testing.T) {
		w, err := calypso.ParseWebhook([]byte(sampleWebhook))
		if err != nil {
			t.Fatal(err)
		}
		if w.ID != "42" || w.EventType != calypso.EventPayoutChangeStatus || w.PayoutID() != "12345" {
			t.Fatalf("envelope: %+v", w)
		}
		if w.State() != calypso.StateCompleted || !w.State().Terminal() {
			t.Fatalf("state %s", w.State())
		}
		if w.CreatedDate.Format("2006-01-02T15:04:05Z07:00") != "2025-01-01T10:00:00Z" {
			t.Fatalf("createdDate %v", w.CreatedDate)
		}
		if w.Payout.Hash != "0xabc" || w.Payout.ExternalID != "w-1" || w.Payout.Currency != "USDT_TRX" {
			t.Fatalf("data: %+v", w.Payout)
		}
	})
	tests := []struct {
		name      string
		body      string
		wantState calypso.State
		wantID    string
	}{
		{"confirmed", `{"id":"7","eventType":"PAYOUT_CONFIRMED","data":{"parentExternalId":"9","approved":[{"name":"x"}]}}`, calypso.StateConfirmed, "9"},
		{"hash received", `{"id":8,"eventType":"PAYOUT_HASH_RECEIVED","data":{"parentExternalId":9,"hash":"0x1"}}`, calypso.StateInProgress, "9"},
		{"validation error", `{"id":9,"eventType":"PAYOUT_VALIDATION_ERROR","data":{"parentExternalId":9,"dealWithdrawalId":77,"validationStatus":"NOT_ENOUGH_FUNDS","message":"m"}}`, "", "9"},
		{"unknown type kept", `{"id":10,"eventType":"INVOICE_CHANGE_STATUS","data":{"whatever":[1,2]}}`, "", ""},
		{"zoned date", `{"id":11,"createdDate":"2025-01-01T10:00:00.1+01:00","eventType":"PAYOUT_CHANGE_STATUS","data":{"parentExternalId":1,"payoutStatus":"IN_PROGRESS"}}`, calypso.StateInProgress, "1"},
		{"new state", `{"id":12,"eventType":"PAYOUT_CHANGE_STATUS","data":{"parentExternalId":1,"payoutStatus":"ON_HOLD"}}`, "ON_HOLD", "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := calypso.ParseWebhook([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if w.State() != tt.wantState || w.PayoutID() != tt.wantID {
				t.Fatalf("state %q payout %q, want %q %q", w.State(), w.PayoutID(), tt.wantState, tt.wantID)
			}
			if len(w.Data) == 0 {
				t.Fatal("raw data must be kept")
			}
		})
	}
	bad := []struct{ name, body string }{
		{"not json", `hello`},
		{"array", `[1]`},
		{"no id", `{"eventType":"PAYOUT_CONFIRMED","data":{}}`},
		{"no event type", `{"id":1,"data":{}}`},
		{"data not object", `{"id":1,"eventType":"PAYOUT_CONFIRMED","data":"x"}`},
		{"bad date", `{"id":1,"eventType":"X","createdDate":"soon"}`},
	}
	for _, tt := range bad {
		t.Run("reject "+tt.name, func(t *testing.T) {
			if _, err := calypso.ParseWebhook([]byte(tt.body)); !errors.Is(err, calypso.ErrMalformedWebhook) && err == nil {
				t.Fatalf("want error")
			}
		})
	}
}
