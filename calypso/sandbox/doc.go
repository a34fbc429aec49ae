// Package sandbox is a faithful stand-in for Calypso Pay's mass-payout API,
// for tests, `payoutd dev` and docker-compose. A *Sandbox is an http.Handler
// serving the same /api/v1/... paths as Calypso.
//
// What it guarantees:
//
//   - The same envelope and checks as Calypso, in the same order: unknown Key
//     → 002, bad Sign → 003, malformed body or unknown payload keys → 001,
//     timestamp outside ±180000 ms of its clock → 011, missing object → 004.
//     It is stricter than Calypso is known to be (unknown keys, amounts sent
//     as strings), so drift in the client fails tests instead of production.
//   - A reused idempotency key is 016 "… already exists" and never a second
//     payout, however many creates race.
//   - Insufficient balance on create is answered with 016 and the message
//     "Can not create deal. Validation failed: insufficient balance …"
//     (Calypso's documented code for a create that failed validation; the
//     real answer is undocumented). calypso.ErrInsufficientBalance matches it.
//   - Balances are debited by amount + fee on create (fees from a simple
//     tariff that tariff/extended-fee reports consistently) and refunded for
//     whatever is canceled or fails.
//   - The state machine of the seed guide: CREATION_IN_PROGRESS →
//     (PENDING_CONFIRMATION → CONFIRMED | CANCELED with verification on) →
//     CONFIRMED → (wait for executionDate) → IN_PROGRESS → COMPLETED |
//     PARTIAL | FAILED, with a signed webhook per transition in the seed's
//     order, monotonically increasing envelope ids, and Calypso's retry
//     schedule (30, 30, 60, 90, 150, … s) until a 200.
//   - Time is compressible: every delay, retry gap and the wait until an
//     executionDate is multiplied by Config.TimeScale.
//   - Faults (dropped, duplicated, reordered, delayed webhooks; 5xx, 429,
//     slow answers, connection resets, lost responses; outcome mix) are drawn
//     from a seeded generator, or queued one by one with InjectFault.
//   - Calypso's inconsistencies, each configurable and changeable while it
//     runs (SetFaults, SetAccountLatency, HangAccount): a read side that
//     answers 004 for a while after a create (LookupLag); 016 "Validation
//     failed" instead of "already exists" when a key is reused
//     (ValidationAfterAmbiguous); totals rounded through a float, 0 while
//     CREATION_IN_PROGRESS, or fee-inclusive (Totals); per-account latency,
//     hangs and rate limits answering 429; recipient addresses refused with
//     001 naming the row. None of them ever creates a payout twice.
//   - Everything is observable, from Go (Payouts, Requests, Webhooks,
//     CreateCount, InFlight, Faults) and over HTTP under /sandbox/.
//
// Run it with httptest.NewServer(sb) in tests, or with ListenAndServe.
// Close stops its goroutines.
//
// HTTP introspection (JSON):
//
//	GET  /sandbox/payouts              all payouts with their items
//	GET  /sandbox/payouts/{id}         one payout
//	POST /sandbox/payouts/{id}/confirm approve a PENDING_CONFIRMATION payout
//	POST /sandbox/payouts/{id}/cancel  decline a PENDING_CONFIRMATION payout
//	GET  /sandbox/requests             request counts per path and outcome
//	GET  /sandbox/webhooks             webhooks sent and their deliveries
//	GET  /sandbox/idempotency          create requests per idempotency key
//	POST /sandbox/balance              {"account","currency","amount"} sets a balance
//	GET  /sandbox/faults               Calypso's inconsistencies now in force
//	POST /sandbox/faults               change them: {"hangAccounts":{"acct":true},
//	                                   "lookupLag":"2s", …}; keys absent stay as
//	                                   they are, a bad key or value is 400 and
//	                                   changes nothing
package sandbox
