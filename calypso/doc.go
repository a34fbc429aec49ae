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
//   - Errors name the operation and say whether trying again can help:
//     [Retryable] separates network trouble, timeouts, 5xx, 429, 000 and 011
//     from permanent rejections; a reused idempotency key (016) is
//     [ErrIdempotencyKeyExists], so the caller looks the earlier payout up
//     instead of creating a second one.
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
