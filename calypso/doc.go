// Package calypso is payoutd's only door to Calypso Pay's mass-payout API: a
// signed, typed client for the operations payoutd uses, and the verification
// and parsing of the webhooks Calypso sends back.
//
// What it guarantees:
//
//   - Every request is signed exactly as Calypso documents it: HMAC-SHA512 of
//     the exact body bytes, keyed by the API secret, lowercase hex in the Sign
//     header, with a fresh millisecond timestamp (and a fresh signature) on
//     every attempt.
//   - Money is exact. [Amount] is a decimal written to JSON as a number from
//     its decimal text and read back from a number or a string without ever
//     passing through float64.
//   - Errors name the operation and the code, and are classified by
//     Calypso's errorCode first and the HTTP status only without a known
//     code: [ErrIdempotencyKeyExists] (016 reused key), [ErrValidationFailed]
//     (any other 016), [ErrNotFound] (004), [ErrAuth] (002, 003, 401),
//     [ErrRateLimited] (429). [Retryable] says whether trying again can help;
//     [MayHaveReached] says whether Calypso may have processed a call that
//     got no success answer (timeouts and broken connections after sending,
//     5xx, 000), so that a later refusal of the same create is not taken as
//     final before a look-up by key.
//   - A call makes up to Retry.MaxAttempts attempts (1: exactly one, for a
//     caller that owns its retry policy), paced by a limiter that is
//     optional ([WithLimiter], or Config.RateLimit < 0 for none).
//   - Secrets ([Secret]) print as "[REDACTED]" in fmt, JSON and slog, and
//     never appear in errors or logs.
//   - Webhooks are verified in constant time against any of several
//     subscription keys (for rotation) and parsed tolerantly: ids may be
//     strings or numbers, times may lack a zone, unknown event types are
//     kept, not rejected.
//
// Facts and the safe choices made where Calypso's docs are silent are in
// shared/calypso-api.md; the seed guide wins where the two disagree.
package calypso
