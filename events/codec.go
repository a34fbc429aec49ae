package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"
)

// CloudEvents 1.0 binary-mode Kafka header names.
const (
	HeaderSpecVersion = "ce_specversion"
	HeaderID          = "ce_id"
	HeaderType        = "ce_type"
	HeaderSource      = "ce_source"
	HeaderTime        = "ce_time"
	HeaderDataSchema  = "ce_dataschema"
	HeaderContentType = "content-type"
)

const (
	specVersion = "1.0"
	contentType = "application/json"
)

// idNamespace roots every derived id; changing it would change every ce_id.
var idNamespace = uuid.MustParse("6f1b8f7e-2d1a-4c55-9f0e-7a4b2f3c9d10")

// deriveID is a UUIDv5 over the event type and the facts that identify it.
func deriveID(t Type, parts ...string) string {
	return uuid.NewSHA1(idNamespace, []byte(string(t)+"\x00"+strings.Join(parts, "\x00"))).String()
}

// SchemaName is the schema file stem for an event type, e.g.
// "payout-requested.v1" for payoutd.payout.requested.v1.
func SchemaName(t Type) string {
	s := strings.TrimPrefix(string(t), "payoutd.")
	i := strings.LastIndexByte(s, '.')
	if i < 0 {
		return s
	}
	return strings.ReplaceAll(s[:i], ".", "-") + s[i:]
}

// SchemaURI is the ce_dataschema of an event type; it is the $id of its schema.
func SchemaURI(t Type) string {
	if u, ok := schemaURIs[t]; ok {
		return u
	}
	return "urn:payoutd:schema:" + SchemaName(t)
}

// schemaURIs holds SchemaURI of every known type, so a record does not
// rebuild it.
var schemaURIs = func() map[Type]string {
	m := make(map[Type]string)
	for _, t := range Types() {
		m[t] = "urn:payoutd:schema:" + SchemaName(t)
	}
	return m
}()

// Meta is the CloudEvents context of a record.
type Meta struct {
	ID          string
	Type        Type
	Source      string
	Time        time.Time
	DataSchema  string
	ContentType string
}

// NewRecord encodes e as a record for topic, keyed by e.Key(), with the
// CloudEvents headers. source names the writer, e.g. "payoutd/batcher".
func NewRecord(topic, source string, e Event) (*kgo.Record, error) {
	value, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", e.Type(), err)
	}
	t := e.Time()
	if t.IsZero() {
		return nil, fmt.Errorf("encoding %s %s: event has no time", e.Type(), e.Key())
	}
	// The header values share one allocation; each is capped, so an append
	// to one never writes into the next.
	id, typ, schema := e.ID(), string(e.Type()), SchemaURI(e.Type())
	buf := make([]byte, 0, len(specVersion)+len(id)+len(typ)+len(source)+len(time.RFC3339Nano)+len(contentType)+len(schema))
	from := 0
	next := func() []byte { b := buf[from:len(buf):len(buf)]; from = len(buf); return b }
	buf = append(buf, specVersion...)
	spec := next()
	buf = append(buf, id...)
	hID := next()
	buf = append(buf, typ...)
	hType := next()
	buf = append(buf, source...)
	hSource := next()
	buf = t.UTC().AppendFormat(buf, time.RFC3339Nano)
	hTime := next()
	buf = append(buf, contentType...)
	hContent := next()
	buf = append(buf, schema...)
	hSchema := next()
	return &kgo.Record{
		Topic: topic,
		Key:   []byte(e.Key()),
		Value: value,
		Headers: []kgo.RecordHeader{
			{Key: HeaderSpecVersion, Value: spec},
			{Key: HeaderID, Value: hID},
			{Key: HeaderType, Value: hType},
			{Key: HeaderSource, Value: hSource},
			{Key: HeaderTime, Value: hTime},
			{Key: HeaderContentType, Value: hContent},
			{Key: HeaderDataSchema, Value: hSchema},
		},
	}, nil
}

