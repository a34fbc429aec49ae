package calypso

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strings"
	"sync"
)

// Webhook verification errors; each failure has its own so the ingress can
// count them apart. None of them carries a secret.
var (
	ErrMissingSignature   = errors.New("calypso: webhook: missing Key or Sign header")
	ErrUnknownKey         = errors.New("calypso: webhook: unknown subscription key")
	ErrMalformedSignature = errors.New("calypso: webhook: Sign is not a 128-digit hex HMAC-SHA512")
	ErrSignatureMismatch  = errors.New("calypso: webhook: signature mismatch")
	ErrMalformedWebhook   = errors.New("calypso: webhook: malformed body")
)

// WebhookKeys maps a subscription's public key (the Key header) to its
// secret. Holding several entries lets keys rotate without dropping events.
type WebhookKeys map[string]Secret

// WebhookVerifier checks the Sign header of incoming webhooks. It is safe
// for concurrent use.
type WebhookVerifier struct {
	keys map[string]*webhookKey
}

// webhookKey is a subscription's secret and HMACs keyed with it, kept for
// reuse: a fresh HMAC-SHA512 costs two more blocks and its allocations on
// every webhook.
type webhookKey struct {
	secret Secret
	macs   sync.Pool // of hash.Hash, reset
}

// NewWebhookVerifier returns a verifier accepting any of keys. The map is
// copied.
func NewWebhookVerifier(keys WebhookKeys) *WebhookVerifier {
	cp := make(map[string]*webhookKey, len(keys))
	for k, v := range keys {
		cp[k] = &webhookKey{secret: v}
	}
	return &WebhookVerifier{keys: cp}
}

// Verify checks that sign is the HMAC-SHA512 of the raw body under the
// secret of subscription key. Hex case is ignored; the comparison is
// constant-time.
func (v *WebhookVerifier) Verify(key, sign string, body []byte) error {
	if key == "" || sign == "" {
		return ErrMissingSignature
	}
	k, ok := v.keys[key]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownKey, truncate(key, 64))
	}
	var got, want [sha512.Size]byte
	if sign = strings.TrimSpace(sign); len(sign) != hex.EncodedLen(sha512.Size) {
		return ErrMalformedSignature
	}
	if _, err := hex.Decode(got[:], []byte(sign)); err != nil {
		return ErrMalformedSignature
	}
	m, _ := k.macs.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha512.New, []byte(k.secret.Reveal()))
	}
	m.Write(body)
	m.Sum(want[:0])
	m.Reset()
	k.macs.Put(m)
	if !hmac.Equal(got[:], want[:]) {
		return ErrSignatureMismatch
	}
	return nil
}

// VerifyRequest is Verify with the Key and Sign headers of r.
func (v *WebhookVerifier) VerifyRequest(r *http.Request, body []byte) error {
	return v.Verify(r.Header.Get(HeaderKey), r.Header.Get(HeaderSign), body)
}

// Webhook event types payoutd understands.
const (
	EventPayoutChangeStatus    = "PAYOUT_CHANGE_STATUS"
	EventPayoutConfirmed       = "PAYOUT_CONFIRMED"
	EventPayoutHashReceived    = "PAYOUT_HASH_RECEIVED"
	EventPayoutValidationError = "PAYOUT_VALIDATION_ERROR"
)

// Webhook is a parsed webhook envelope.
type Webhook struct {
	// RequestID is the subscription's requestId.
	RequestID string `json:"requestId"`
	// ID is the event id; with EventType it identifies a delivery for
	// deduplication (Calypso retries resend the same id).
	ID          ID     `json:"id"`
	CreatedDate Time   `json:"createdDate"`
	Level       string `json:"level"`
	Service     string `json:"service"`
	EventType   string `json:"eventType"`
	// Data is the raw event data, kept for every event type, known or not.
	Data json.RawMessage `json:"data"`
	// Payout is Data decoded, for the four payout event types; nil otherwise.
	Payout *PayoutEvent `json:"-"`
}

// PayoutEvent is the data of a payout webhook. Which fields are set depends
// on the event type.
type PayoutEvent struct {
	Type string `json:"type"`
	// ParentExternalID is the Calypso id of the (mass) payout.
	ParentExternalID ID     `json:"parentExternalId"`
	PayoutStatus     State  `json:"payoutStatus"`
	Hash             string `json:"hash"`
	IdempotencyKey   string `json:"idempotencyKey"`
	Currency         string `json:"currency"`
	// ExternalID is the merchant's id of the transaction.
	ExternalID  string `json:"externalId"`
	CreatedDate Time   `json:"createdDate"`
	// Message, DealWithdrawalID and ValidationStatus come with
	// PAYOUT_VALIDATION_ERROR.
	Message          string `json:"message"`
	DealWithdrawalID ID     `json:"dealWithdrawalId"`
	ValidationStatus string `json:"validationStatus"`
	// Approved lists approvers on PAYOUT_CONFIRMED; its shape is not
	// documented, so it is kept raw.
	Approved json.RawMessage `json:"approved"`
}

// ParseWebhook decodes a webhook body. Unknown event types parse (with
// Payout nil and Data kept), so the caller can archive and acknowledge them.
// It fails only on a body that is not a JSON object, lacks an id or event
// type, or whose fields have impossible types.
func ParseWebhook(body []byte) (*Webhook, error) {
	if w, ok := parseWebhookFast(body); ok {
		return w, nil
	}
	return parseWebhookSlow(body)
}

// parseWebhookSlow is ParseWebhook with encoding/json: the envelope, then
// the data of a payout event. It decides every body the fast path is not
// sure of, and names the error.
func parseWebhookSlow(body []byte) (*Webhook, error) {
	var w Webhook
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedWebhook, err)
	}
	if w.ID == "" {
		return nil, fmt.Errorf("%w: no id", ErrMalformedWebhook)
	}
	if w.EventType == "" {
		return nil, fmt.Errorf("%w: no eventType", ErrMalformedWebhook)
	}
	switch w.EventType {
	case EventPayoutChangeStatus, EventPayoutConfirmed, EventPayoutHashReceived, EventPayoutValidationError:
		d := bytes.TrimSpace(w.Data)
		if len(d) == 0 || d[0] != '{' {
			return nil, fmt.Errorf("%w: %s data is not an object", ErrMalformedWebhook, w.EventType)
		}
		var pe PayoutEvent
		if err := json.Unmarshal(d, &pe); err != nil {
			return nil, fmt.Errorf("%w: %s data: %w", ErrMalformedWebhook, w.EventType, err)
		}
		w.Payout = &pe
	}
	return &w, nil
}

// PayoutID returns the Calypso payout id the event is about
// (parentExternalId), or "" for non-payout events.
func (w *Webhook) PayoutID() string {
	if w.Payout == nil {
		return ""
	}
	return string(w.Payout.ParentExternalID)
}

// State returns the payout state the event announces, or "" when it
// announces none (validation errors, unknown events). PAYOUT_CONFIRMED means
// CONFIRMED; a hash means the payout is IN_PROGRESS at least.
func (w *Webhook) State() State {
	if w.Payout == nil {
		return ""
	}
	switch w.EventType {
	case EventPayoutChangeStatus:
		return w.Payout.PayoutStatus
	case EventPayoutConfirmed:
		return StateConfirmed
	case EventPayoutHashReceived:
		if w.Payout.PayoutStatus != "" {
			return w.Payout.PayoutStatus
		}
		return StateInProgress
	}
	return ""
}

// DedupKey identifies a delivery: Calypso's retries resend the same event id.
func (w *Webhook) DedupKey() string { return string(w.ID) + "/" + w.EventType }
