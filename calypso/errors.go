package calypso

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Calypso error codes (errorCode in an error body) that payoutd acts on.
const (
	CodeInternal           = "000"
	CodeBadRequest         = "001"
	CodeInvalidAPIKey      = "002"
	CodeWrongSign          = "003"
	CodeNotFound           = "004"
	CodeInvalidTimestamp   = "011"
	CodeInvalidPayoutState = "012"
	// CodeCreateRejected is used by Calypso both for a reused idempotency key
	// ("IdempotencyKey … already exists") and for a create that failed
	// validation ("Can not create deal. Validation failed"); the message
	// tells them apart.
	CodeCreateRejected = "016"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrIdempotencyKeyExists: a create reused an idempotency key (016
	// "already exists"). The payout was created earlier, perhaps by an
	// attempt whose response was lost; look it up with
	// MassPayoutByIdempotencyKey and check it matches before treating the
	// create as done.
	ErrIdempotencyKeyExists = errors.New("calypso: idempotency key already exists")
	// ErrInsufficientBalance: a create was refused because the account cannot
	// cover amounts plus fees (016 whose message mentions the balance). The
	// notes do not document this case; the sandbox answers it this way.
	ErrInsufficientBalance = errors.New("calypso: insufficient balance")
	// ErrNotFound: the object does not exist (004).
	ErrNotFound = errors.New("calypso: not found")
	// ErrInvalidRequest: refused locally before sending (bad or missing
	// field, too many items, too many decimals, unknown currency).
	ErrInvalidRequest = errors.New("calypso: invalid request")
	// ErrMalformedResponse: a 2xx response could not be decoded. The server
	// may have acted on the request, so this is retryable (creates are
	// protected by their idempotency key).
	ErrMalformedResponse = errors.New("calypso: malformed response")
)

// APIError is an error answer from Calypso.
type APIError struct {
	// Op names the client operation, e.g. "create mass payout".
	Op string
	// HTTPStatus is the response status. Decide on Code, not on this: the
	// docs do not say which status goes with which code.
	HTTPStatus int
	// Code is Calypso's errorCode ("001", "016", …); empty when the body was
	// not a Calypso error (a proxy's 502 page, a 429).
	Code string
	// Message is Calypso's message, or the start of a non-JSON body.
	Message string
	// TraceID is Calypso's traceId when present, for support tickets.
	TraceID string
	// RetryAfter is the server's Retry-After, if any.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("calypso: ")
	if e.Op != "" {
		b.WriteString(e.Op)
		b.WriteString(": ")
	}
	if e.Code != "" {
		b.WriteString("error ")
		b.WriteString(e.Code)
	} else {
		b.WriteString("HTTP ")
		fmt.Fprint(&b, e.HTTPStatus)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " (HTTP %d", e.HTTPStatus)
		if e.TraceID != "" {
			b.WriteString(", trace ")
			b.WriteString(e.TraceID)
		}
		b.WriteString(")")
	}
	return b.String()
}

// Is maps codes to the sentinel errors.
func (e *APIError) Is(target error) bool {
	msg := strings.ToLower(e.Message)
	switch target {
	case ErrIdempotencyKeyExists:
		return e.Code == CodeCreateRejected && strings.Contains(msg, "already exists")
	case ErrInsufficientBalance:
		return e.Code == CodeCreateRejected &&
			(strings.Contains(msg, "insufficient") || strings.Contains(msg, "not enough"))
	case ErrNotFound:
		return e.Code == CodeNotFound
	}
	return false
}

// Temporary reports whether retrying the same request may succeed: 5xx, 429,
// 408, code 000, and code 011 (the retry carries a new timestamp).
func (e *APIError) Temporary() bool {
	switch e.Code {
	case CodeInternal, CodeInvalidTimestamp:
		return true
	}
	return e.HTTPStatus >= 500 || e.HTTPStatus == http.StatusTooManyRequests || e.HTTPStatus == http.StatusRequestTimeout
}

// TransportError is a request that got no HTTP answer: connection refused or
// reset, a per-attempt timeout, a broken response. Always retryable; for a
// create the outcome is unknown, which the idempotency key resolves.
type TransportError struct {
	Op  string
	Err error
}

func (e *TransportError) Error() string { return "calypso: " + e.Op + ": " + e.Err.Error() }
func (e *TransportError) Unwrap() error { return e.Err }

// Retryable reports whether err may go away if the same call is made again:
// transport failures and timeouts, 5xx, 429, codes 000 and 011, and malformed
// 2xx responses. Everything else — validation (001), auth (002, 003), not
// found (004), a reused key (016) — is permanent. A canceled context is not
// retryable; an expired deadline is (the call may simply have been slow).
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	var api *APIError
	if errors.As(err, &api) {
		return api.Temporary()
	}
	var te *TransportError
	if errors.As(err, &te) {
		return true
	}
	return errors.Is(err, ErrMalformedResponse) || errors.Is(err, context.DeadlineExceeded)
}
