// Package pipeline is payoutd's flow of money, one component per file:
//
//	batcher.go    payouts.requests → payouts.batches (+ intents, DLQ), in one Kafka transaction per window
//	submitter.go  payouts.batches  → Calypso payout/mass/create → payouts.outcomes + payouts.batches.state,
//	              one lane per account (submitter_lane.go), outcomes built in submitter_outcome.go,
//	              batch states restored in batchstate.go
//	ingress.go    Calypso webhooks → calypso.webhooks.raw + payouts.outcomes
//	outcome.go    one webhook's bytes → its typed events (pure, so replays match)
//	tracker.go    payouts.outcomes + polling Calypso → per-intent outcomes
//
// Each component is a consumer group (or an HTTP handler), so it scales by
// running more instances. The guarantees are DESIGN.md's invariants: no
// intent is in two payouts created at Calypso, every request ends in a batch
// or the DLQ, and amounts stay exact decimals.
package pipeline
