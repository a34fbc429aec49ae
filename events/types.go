package events

import (
	"strconv"
	"time"
)

// Type is an event's CloudEvents type; its last dot-segment is the version.
type Type string

// The event types of payoutd, version 1.
const (
	TypePayoutRequested       Type = "payoutd.payout.requested.v1"
	TypeBatchPlanned          Type = "payoutd.batch.planned.v1"
	TypeIntentState           Type = "payoutd.intent.state.v1"
	TypePayoutSubmitted       Type = "payoutd.payout.submitted.v1"
	TypePayoutRejected        Type = "payoutd.payout.rejected.v1"
	TypePayoutDeferred        Type = "payoutd.payout.deferred.v1"
	TypePayoutStatusChanged   Type = "payoutd.payout.status-changed.v1"
	TypePayoutConfirmed       Type = "payoutd.payout.confirmed.v1"
	TypePayoutHashReceived    Type = "payoutd.payout.hash-received.v1"
	TypePayoutValidationError Type = "payoutd.payout.validation-error.v1"
	TypeIntentSettled         Type = "payoutd.intent.settled.v1"
	TypeIntentFailed          Type = "payoutd.intent.failed.v1"
	TypePayoutUndecided       Type = "payoutd.payout.undecided.v1"
	TypeAlert                 Type = "payoutd.alert.v1"
	TypeBatchState            Type = "payoutd.batch.state.v1"
)

// Event is one typed payoutd event.
type Event interface {
	// Type is the CloudEvents type, versioned.
	Type() Type
	// ID is the deterministic ce_id: the same facts give the same id.
	ID() string
	// Key is the Kafka record key the event is written under.
	Key() string
	// Time is when the fact the event describes happened (ce_time).
	Time() time.Time
}

