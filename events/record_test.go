package events_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
)

// referenceRecord is NewRecord as first written, one conversion per header,
// kept to hold the cheaper one to the same bytes (replay compares them).
func referenceRecord(t *testing.T, topic, source string, e events.Event) *kgo.Record {
	t.Helper()
	value, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimPrefix(string(e.Type()), "payoutd.")
	i := strings.LastIndexByte(s, '.')
	schema := "urn:payoutd:schema:" + strings.ReplaceAll(s[:i], ".", "-") + s[i:]
	return &kgo.Record{
		Topic: topic, Key: []byte(e.Key()), Value: value,
		Headers: []kgo.RecordHeader{
			{Key: events.HeaderSpecVersion, Value: []byte("1.0")},
			{Key: events.HeaderID, Value: []byte(e.ID())},
			{Key: events.HeaderType, Value: []byte(e.Type())},
			{Key: events.HeaderSource, Value: []byte(source)},
			{Key: events.HeaderTime, Value: []byte(e.Time().UTC().Format(time.RFC3339Nano))},
			{Key: events.HeaderContentType, Value: []byte("application/json")},
			{Key: events.HeaderDataSchema, Value: []byte(schema)},
		},
	}
}

func TestNewRecordBytesUnchanged(t *testing.T) {
	for _, typ := range events.Types() {
		t.Run(string(typ), func(t *testing.T) {
			e := sample(t, typ)
			got, err := events.NewRecord("payouts.outcomes", "payoutd/ingress", e)
			if err != nil {
				t.Fatal(err)
			}
			if want := referenceRecord(t, "payouts.outcomes", "payoutd/ingress", e); !reflect.DeepEqual(got, want) {
				t.Fatalf("record differs:\n got %+v\nwant %+v", got, want)
			}
			// A header value grown in place must not spill into the next.
			got.Headers[1].Value = append(got.Headers[1].Value, 'x')
			if string(got.Headers[2].Value) != string(typ) {
				t.Fatalf("ce_type became %q after appending to ce_id", got.Headers[2].Value)
			}
		})
	}
}
