package calypso_test

import (
	"errors"
	"testing"

	"github.com/payoutd/payoutd/calypso"
)

func FuzzParseWebhook(f *testing.F) {
	f.Add([]byte(sampleWebhook))
	f.Add([]byte(`{"id":1,"eventType":"PAYOUT_CONFIRMED","data":{"parentExternalId":"1"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		w, err := calypso.ParseWebhook(body)
		if err != nil {
			if w != nil {
				t.Fatal("error with a result")
			}
			return
		}
		// Every accessor must be safe on anything that parsed.
		_ = w.PayoutID()
		_ = w.State().Terminal()
		_ = w.State().Rank()
		_ = w.DedupKey()
		if w.ID == "" || w.EventType == "" {
			t.Fatalf("parsed without id or event type: %q", body)
		}
	})
}

func FuzzVerify(f *testing.F) {
	secret := calypso.Secret("fuzz-secret")
	v := calypso.NewWebhookVerifier(calypso.WebhookKeys{"k": secret})
	f.Add("k", calypso.SignBody(secret, []byte(sampleWebhook)), []byte(sampleWebhook))
	f.Add("k", "", []byte("{}"))
	f.Add("x", "00", []byte(nil))
	f.Fuzz(func(t *testing.T, key, sign string, body []byte) {
		err := v.Verify(key, sign, body)
		if err == nil {
			// Only a correct signature passes.
			if key != "k" || calypso.SignBody(secret, body) == "" {
				t.Fatalf("accepted key %q", key)
			}
			return
		}
		for _, want := range []error{calypso.ErrMissingSignature, calypso.ErrUnknownKey, calypso.ErrMalformedSignature, calypso.ErrSignatureMismatch} {
			if errors.Is(err, want) {
				return
			}
		}
		t.Fatalf("unclassified error %v", err)
	})
}