// Offset locates a Kafka record, so a batch can name the requests it came from.
type Offset struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// PayoutRequested is the input: an upstream system asks for one payment.
// It is keyed by intent id on the requests topic.
type PayoutRequested struct {
	IntentID string `json:"intentId"`
	Account  string `json:"account"`
	Currency string `json:"currency"`
	Amount   Amount `json:"amount"`
	Address  string `json:"address"`
	// ExecutionDate schedules the payment; nil means as soon as possible.
	ExecutionDate *time.Time        `json:"executionDate,omitempty"`
	Comment       string            `json:"comment,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	RequestedAt   *time.Time        `json:"requestedAt,omitempty"`
}

func (e PayoutRequested) Type() Type  { return TypePayoutRequested }
func (e PayoutRequested) ID() string  { return deriveID(e.Type(), e.IntentID) }
func (e PayoutRequested) Key() string { return e.IntentID }
func (e PayoutRequested) Time() time.Time {
	if e.RequestedAt != nil {
		return *e.RequestedAt
	}
	return time.Time{}
}

// BatchItem is one payment of a batch. A batch never holds an address twice,
// so batch id + address identifies an item at Calypso.
type BatchItem struct {
	IntentID string `json:"intentId"`
	Address  string `json:"address"`
	Amount   Amount `json:"amount"`
	Comment  string `json:"comment,omitempty"`
	Source   Offset `json:"source"`
	// Traceparent is the W3C trace context of the intent's request record,
	// when payoutd traces: the batch's create call links to it and the
	// intent's outcome joins its trace. It never changes a batch's id.
	Traceparent string `json:"traceparent,omitempty"`
}

// BatchPlanned is the write-ahead record of one mass payout to be created at
// Calypso. The batcher writes it in the same transaction as the consumed
// offsets; the submitter creates it at Calypso with IdempotencyKey.
type BatchPlanned struct {
	BatchID        string      `json:"batchId"`
	IdempotencyKey string      `json:"idempotencyKey"`
	Account        string      `json:"account"`
	Currency       string      `json:"currency"`
	ExecutionDate  *time.Time  `json:"executionDate,omitempty"`
	Items          []BatchItem `json:"items"`
	// Total is the exact sum of the items' amounts.
	Total     Amount    `json:"total"`
	PlannedAt time.Time `json:"plannedAt"`
}

func (e BatchPlanned) Type() Type      { return TypeBatchPlanned }
func (e BatchPlanned) ID() string      { return deriveID(e.Type(), e.BatchID) }
func (e BatchPlanned) Key() string     { return e.BatchID }
func (e BatchPlanned) Time() time.Time { return e.PlannedAt }

// Sum adds the items' amounts; it equals Total in every batch payoutd writes.
func (e BatchPlanned) Sum() Amount {
	var s Amount
	for _, it := range e.Items {
		s = s.Add(it.Amount)
	}
	return s
}

// IntentStatus is where an intent stands.
type IntentStatus string

const (
	StatusBatched   IntentStatus = "BATCHED"
	StatusSubmitted IntentStatus = "SUBMITTED"
	StatusSettled   IntentStatus = "SETTLED"
	StatusFailed    IntentStatus = "FAILED"
)

// Final reports whether the intent can change no more.
func (s IntentStatus) Final() bool { return s == StatusSettled || s == StatusFailed }

// Rank orders the states an intent moves through: BATCHED < SUBMITTED <
// SETTLED = FAILED. An unknown state ranks 0.
func (s IntentStatus) Rank() int {
	switch s {
	case StatusBatched:
		return 1
	case StatusSubmitted:
		return 2
	case StatusSettled, StatusFailed:
		return 3
	}
	return 0
}

// Advances reports whether an intent in state from may be moved to s: never
// backwards, and never out of a final state.
func (s IntentStatus) Advances(from IntentStatus) bool {
	if from.Final() {
		return false
	}
	return s.Rank() > from.Rank()
}

// IntentState is an intent's latest state on the compacted intents topic,
// keyed by intent id. It is also the batcher's dedup index.
type IntentState struct {
	IntentID  string       `json:"intentId"`
	State     IntentStatus `json:"state"`
	BatchID   string       `json:"batchId,omitempty"`
	PayoutID  string       `json:"payoutId,omitempty"`
	Code      string       `json:"code,omitempty"`
	Reason    string       `json:"reason,omitempty"`
	UpdatedAt time.Time    `json:"updatedAt"`
}

func (e IntentState) Type() Type      { return TypeIntentState }
func (e IntentState) ID() string      { return deriveID(e.Type(), e.IntentID, string(e.State)) }
func (e IntentState) Key() string     { return e.IntentID }
func (e IntentState) Time() time.Time { return e.UpdatedAt }

// PayoutSubmitted says Calypso accepted a batch as mass payout PayoutID.
type PayoutSubmitted struct {
	BatchID        string `json:"batchId"`
	PayoutID       string `json:"payoutId"`
	IdempotencyKey string `json:"idempotencyKey"`
	Account        string `json:"account"`
	Currency       string `json:"currency"`
	ItemCount      int    `json:"itemCount"`
	// Items are the batch's items, so that whoever follows the payout needs
	// nothing but this event, found under the payout id.
	Items []BatchItem `json:"items,omitempty"`
	Total Amount      `json:"total"`
	// Fee is Calypso's total fee for the payout, when it reported one.
	Fee *Amount `json:"fee,omitempty"`
	// State is the payout's state in Calypso's answer to the create call.
	State       string    `json:"state"`
	SubmittedAt time.Time `json:"submittedAt"`
}

func (e PayoutSubmitted) Type() Type      { return TypePayoutSubmitted }
func (e PayoutSubmitted) ID() string      { return deriveID(e.Type(), e.BatchID) }
func (e PayoutSubmitted) Key() string     { return e.PayoutID }
func (e PayoutSubmitted) Time() time.Time { return e.SubmittedAt }

// PayoutRejected says Calypso refused a batch for good; every intent of the
// batch is FAILED with this code and message.
type PayoutRejected struct {
	BatchID    string    `json:"batchId"`
	Account    string    `json:"account"`
	Currency   string    `json:"currency"`
	ItemCount  int       `json:"itemCount"`
	Total      Amount    `json:"total"`
	Code       string    `json:"code"`
	Message    string    `json:"message"`
	RejectedAt time.Time `json:"rejectedAt"`
}

func (e PayoutRejected) Type() Type      { return TypePayoutRejected }
func (e PayoutRejected) ID() string      { return deriveID(e.Type(), e.BatchID) }
func (e PayoutRejected) Key() string     { return e.BatchID }
func (e PayoutRejected) Time() time.Time { return e.RejectedAt }

// DeferReason says why a batch waits.
type DeferReason string

const (
	DeferInsufficientBalance DeferReason = "INSUFFICIENT_BALANCE"
	DeferFeeAboveLimit       DeferReason = "FEE_ABOVE_LIMIT"
	// DeferCalypsoUnavailable: the account's lane has been failing (5xx,
	// timeouts, 429) for longer than its bound; the batch waits its turn.
	DeferCalypsoUnavailable DeferReason = "CALYPSO_UNAVAILABLE"
)

// PayoutDeferred says a batch could not be submitted yet and will be tried
// again at RetryAt, without holding up other batches.
type PayoutDeferred struct {
	BatchID  string      `json:"batchId"`
	Account  string      `json:"account"`
	Currency string      `json:"currency"`
	Reason   DeferReason `json:"reason"`
	// Required is what the batch needs (total, plus fees when known).
	Required Amount `json:"required"`
	// Available is the balance, or the fee limit for FEE_ABOVE_LIMIT.
	Available  Amount    `json:"available"`
	Attempt    int       `json:"attempt"`
	RetryAt    time.Time `json:"retryAt"`
	DeferredAt time.Time `json:"deferredAt"`
}

func (e PayoutDeferred) Type() Type { return TypePayoutDeferred }
func (e PayoutDeferred) ID() string {
	return deriveID(e.Type(), e.BatchID, strconv.Itoa(e.Attempt))
}
func (e PayoutDeferred) Key() string     { return e.BatchID }
func (e PayoutDeferred) Time() time.Time { return e.DeferredAt }

// Source says where a payout status came from.
type Source string

const (
	FromWebhook Source = "webhook"
	FromPoll    Source = "poll"
)

// PayoutStatus is what every Calypso status event carries: which payout, its
// state and whether that state is terminal, so a consumer can apply events in
// any order and never move a payout backwards.
type PayoutStatus struct {
	PayoutID string `json:"payoutId"`
	// BatchID is the payout's idempotency key, which payoutd sets to the batch id.
	BatchID  string `json:"batchId,omitempty"`
	State    string `json:"state"`
	Terminal bool   `json:"terminal"`
	Source   Source `json:"source"`
	// WebhookEventID is Calypso's envelope id when Source is webhook.
	WebhookEventID string    `json:"webhookEventId,omitempty"`
	OccurredAt     time.Time `json:"occurredAt"`
}

// Status returns the status itself; every status event embeds it, so every
// status event has this method.
func (s PayoutStatus) Status() PayoutStatus { return s }

// StatusEvent is a Calypso status event: PayoutStatusChanged,
// PayoutConfirmed, PayoutHashReceived or PayoutValidationError.
type StatusEvent interface {
	Event
	Status() PayoutStatus
}

// StatusOf returns the payout status e carries, if e is a status event.
func StatusOf(e Event) (PayoutStatus, bool) {
	se, ok := e.(StatusEvent)
	if !ok {
		return PayoutStatus{}, false
	}
	return se.Status(), true
}

// PayoutStatusChanged is Calypso's PAYOUT_CHANGE_STATUS.
//
// Its id depends on the payout and the state only, so a webhook redelivered,
// and the poll that finds the same state, give one event id.
type PayoutStatusChanged struct {
	PayoutStatus
	Currency string `json:"currency,omitempty"`
	Hash     string `json:"hash,omitempty"`
}

func (e PayoutStatusChanged) Type() Type      { return TypePayoutStatusChanged }
func (e PayoutStatusChanged) ID() string      { return deriveID(e.Type(), e.PayoutID, e.State) }
func (e PayoutStatusChanged) Key() string     { return e.PayoutID }
func (e PayoutStatusChanged) Time() time.Time { return e.OccurredAt }

// PayoutConfirmed is Calypso's PAYOUT_CONFIRMED; State is CONFIRMED.
type PayoutConfirmed struct {
	PayoutStatus
}

func (e PayoutConfirmed) Type() Type      { return TypePayoutConfirmed }
func (e PayoutConfirmed) ID() string      { return deriveID(e.Type(), e.PayoutID) }
func (e PayoutConfirmed) Key() string     { return e.PayoutID }
func (e PayoutConfirmed) Time() time.Time { return e.OccurredAt }

// PayoutHashReceived is Calypso's PAYOUT_HASH_RECEIVED: a transaction hash is
// known, confirmations are pending.
type PayoutHashReceived struct {
	PayoutStatus
	Hash string `json:"hash"`
}

func (e PayoutHashReceived) Type() Type      { return TypePayoutHashReceived }
func (e PayoutHashReceived) ID() string      { return deriveID(e.Type(), e.PayoutID, e.Hash) }
func (e PayoutHashReceived) Key() string     { return e.PayoutID }
func (e PayoutHashReceived) Time() time.Time { return e.OccurredAt }

// PayoutValidationError is Calypso's PAYOUT_VALIDATION_ERROR: a withdrawal of
// the payout failed validation before going on chain.
type PayoutValidationError struct {
	PayoutStatus
	WithdrawalID     string `json:"withdrawalId,omitempty"`
	ValidationStatus string `json:"validationStatus,omitempty"`
	Message          string `json:"message,omitempty"`
}

func (e PayoutValidationError) Type() Type { return TypePayoutValidationError }
func (e PayoutValidationError) ID() string {
	return deriveID(e.Type(), e.PayoutID, e.WithdrawalID, e.ValidationStatus)
}
func (e PayoutValidationError) Key() string     { return e.PayoutID }
func (e PayoutValidationError) Time() time.Time { return e.OccurredAt }

// IntentOutcome is what a ledger needs to settle one intent without knowing
// what a mass payout is.
type IntentOutcome struct {
	IntentID string `json:"intentId"`
	BatchID  string `json:"batchId"`
	PayoutID string `json:"payoutId,omitempty"`
	Account  string `json:"account"`
	Currency string `json:"currency"`
	Amount   Amount `json:"amount"`
	Address  string `json:"address"`
	// PayoutState is the terminal state of the payout the intent was part of.
	PayoutState string    `json:"payoutState"`
	ResolvedAt  time.Time `json:"resolvedAt"`
}

// IntentSettled says the intent's money reached its address.
//
// Its ce_id, like IntentFailed's, derives from the batch as well as the
// intent: an intent id paid again after the dedup horizon (a genuinely new
// payment, as the upstream contract allows) is a new event to a ledger
// that drops repeats by ce_id, while a redelivery of the same outcome keeps
// its id.
type IntentSettled struct {
	IntentOutcome
}

func (e IntentSettled) Type() Type      { return TypeIntentSettled }
func (e IntentSettled) ID() string      { return deriveID(e.Type(), e.BatchID, e.IntentID) }
func (e IntentSettled) Key() string     { return e.IntentID }
func (e IntentSettled) Time() time.Time { return e.ResolvedAt }

// IntentFailed says the intent was not paid, and why.
type IntentFailed struct {
	IntentOutcome
	Code   string `json:"code,omitempty"`
	Reason string `json:"reason"`
}

func (e IntentFailed) Type() Type      { return TypeIntentFailed }
func (e IntentFailed) ID() string      { return deriveID(e.Type(), e.BatchID, e.IntentID) }
func (e IntentFailed) Key() string     { return e.IntentID }
func (e IntentFailed) Time() time.Time { return e.ResolvedAt }

// PayoutUndecided says a batch's create may have reached Calypso (an answer
// lost, a timeout, a 5xx, an overloaded code) and a look-up by idempotency
// key could not yet find or rule out its payout. It is neither submitted nor
// rejected, and its intents are not failed (invariant 8); it is looked up
// again at RetryAt.
type PayoutUndecided struct {
	BatchID        string `json:"batchId"`
	IdempotencyKey string `json:"idempotencyKey"`
	Account        string `json:"account"`
	Currency       string `json:"currency"`
	ItemCount      int    `json:"itemCount"`
	Total          Amount `json:"total"`
	// Reason says, in words, what left the outcome unknown.
	Reason string `json:"reason"`
	// Code is Calypso's last error code, when it gave one.
	Code    string `json:"code,omitempty"`
	Attempt int    `json:"attempt"`
	// Since is when the batch first became undecided.
	Since       time.Time `json:"since"`
	RetryAt     time.Time `json:"retryAt"`
	UndecidedAt time.Time `json:"undecidedAt"`
}

func (e PayoutUndecided) Type() Type { return TypePayoutUndecided }
func (e PayoutUndecided) ID() string {
	return deriveID(e.Type(), e.BatchID, strconv.Itoa(e.Attempt))
}
func (e PayoutUndecided) Key() string     { return e.BatchID }
func (e PayoutUndecided) Time() time.Time { return e.UndecidedAt }

// AlertKind is a stable word for routing an alert.
type AlertKind string

// Alert says something payoutd will not decide alone and a person must look
// at: a payout that contradicts its batch, a withdrawal that maps to no
// intent, a status for a batch considered rejected, a look-up that keeps
// failing. It goes to the outcomes topic beside the events it concerns.
type Alert struct {
	Kind     AlertKind `json:"kind"`
	BatchID  string    `json:"batchId,omitempty"`
	PayoutID string    `json:"payoutId,omitempty"`
	IntentID string    `json:"intentId,omitempty"`
	Account  string    `json:"account,omitempty"`
	// Subject names what the alert is about when no payout, batch or
	// intent id does, e.g. the digest of a webhook body that could not be
	// typed, so that two such alerts are two alerts.
	Subject  string    `json:"subject,omitempty"`
	Message  string    `json:"message"`
	RaisedAt time.Time `json:"raisedAt"`
}

func (e Alert) Type() Type { return TypeAlert }

// ID depends on what the alert is about, not on when it was raised, so the
// same problem found twice is one alert to a consumer that drops repeats.
func (e Alert) ID() string {
	return deriveID(e.Type(), string(e.Kind), e.BatchID, e.PayoutID, e.IntentID, e.Subject)
}

// Key is the payout id, else the batch id, else the intent id: the alert
// lands in the partition of what it is about.
func (e Alert) Key() string {
	switch {
	case e.PayoutID != "":
		return e.PayoutID
	case e.BatchID != "":
		return e.BatchID
	}
	return e.IntentID
}
func (e Alert) Time() time.Time { return e.RaisedAt }

// BatchStatus is what the submitter knows of a batch.
type BatchStatus string

const (
	BatchSubmitted   BatchStatus = "SUBMITTED"   // Calypso has its payout
	BatchRejected    BatchStatus = "REJECTED"    // refused, and a look-up showed no payout
	BatchReplanned   BatchStatus = "REPLANNED"   // refused for some rows; the rest went on as ReplannedAs
	BatchQuarantined BatchStatus = "QUARANTINED" // contradicts what Calypso holds; a person decides
	BatchUndecided   BatchStatus = "UNDECIDED"   // outcome of a create unknown; looked up again later
	BatchDeferred    BatchStatus = "DEFERRED"    // waiting for funds, fees or Calypso
)

// Final reports whether a batch in this state must never be created again.
func (s BatchStatus) Final() bool {
	switch s {
	case BatchSubmitted, BatchRejected, BatchReplanned, BatchQuarantined:
		return true
	}
	return false
}

// BatchState is the submitter's durable knowledge of one batch, on the
// compacted batch-state topic keyed by batch id, written in the same
// transaction as the outcome it records. It is ours, so a batch with a final
// state is never created again whatever the batches topic's offsets say and
// however long Calypso remembers idempotency keys.
type BatchState struct {
	BatchID     string      `json:"batchId"`
	State       BatchStatus `json:"state"`
	PayoutID    string      `json:"payoutId,omitempty"`
	ReplannedAs string      `json:"replannedAs,omitempty"`
	Reason      string      `json:"reason,omitempty"`
	UpdatedAt   time.Time   `json:"updatedAt"`
}

func (e BatchState) Type() Type      { return TypeBatchState }
func (e BatchState) ID() string      { return deriveID(e.Type(), e.BatchID, string(e.State)) }
func (e BatchState) Key() string     { return e.BatchID }
func (e BatchState) Time() time.Time { return e.UpdatedAt }
