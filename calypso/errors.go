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

// Sentinel errors; test with errors.Is. An *APIError matches them by its
// errorCode first and its HTTP status second (only when the code is absent
// or unknown), because Calypso's docs do not say which status goes with
// which code.
var (
	// ErrIdempotencyKeyExists: a create reused an idempotency key (016
	// "IdempotencyKey … already exists"). The payout was created earlier,
	// perhaps by an attempt whose response was lost; look it up with
	// MassPayoutByIdempotencyKey and check it matches before treating the
	// create as done.
	ErrIdempotencyKeyExists = errors.New("calypso: idempotency key already exists")
	// ErrValidationFailed: a create was refused by 016 other than a reused
	// key, e.g. "Can not create deal. Validation failed". Calypso validates
	// before it checks the key, so after an attempt whose outcome is unknown
	// (MayHaveReached) this refusal does not mean no payout exists: look it
	// up by key before taking it as final.
	ErrValidationFailed = errors.New("calypso: create validation failed")
	// ErrInsufficientBalance: a create was refused because the account cannot
	// cover amounts plus fees (016 whose message mentions the balance; also
	// ErrValidationFailed). The notes do not document this case; the sandbox
	// answers it this way.
	ErrInsufficientBalance = errors.New("calypso: insufficient balance")
	// ErrNotFound: the object does not exist (004), or not yet: Calypso's
	// read side may lag behind a create.
	ErrNotFound = errors.New("calypso: not found")
	// ErrAuth: the API key is unknown (002), the signature wrong (003), or
	// the answer was HTTP 401 without a known code. A configuration problem
	// of the account, not a refusal of the request.
	ErrAuth = errors.New("calypso: authentication failed")
	// ErrRateLimited: HTTP 429 (without a known code). The request was not
	// processed; try again after RetryAfter.
	ErrRateLimited = errors.New("calypso: rate limited")
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

// class is what an error answer means, decided on its errorCode first and
// on its HTTP status only when the code is absent or unknown.
type class int

const (
	classRefused       class = iota // a definitive refusal: nothing was done
	classInternal                   // 000, or 5xx: the request may have been processed
	classAuth                       // 002, 003, HTTP 401
	classNotFound                   // 004
	classTimestamp                  // 011: refused, retry re-stamped
	classKeyExists                  // 016 reused key
	classValidation                 // 016 other
	classRateLimited                // HTTP 429
	classServerTimeout              // HTTP 408: the server gave up on us; unknown whether it acted
)

func (e *APIError) class() class {
	switch e.Code {
	case CodeInternal:
		return classInternal
	case CodeInvalidAPIKey, CodeWrongSign:
		return classAuth
	case CodeNotFound:
		return classNotFound
	case CodeInvalidTimestamp:
		return classTimestamp
	case CodeCreateRejected:
		msg := strings.ToLower(e.Message)
		if strings.Contains(msg, "already exists") {
			return classKeyExists
		}
		return classValidation
	case CodeBadRequest, CodeInvalidPayoutState:
		return classRefused
	}
	switch {
	case e.HTTPStatus >= 500:
		return classInternal
	case e.HTTPStatus == http.StatusUnauthorized:
		return classAuth
	case e.HTTPStatus == http.StatusTooManyRequests:
		return classRateLimited
	case e.HTTPStatus == http.StatusRequestTimeout:
		return classServerTimeout
	}
	return classRefused
}

// Is maps codes (and, without a known code, statuses) to the sentinel
// errors.
func (e *APIError) Is(target error) bool {
	c := e.class()
	switch target {
	case ErrIdempotencyKeyExists:
		return c == classKeyExists
	case ErrValidationFailed:
		return c == classValidation
	case ErrInsufficientBalance:
		msg := strings.ToLower(e.Message)
		return c == classValidation && (strings.Contains(msg, "insufficient") || strings.Contains(msg, "not enough"))
	case ErrNotFound:
		return c == classNotFound
	case ErrAuth:
		return c == classAuth
	case ErrRateLimited:
		return c == classRateLimited
	}
	return false
}

// Temporary reports whether retrying the same request may succeed: code 000,
// code 011 (the retry carries a new timestamp), and, without a known code,
// 5xx, 429 and 408.
func (e *APIError) Temporary() bool {
	switch e.class() {
	case classInternal, classTimestamp, classRateLimited, classServerTimeout:
		return true
	}
	return false
}

// mayHaveReached reports whether Calypso may have acted on the request
// although it answered with an error: 000, 5xx and 408 leave it unknown.
func (e *APIError) mayHaveReached() bool {
	switch e.class() {
	case classInternal, classServerTimeout:
		return true
	}
	return false
}

// TransportError is a request that got no HTTP answer: connection refused or
// reset, a per-attempt timeout, a broken response. Always retryable. When
// Sent, a create's outcome is unknown, which a look-up by idempotency key
// resolves; when not, Calypso never saw it.
type TransportError struct {
	Op  string
	Err error
	// Sent says the request may have been written to the connection, so
	// Calypso may have processed it. False when it certainly was not: the
	// dial was refused, the name did not resolve, the context ended before
	// a connection was had.
	Sent bool
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

// MayHaveReached reports whether the call that returned err may have been
// processed by Calypso although it got no success answer — so a create may
// exist and must be looked up by its idempotency key before any later
// refusal is taken as final. True for a timeout or broken connection after
// the request was (perhaps) written, for 5xx and 000 answers, an undecodable
// 2xx, and for any error after an earlier attempt of the same call that may
// have reached Calypso. False when the call certainly was not processed: it
// was refused before sending (ErrInvalidRequest), never sent (dial refused,
// DNS error, context ended before sending), or answered with a definitive
// refusal (429, 001, 002, 003, 004, 011, 012, 016, other 4xx). nil is false.
func MayHaveReached(err error) bool {
	if err == nil {
		return false
	}
	var earlier *earlierAttemptError
	if errors.As(err, &earlier) {
		return true
	}
	var api *APIError
	if errors.As(err, &api) {
		return api.mayHaveReached()
	}
	var te *TransportError
	if errors.As(err, &te) {
		return te.Sent
	}
	return errors.Is(err, ErrMalformedResponse)
}

// earlierAttemptError marks a call's final error when an earlier attempt of
// the same call may have reached Calypso, so MayHaveReached stays true
// whatever the last attempt got (e.g. 5xx, then 016 "Validation failed").
type earlierAttemptError struct {
	err      error
	attempts int
}

func (e *earlierAttemptError) Error() string {
	return fmt.Sprintf("%v (after %d attempts; an earlier one may have reached Calypso)", e.err, e.attempts)
}

func (e *earlierAttemptError) Unwrap() error { return e.err }
