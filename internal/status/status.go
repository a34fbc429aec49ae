// Package status answers what a payments team asks all day, from payoutd's
// topics alone (read_committed), with no database of its own: where is this
// payment (Follow), and what is stuck or failed and needs a person
// (Summarize). It reads history once per question and keeps only what the
// answer needs, so it is safe to point at years of topics.
package status

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/topicscan"
	"github.com/payoutd/payoutd/pipeline"
)

// Config says where to look.
type Config struct {
	Kafka  []kgo.Opt
	Topics events.Topics
	// Since bounds history by record timestamp; zero reads everything the
	// topics hold. The compacted state topics are always read whole.
	Since time.Time
	// Now is the clock ages are measured against (default time.Now).
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	c.Topics = c.Topics.WithDefaults()
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Step is one thing that happened to a payment, as a ledger would cite it:
// where it is in Kafka, what it is, and the ids it carries.
type Step struct {
	At        time.Time `json:"at"`
	Topic     string    `json:"topic"`
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	// What is the event type without its "payoutd." prefix ("payout.submitted.v1"),
	// or "dlq" for a rejected request.
	What     string `json:"what"`
	Source   string `json:"source,omitempty"`
	IntentID string `json:"intentId,omitempty"`
	BatchID  string `json:"batchId,omitempty"`
	PayoutID string `json:"payoutId,omitempty"`
	State    string `json:"state,omitempty"`
	// Detail is the reason, code or message that explains the step.
	Detail string `json:"detail,omitempty"`
}

// fields are the ids and facts a step is built from; every payoutd event
// names what it is about with these JSON fields.
type fields struct {
	IntentID    string `json:"intentId"`
	BatchID     string `json:"batchId"`
	PayoutID    string `json:"payoutId"`
	Address     string `json:"address"`
	Account     string `json:"account"`
	Currency    string `json:"currency"`
	State       string `json:"state"`
	PayoutState string `json:"payoutState"`
	Terminal    bool   `json:"terminal"`
	Reason      string `json:"reason"`
	Code        string `json:"code"`
	Message     string `json:"message"`
	Kind        string `json:"kind"`
	ReplannedAs string `json:"replannedAs"`
	RetryAt     string `json:"retryAt"`
	Items       []struct {
		IntentID string `json:"intentId"`
		Address  string `json:"address"`
	} `json:"items"`
}

// record is one record read, decoded as far as status needs.
type record struct {
	r    *kgo.Record
	what string
	src  string
	f    fields
	dlq  bool
}

func decode(r *kgo.Record) record {
	rec := record{r: r, what: "record"}
	for _, h := range r.Headers {
		switch h.Key {
		case events.HeaderType:
			rec.what = strings.TrimPrefix(string(h.Value), "payoutd.")
		case events.HeaderSource:
			rec.src = string(h.Value)
		case pipeline.HeaderDLQReason:
			rec.dlq = true
		}
	}
	_ = json.Unmarshal(r.Value, &rec.f) // a record that is not JSON still has its key
	if rec.dlq {
		// A DLQ record keeps the original's headers; what it is now is a
		// rejection. The last reason header is payoutd's own.
		rec.what = "dlq"
		rec.f.Reason, rec.f.Message = lastHeader(r, pipeline.HeaderDLQReason), lastHeader(r, pipeline.HeaderDLQError)
		if rec.f.IntentID == "" {
			rec.f.IntentID = string(r.Key)
		}
	}
	return rec
}

func lastHeader(r *kgo.Record, key string) string {
	for i := len(r.Headers) - 1; i >= 0; i-- {
		if r.Headers[i].Key == key {
			return string(r.Headers[i].Value)
		}
	}
	return ""
}

func (rec record) step() Step {
	f := rec.f
	s := Step{At: rec.r.Timestamp, Topic: rec.r.Topic, Partition: rec.r.Partition, Offset: rec.r.Offset,
		What: rec.what, Source: rec.src, IntentID: f.IntentID, BatchID: f.BatchID, PayoutID: f.PayoutID,
		State: cmp.Or(f.State, f.PayoutState)}
	var detail []string
	for _, d := range []string{f.Kind, f.Reason, f.Code, f.Message} {
		if d != "" {
			detail = append(detail, d)
		}
	}
	if f.ReplannedAs != "" {
		detail = append(detail, "replanned as batch "+f.ReplannedAs)
	}
	if f.RetryAt != "" {
		detail = append(detail, "next try "+f.RetryAt)
	}
	s.Detail = strings.Join(detail, "; ")
	return s
}

// scan reads topics in order, decoding each record for fn.
func scan(ctx context.Context, cfg Config, from time.Time, topics []string, fn func(record)) error {
	for _, t := range topics {
		err := topicscan.Scan(ctx, cfg.Kafka, t, from, time.Time{}, func(r *kgo.Record) error {
			fn(decode(r))
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func sortSteps(s []Step) {
	slices.SortStableFunc(s, func(a, b Step) int {
		return cmp.Or(a.At.Compare(b.At), cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
}
