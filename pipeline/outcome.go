package pipeline

import (
	"errors"
	"fmt"
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
)

// ErrUnmappedWebhook marks an authentic webhook of a known payout event type
// that carries too little to become a typed event (no payout id, an unknown
// state, no time). The ingress archives it raw and answers 200 anyway: a
// non-200 would only make Calypso resend the same bytes, and enough errors
// block the whole subscription. The tracker's polling recovers the state.
var ErrUnmappedWebhook = errors.New("webhook cannot be mapped to a typed event")

// OutcomeEvents maps one raw webhook body to the typed outcome events it
// announces. It is a pure function of the bytes — no clock, no receive time,
// no configuration — so replaying calypso.webhooks.raw reproduces the outcome
// events exactly: same ce_id, same value bytes.
//
// A body that is not a webhook envelope gives an error wrapping
// calypso.ErrMalformedWebhook; a payout event that cannot be typed gives
// ErrUnmappedWebhook; an event type payoutd does not know gives no events and
// no error.
func OutcomeEvents(raw []byte) ([]events.Event, error) {
	w, err := calypso.ParseWebhook(raw)
	if err != nil {
		return nil, err
	}
	return outcomeEvents(w)
}

// outcomeEvents is OutcomeEvents of a parsed webhook.
func outcomeEvents(w *calypso.Webhook) ([]events.Event, error) {
	if w.Payout == nil {
		return nil, nil // unknown event type: archived, not typed
	}
	p := w.Payout
	st := events.PayoutStatus{
		PayoutID:       string(p.ParentExternalID),
		BatchID:        p.IdempotencyKey,
		Source:         events.FromWebhook,
		WebhookEventID: string(w.ID),
		OccurredAt:     webhookTime(w),
	}
	if st.PayoutID == "" {
		return nil, fmt.Errorf("%w: %s %s has no parentExternalId", ErrUnmappedWebhook, w.EventType, w.ID)
	}
	if st.OccurredAt.IsZero() {
		return nil, fmt.Errorf("%w: %s %s has no createdDate", ErrUnmappedWebhook, w.EventType, w.ID)
	}
	state := w.State()
	if w.EventType == calypso.EventPayoutValidationError {
		// A validation error announces no state; Calypso raises it while
		// the payout is IN_PROGRESS (calypso-api.md §7.1).
		state = calypso.StateInProgress
		if p.PayoutStatus.Known() {
			state = p.PayoutStatus
		}
	}
	if !state.Known() {
		return nil, fmt.Errorf("%w: %s %s has unknown state %q", ErrUnmappedWebhook, w.EventType, w.ID, state)
	}
	st.State, st.Terminal = string(state), state.Terminal()
	if err := checkContract(st, p.Currency); err != nil {
		return nil, fmt.Errorf("%w: %s %s: %v", ErrUnmappedWebhook, w.EventType, w.ID, err)
	}

	switch w.EventType {
	case calypso.EventPayoutChangeStatus:
		return []events.Event{events.PayoutStatusChanged{PayoutStatus: st, Currency: p.Currency, Hash: p.Hash}}, nil
	case calypso.EventPayoutConfirmed:
		st.State, st.Terminal = string(calypso.StateConfirmed), false
		return []events.Event{events.PayoutConfirmed{PayoutStatus: st}}, nil
	case calypso.EventPayoutHashReceived:
		if p.Hash == "" {
			return nil, fmt.Errorf("%w: %s %s has no hash", ErrUnmappedWebhook, w.EventType, w.ID)
		}
		return []events.Event{events.PayoutHashReceived{PayoutStatus: st, Hash: p.Hash}}, nil
	case calypso.EventPayoutValidationError:
		return []events.Event{events.PayoutValidationError{PayoutStatus: st,
			WithdrawalID: string(p.DealWithdrawalID), ValidationStatus: p.ValidationStatus, Message: p.Message}}, nil
	}
	return nil, nil
}

// webhookTime is when the event happened: the envelope's createdDate, or,
// when Calypso left it out, the data's (the payout's creation time), which
// is still a fact of the bytes.
func webhookTime(w *calypso.Webhook) time.Time {
	if !w.CreatedDate.IsZero() {
		return w.CreatedDate.UTC()
	}
	return w.Payout.CreatedDate.UTC()
}

var currencyPattern = regexp.MustCompile(`^[A-Z0-9]+(_[A-Z0-9]+)*$`)

// checkContract refuses the values from the webhook that the outcome
// schemas would refuse (the rest is built by this package), so every event
// OutcomeEvents returns is valid by construction, and the ingress need not
// run a schema validator per request. FuzzOutcomeEvents holds it to that.
func checkContract(st events.PayoutStatus, currency string) error {
	if n := utf8.RuneCountInString(st.PayoutID); n > 256 {
		return fmt.Errorf("payout id of %d characters", n)
	}
	if currency != "" && (len(currency) > 32 || !currencyPattern.MatchString(currency)) {
		return fmt.Errorf("currency %q is not a currency code", currency)
	}
	if y := st.OccurredAt.Year(); y < 1 || y > 9999 {
		return fmt.Errorf("createdDate in year %d", y)
	}
	return nil
}
