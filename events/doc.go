// Package events holds payoutd's contracts on Kafka: the typed events that
// flow between the batcher, submitter, ingress, tracker and the ledgers
// downstream, the codec that writes them as JSON values with CloudEvents 1.0
// binary-mode headers, and the catalog of topics they live on.
//
// Guarantees:
//   - Money is exact: [Amount] is a decimal, written as a JSON string in our
//     events, and read from a JSON string or number without losing a digit.
//     No float64 touches an amount.
//   - Every event's ce_id is derived from what it describes (a UUIDv5), so
//     a redelivered or replayed event has the id it had the first time and
//     consumers can drop repeats.
//   - Every event type has a version in its ce_type and a JSON Schema in
//     package schemas; the values written here validate against it.
package events
