package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
)

// jsonRecord is a record as one JSON object: where it is, its key, every
// header (the CloudEvents ones included) and its value, embedded as JSON
// when it is JSON.
type jsonRecord struct {
	Topic     string            `json:"topic,omitempty"`
	Partition int32             `json:"partition"`
	Offset    int64             `json:"offset"`
	Timestamp time.Time         `json:"timestamp,omitzero"`
	Key       string            `json:"key"`
	Headers   map[string]string `json:"headers,omitempty"`
	Value     json.RawMessage   `json:"value"`
}

func toJSONRecord(r *kgo.Record) jsonRecord {
	jr := jsonRecord{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp, Key: string(r.Key)}
	if len(r.Headers) > 0 {
		jr.Headers = map[string]string{}
		for _, h := range r.Headers {
			jr.Headers[h.Key] = string(h.Value)
		}
	}
	switch {
	case r.Value == nil:
		jr.Value = json.RawMessage("null")
	case json.Valid(r.Value):
		jr.Value = compact(r.Value)
	default:
		jr.Value, _ = json.Marshal(string(r.Value))
	}
	return jr
}

func compact(b []byte) json.RawMessage {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return b
	}
	return buf.Bytes()
}

// prettyFields are the value fields a pretty line shows, in this order.
var prettyFields = []string{"intentId", "batchId", "payoutId", "state", "terminal", "source", "account", "currency",
	"amount", "total", "itemCount", "reason", "code", "message", "hash"}

// pretty is one readable line: time, type, key and the fields that matter.
func pretty(r *kgo.Record) string {
	var b strings.Builder
	ts := r.Timestamp.UTC().Format("2006-01-02T15:04:05.000Z")
	typ := "record"
	meta, err := events.ReadMeta(r)
	switch {
	case header(r, pipeline.HeaderDLQReason) != "":
		// A DLQ record keeps the original's headers, CloudEvents ones
		// included; the rejection is what a reader of the DLQ is after.
		typ = "dlq"
	case err == nil:
		typ = strings.TrimPrefix(string(meta.Type), "payoutd.")
	case header(r, calypso.HeaderSign) != "" || header(r, pipeline.HeaderReceivedAt) != "":
		typ = "webhook"
	}
	fmt.Fprintf(&b, "%s  %-28s key=%s", ts, typ, r.Key)
	if typ == "dlq" {
		fmt.Fprintf(&b, " reason=%s error=%q", header(r, pipeline.HeaderDLQReason), header(r, pipeline.HeaderDLQError))
		if err == nil {
			fmt.Fprintf(&b, " original=%s", strings.TrimPrefix(string(meta.Type), "payoutd."))
		}
		return b.String()
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(r.Value, &fields) != nil {
		fmt.Fprintf(&b, " bytes=%d", len(r.Value))
		return b.String()
	}
	if typ == "webhook" {
		fmt.Fprintf(&b, " event=%s id=%s", raw(fields["eventType"]), raw(fields["id"]))
		var data map[string]json.RawMessage
		if json.Unmarshal(fields["data"], &data) == nil {
			for _, k := range []string{"parentExternalId", "payoutStatus", "hash"} {
				if v, ok := data[k]; ok {
					fmt.Fprintf(&b, " %s=%s", k, raw(v))
				}
			}
		}
		return b.String()
	}
	for _, k := range prettyFields {
		if v, ok := fields[k]; ok && k != keyField(r, fields) {
			fmt.Fprintf(&b, " %s=%s", k, raw(v))
		}
	}
	return b.String()
}

// keyField is the value field that repeats the key, left out of the line.
func keyField(r *kgo.Record, fields map[string]json.RawMessage) string {
	for _, k := range []string{"intentId", "payoutId", "batchId"} {
		if raw(fields[k]) == string(r.Key) {
			return k
		}
	}
	return ""
}

// raw prints a JSON scalar without quotes.
func raw(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		if strings.ContainsAny(s, " \t") {
			return fmt.Sprintf("%q", s)
		}
		return s
	}
	return string(v)
}

// header is the last value of key: a DLQ record appends payoutd's headers
// after the original's, so an upstream header of the same name cannot pass
// for payoutd's.
func header(r *kgo.Record, key string) string {
	for i := len(r.Headers) - 1; i >= 0; i-- {
		if r.Headers[i].Key == key {
			return string(r.Headers[i].Value)
		}
	}
	return ""
}