// ErrNotCloudEvent is returned by Decode for a record without CloudEvents headers.
var ErrNotCloudEvent = errors.New("record has no CloudEvents headers")

// UnknownTypeError is returned by Decode for a ce_type this version does not know.
type UnknownTypeError struct{ Type Type }

func (e *UnknownTypeError) Error() string { return fmt.Sprintf("unknown event type %q", e.Type) }

// ReadMeta reads the CloudEvents headers of r.
func ReadMeta(r *kgo.Record) (Meta, error) {
	var m Meta
	var spec string
	for _, h := range r.Headers {
		v := string(h.Value)
		switch h.Key {
		case HeaderSpecVersion:
			spec = v
		case HeaderID:
			m.ID = v
		case HeaderType:
			m.Type = Type(v)
		case HeaderSource:
			m.Source = v
		case HeaderTime:
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return m, fmt.Errorf("header %s: %w", HeaderTime, err)
			}
			m.Time = t
		case HeaderDataSchema:
			m.DataSchema = v
		case HeaderContentType:
			m.ContentType = v
		}
	}
	if spec == "" || m.ID == "" || m.Type == "" {
		return m, ErrNotCloudEvent
	}
	if spec != specVersion {
		return m, fmt.Errorf("unsupported %s %q", HeaderSpecVersion, spec)
	}
	return m, nil
}

// Decode reads a record written by NewRecord back into its typed event.
func Decode(r *kgo.Record) (Meta, Event, error) {
	m, err := ReadMeta(r)
	if err != nil {
		return m, nil, err
	}
	e, err := DecodeValue(m.Type, r.Value)
	return m, e, err
}

// DecodeValue reads a JSON value of event type t.
func DecodeValue(t Type, value []byte) (Event, error) {
	var e Event
	var err error
	switch t {
	case TypePayoutRequested:
		e, err = unmarshal[PayoutRequested](value)
	case TypeBatchPlanned:
		e, err = unmarshal[BatchPlanned](value)
	case TypeIntentState:
		e, err = unmarshal[IntentState](value)
	case TypePayoutSubmitted:
		e, err = unmarshal[PayoutSubmitted](value)
	case TypePayoutRejected:
		e, err = unmarshal[PayoutRejected](value)
	case TypePayoutDeferred:
		e, err = unmarshal[PayoutDeferred](value)
	case TypePayoutStatusChanged:
		e, err = unmarshal[PayoutStatusChanged](value)
	case TypePayoutConfirmed:
		e, err = unmarshal[PayoutConfirmed](value)
	case TypePayoutHashReceived:
		e, err = unmarshal[PayoutHashReceived](value)
	case TypePayoutValidationError:
		e, err = unmarshal[PayoutValidationError](value)
	case TypeIntentSettled:
		e, err = unmarshal[IntentSettled](value)
	case TypeIntentFailed:
		e, err = unmarshal[IntentFailed](value)
	case TypePayoutUndecided:
		e, err = unmarshal[PayoutUndecided](value)
	case TypeAlert:
		e, err = unmarshal[Alert](value)
	case TypeBatchState:
		e, err = unmarshal[BatchState](value)
	default:
		return nil, &UnknownTypeError{Type: t}
	}
	if err != nil {
		return nil, fmt.Errorf("decoding %s: %w", t, err)
	}
	return e, nil
}

func unmarshal[E Event](value []byte) (Event, error) {
	var e E
	if err := json.Unmarshal(value, &e); err != nil {
		return nil, err
	}
	return e, nil
}

// Types lists every event type this version writes and reads.
func Types() []Type {
	return []Type{
		TypePayoutRequested, TypeBatchPlanned, TypeIntentState,
		TypePayoutSubmitted, TypePayoutRejected, TypePayoutDeferred,
		TypePayoutStatusChanged, TypePayoutConfirmed, TypePayoutHashReceived, TypePayoutValidationError,
		TypeIntentSettled, TypeIntentFailed,
		TypePayoutUndecided, TypeAlert, TypeBatchState,
	}
}
