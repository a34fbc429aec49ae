package pipeline

import (
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Headers a DLQ record carries on top of the original record's headers.
const (
	HeaderDLQReason    = "payoutd-dlq-reason"
	HeaderDLQError     = "payoutd-dlq-error"
	HeaderDLQTopic     = "payoutd-dlq-source-topic"
	HeaderDLQPartition = "payoutd-dlq-source-partition"
	HeaderDLQOffset    = "payoutd-dlq-source-offset"
	HeaderDLQAt        = "payoutd-dlq-at"
)

// Reason is why a request went to the DLQ. The values are stable: operators
// alert and replay on them.
type Reason string

const (
	ReasonOversized       Reason = "oversized"
	ReasonMalformed       Reason = "malformed"        // not JSON
	ReasonSchema          Reason = "schema"           // JSON that breaks PayoutRequested v1
	ReasonKeyMismatch     Reason = "key_mismatch"     // record key is not the intent id
	ReasonUnknownCurrency Reason = "unknown_currency" // no decimals or item limit configured
	ReasonUnknownAccount  Reason = "unknown_account"
	ReasonPrecision       Reason = "precision" // more decimals than the currency has
	ReasonDuplicate       Reason = "duplicate" // intent id already batched within the dedup horizon
	// ReasonBadBatch is the submitter's: a batches-topic record it cannot
	// read, or whose total is not its items' sum. Such a batch is never paid.
	ReasonBadBatch Reason = "bad_batch"
	// ReasonQuarantined is the submitter's: a batch whose payout at Calypso
	// (found by idempotency key) contradicts it; a person decides.
	ReasonQuarantined Reason = "quarantined"
)

// Reasons lists the reasons the batcher gives, for its counters per reason.
func Reasons() []Reason {
	return []Reason{ReasonOversized, ReasonMalformed, ReasonSchema, ReasonKeyMismatch,
		ReasonUnknownCurrency, ReasonUnknownAccount, ReasonPrecision, ReasonDuplicate}
}

// Rejection is a request that cannot be paid, and why.
type Rejection struct {
	Reason Reason
	Err    string
}

func (r *Rejection) Error() string { return string(r.Reason) + ": " + r.Err }

// dlqRecord keeps the original key, value and headers, and says why and
// where from, so the record can be fixed and replayed.
func dlqRecord(topic string, r *kgo.Record, rej *Rejection, at time.Time) *kgo.Record {
	headers := make([]kgo.RecordHeader, 0, len(r.Headers)+6)
	headers = append(headers, r.Headers...)
	headers = append(headers,
		kgo.RecordHeader{Key: HeaderDLQReason, Value: []byte(rej.Reason)},
		kgo.RecordHeader{Key: HeaderDLQError, Value: []byte(rej.Err)},
		kgo.RecordHeader{Key: HeaderDLQTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderDLQPartition, Value: []byte(strconv.FormatInt(int64(r.Partition), 10))},
		kgo.RecordHeader{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
		kgo.RecordHeader{Key: HeaderDLQAt, Value: []byte(at.UTC().Format(time.RFC3339Nano))},
	)
	return &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Headers: headers}
}
