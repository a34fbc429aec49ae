package pipeline_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
	"github.com/payoutd/payoutd/schemas"
)

// OutcomeEvents refuses what the outcome schemas would refuse, so the
// ingress can publish its events without validating them per request.
func TestOutcomeEventsRefusesWhatTheSchemaWould(t *testing.T) {
	body := func(payoutID, currency string) []byte {
		return []byte(fmt.Sprintf(`{"requestId":"r","id":7,"createdDate":"2026-11-24T10:00:00.123456","level":"SUCCESS","service":"PAYOUT",`+
			`"eventType":"PAYOUT_CHANGE_STATUS","data":{"type":"PAYOUT_CHANGE_STATUS","parentExternalId":%q,"payoutStatus":"COMPLETED",`+
			`"currency":%q,"idempotencyKey":"k","createdDate":"2026-11-24T09:00:00"}}`, payoutID, currency))
	}
	for name, tc := range map[string]struct {
		body []byte
		ok   bool
	}{
		"valid":              {body("7341", "USDT_TRX"), true},
		"no currency":        {body("7341", ""), true},
		"lower-case":         {body("7341", "usdt_trx"), false},
		"currency with dash": {body("7341", "USDT-TRC20"), false},
		"long currency":      {body("7341", strings.Repeat("A", 33)), false},
		"long payout id":     {body(strings.Repeat("9", 257), "BTC"), false},
	} {
		t.Run(name, func(t *testing.T) {
			evs, err := pipeline.OutcomeEvents(tc.body)
			if !tc.ok {
				if !errors.Is(err, pipeline.ErrUnmappedWebhook) || len(evs) != 0 {
					t.Fatalf("got %d events, err %v; want ErrUnmappedWebhook", len(evs), err)
				}
				return
			}
			if err != nil || len(evs) != 1 {
				t.Fatalf("got %d events, err %v", len(evs), err)
			}
			rec, err := events.NewRecord("outcomes", pipeline.SourceIngress, evs[0])
			if err != nil {
				t.Fatal(err)
			}
			if err := schemas.MustLoad().Validate(events.SchemaName(evs[0].Type()), rec.Value); err != nil {
				t.Fatal(err)
			}
		})
	}
}
