package pipeline

import (
	"encoding/json"
	"testing"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/schemas"
)

var requestSeeds = []string{
	`{"intentId":"i-1","account":"a","currency":"USDT_TRX","amount":"12.50","address":"T1"}`,
	`{"intentId":"i-2","account":"a","currency":"BTC","amount":0.00000001,"address":"bc1","comment":"","metadata":{"k":"v"},"requestedAt":"2026-11-24T09:00:00Z","executionDate":"2026-12-01T10:00:00.5+02:00"}`,
	`{"intentId":"i-3","account":"a","currency":"ETH","amount":1e-18,"address":"0x1"}`,
	`{"intentId":"i-4","account":"a","currency":"ETH","amount":"0","address":"0x1"}`,
	`{"intentId":"i-5","account":"a","currency":"ETH","amount":-1,"address":"0x1"}`,
	`{"intentId":"i-6","account":"a","currency":"eth","amount":"1","address":"0x1"}`,
	`{"intentId":"i-7","account":"a","currency":"ETH","amount":"1","address":"0x 1"}`,
	`{"intentId":"i-8","account":"a","currency":"ETH","amount":"1","address":"0x1","IntentId":"x"}`,
	`{"intentId":"i-9","account":"a","currency":"ETH","amount":"1","address":"0x1","comment":null}`,
	`{"intentId":"i-10","account":"a","currency":"ETH","amount":"1","address":"0x1","metadata":{"k":null}}`,
	`{"intentId":"i-11","account":"a","currency":"ETH","amount":"1","address":"0x1","executionDate":"2026-02-30T10:00:00Z"}`,
	`{"intentId":"i-\u00e9","account":"a","currency":"ETH","amount":"1","address":"0x1"}`,
	`{"intentId":"","account":"a","currency":"ETH","amount":"1","address":"0x1"}`,
	`{"intentId":"i-12","account":"a","currency":"ETH","amount":true,"address":"0x1"}`,
	`{"intentId":"i-13","account":"a","amount":"1","address":"0x1"}`,
	`[1,2]`, `null`, `{`, `"x"`,
}

// The fast path must never accept what the schema refuses, and must decode
// exactly what encoding/json decodes.
func FuzzFastRequest(f *testing.F) {
	set := schemas.MustLoad()
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		fast, ok := fastRequest(value)
		if !ok {
			return
		}
		if err := set.Validate(requestSchema, value); err != nil {
			t.Fatalf("fast path accepted what the schema refuses: %v\n%s", err, value)
		}
		var slow events.PayoutRequested
		if err := json.Unmarshal(value, &slow); err != nil {
			t.Fatalf("fast path accepted what encoding/json cannot decode: %v\n%s", err, value)
		}
		a, _ := json.Marshal(fast)
		b, _ := json.Marshal(slow)
		if string(a) != string(b) {
			t.Fatalf("fast path decoded\n%s\nencoding/json decoded\n%s", a, b)
		}
	})
}

// The fast path takes the plainly valid requests, and no others.
func TestFastRequestTakesThePlainCases(t *testing.T) {
	for i, s := range requestSeeds {
		_, ok := fastRequest([]byte(s))
		if want := i < 3; ok != want {
			t.Errorf("seed %d: fast path %v, want %v: %s", i, ok, want, s)
		}
	}
}
