package pipeline

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/schemas"
)

// hostileNow is the clock of the hostile corpus: execution dates are judged
// against it.
var hostileNow = time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)

// hostile is every input issue 11 found to crash, poison or fool the
// batcher, with the DLQ reason it must get. TestHostileCorpus keeps each in
// testdata/fuzz/FuzzRequestPath, where FuzzRequestPath starts from them.
var hostile = []struct {
	name, value string
	reason      Reason
}{
	// 1. A number a library panics on, and numbers beyond any bound.
	{"amount_exponent_1e10000001", `{"intentId":"h","account":"a","currency":"ETH","amount":1e10000001,"address":"0x1"}`, ReasonAmount},
	{"amount_negative_exponent", `{"intentId":"h","account":"a","currency":"ETH","amount":1e-10000001,"address":"0x1"}`, ReasonAmount},
	{"amount_exponent_in_metadata", `{"intentId":"h","account":"a","currency":"ETH","amount":"1","address":"0x1","metadata":{"x":1e10000001}}`, ReasonSchema},
	{"amount_exponent_nested", `{"intentId":"h","account":"a","currency":"ETH","amount":"1","address":"0x1","x":[[1E+99999]]}`, ReasonSchema},
	{"amount_200_digits", `{"intentId":"h","account":"a","currency":"ETH","amount":` + strings.Repeat("9", 200) + `,"address":"0x1"}`, ReasonAmount},
	// 2. Amounts that pass a schema and poison a batch at Calypso.
	{"amount_1e10000", `{"intentId":"h","account":"a","currency":"ETH","amount":1e10000,"address":"0x1"}`, ReasonAmount},
	{"amount_1e400", `{"intentId":"h","account":"a","currency":"ETH","amount":1e400,"address":"0x1"}`, ReasonAmount},
	{"amount_31_digit_string", `{"intentId":"h","account":"a","currency":"ETH","amount":"1` + strings.Repeat("0", 30) + `","address":"0x1"}`, ReasonAmount},
	{"amount_above_currency_max", `{"intentId":"h","account":"a","currency":"BTC","amount":"21000001","address":"bc1"}`, ReasonAmount},
	// 3. Duplicate keys.
	{"duplicate_amount", `{"intentId":"h","account":"a","currency":"ETH","amount":"1","amount":"1000","address":"0x1"}`, ReasonDuplicateKey},
	{"duplicate_address", `{"intentId":"h","account":"a","currency":"ETH","amount":"1","address":"0x1","address":"0xevil"}`, ReasonDuplicateKey},
	{"duplicate_escaped_key", `{"intentId":"h","account":"a","currency":"ETH","amount":"1","am\u006funt":"1000","address":"0x1"}`, ReasonDuplicateKey},
	{"duplicate_metadata_key", `{"intentId":"h","account":"a","currency":"ETH","amount":"1","address":"0x1","metadata":{"k":"1","k":"2"}}`, ReasonDuplicateKey},
	// 4. Control and invisible characters, invalid UTF-8.
	{"address_nul", `{"intentId":"h","account":"a","currency":"ETH","amount":"1","address":"0x1\u0000"}`, ReasonInvalidText},
	{"account_esc", `{"intentId":"h","account":"a\u001b[31m","currency":"ETH","amount":"1","address":"0x1"}`, ReasonInvalidText},
	{"intent_zero_width_space", "{\"intentId\":\"h\u200b\",\"account\":\"a\",\"currency\":\"ETH\",\"amount\":\"1\",\"address\":\"0x1\"}", ReasonInvalidText},
	{"address_rtl_override", "{\"intentId\":\"h\",\"account\":\"a\",\"currency\":\"ETH\",\"amount\":\"1\",\"address\":\"0x1\u202e2x0\"}", ReasonInvalidText},
	{"address_nbsp", "{\"intentId\":\"h\",\"account\":\"a\",\"currency\":\"ETH\",\"amount\":\"1\",\"address\":\"0x1\u00a0\"}", ReasonInvalidText},
	{"account_ideographic_space", "{\"intentId\":\"h\",\"account\":\"a\u3000\",\"currency\":\"ETH\",\"amount\":\"1\",\"address\":\"0x1\"}", ReasonInvalidText},
	{"address_invalid_utf8", "{\"intentId\":\"h\",\"account\":\"a\",\"currency\":\"ETH\",\"amount\":\"1\",\"address\":\"0x1\xff\"}", ReasonInvalidText},
	{"address_lone_surrogate", `{"intentId":"h","account":"a","currency":"ETH","amount":"1","address":"0x1\ud800"}`, ReasonInvalidText},
	{"comment_esc", `{"intentId":"h","account":"a","currency":"ETH","amount":"1","address":"0x1","comment":"pay \u001b[2Jnow"}`, ReasonInvalidText},
	// 5. Execution dates past the horizon, and past 2262 (int64 nanoseconds).
	{"execution_2300", `{"intentId":"h","account":"a","currency":"ETH","amount":"1","address":"0x1","executionDate":"2300-01-01T00:00:00Z"}`, ReasonExecutionDate},
	{"execution_9999", `{"intentId":"h","account":"a","currency":"ETH","amount":"1","address":"0x1","executionDate":"9999-12-31T23:59:59Z"}`, ReasonExecutionDate},
	{"execution_beyond_a_year", `{"intentId":"h","account":"a","currency":"ETH","amount":"1","address":"0x1","executionDate":"2027-11-26T09:00:00Z"}`, ReasonExecutionDate},
	{"execution_1600", `{"intentId":"h","account":"a","currency":"ETH","amount":"1","address":"0x1","executionDate":"1600-01-01T00:00:00Z"}`, ReasonExecutionDate},
	// Structure.
	{"nested_too_deep", `{"intentId":"h","x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, ReasonMalformed},
}

func hostileRules(t testing.TB) *intentRules {
	t.Helper()
	cur := calypso.DefaultCurrencies()
	btc := cur["BTC"]
	btc.Max = calypso.MustParseAmount("21000000")
	cur["BTC"] = btc
	return &intentRules{schemas: schemas.MustLoad(), currencies: cur, maxRecordBytes: 64 << 10, executionHorizon: DefaultExecutionHorizon}
}

// Every hostile input ends in the DLQ with its reason, in words a person
// understands, and none of them panics.
func TestHostileRequestsGetTheirReason(t *testing.T) {
	rules := hostileRules(t)
	for _, h := range hostile {
		t.Run(h.name, func(t *testing.T) {
			_, rej := rules.check(requestRecord([]byte(h.value), 0), hostileNow)
			if rej == nil {
				t.Fatalf("accepted: %s", h.value)
			}
			if rej.Reason != h.reason {
				t.Fatalf("reason %s (%s), want %s", rej.Reason, rej.Err, h.reason)
			}
			if len(rej.Err) == 0 || len(rej.Err) > 1024 {
				t.Fatalf("error text of %d bytes: %q", len(rej.Err), rej.Err)
			}
		})
	}
	// The valid neighbours of those inputs pass.
	for _, ok := range []string{
		`{"intentId":"h","account":"a","currency":"ETH","amount":"1","address":"0x1","executionDate":"2027-11-24T09:00:00Z"}`,
		`{"intentId":"h","account":"a","currency":"ETH","amount":1e-18,"address":"0x1"}`,
		`{"intentId":"h","account":"a","currency":"ETH","amount":"` + strings.Repeat("9", 30) + `","address":"0x1"}`,
		`{"intentId":"h","account":"a","currency":"BTC","amount":"21000000","address":"bc1","comment":"für Anna, ½ \u00e9"}`,
	} {
		if _, rej := rules.check(requestRecord([]byte(ok), 0), hostileNow); rej != nil {
			t.Errorf("refused %s: %v", ok, rej)
		}
	}
}

// A panic anywhere in validation is one record's rejection, not the end of
// the process.
func TestValidationRecoversPanics(t *testing.T) {
	rules := &intentRules{schemas: nil, maxRecordBytes: 1 << 20} // a nil schema set panics when used
	_, rej := rules.check(requestRecord([]byte(`{"intentId":"h","amount":{}}`), 0), hostileNow)
	if rej == nil || rej.Reason != ReasonUnprocessable || !strings.Contains(rej.Err, "panicked") {
		t.Fatalf("rejection %v, want unprocessable", rej)
	}
}

// The corpus is kept in testdata, where CI's fuzzing starts from it and
// every go test runs it through FuzzRequestPath.
func TestHostileCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzRequestPath")
	for _, h := range hostile {
		want := "go test fuzz v1\n[]byte(" + strconv.Quote(h.value) + ")\n"
		path := filepath.Join(dir, h.name)
		got, err := os.ReadFile(path)
		if os.Getenv("PAYOUTD_UPDATE_CORPUS") == "1" && string(got) != want {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err != nil || string(got) != want {
			t.Errorf("%s is missing or differs from the hostile table; write it with PAYOUTD_UPDATE_CORPUS=1 go test -run TestHostileCorpus ./pipeline", path)
		}
	}
}

// kafkaPartitioner is Kafka's default partitioner, as the batcher checks it.
func kafkaPartitioner() kgo.TopicPartitioner { return kgo.StickyKeyPartitioner(nil).ForTopic("") }

// requestRecord is value as a requests record keyed by its intent id (when
// one can be read), in the partition Kafka's partitioner gives it of 4.
func requestRecord(value []byte, offset int64) *kgo.Record {
	var id struct {
		IntentID string `json:"intentId"`
	}
	_ = json.Unmarshal(value, &id)
	r := &kgo.Record{Topic: "payouts.requests", Key: []byte(id.IntentID), Value: value, Offset: offset}
	r.Partition = int32(kafkaPartitioner().Partition(r, 4))
	return r
}

// FuzzRequestPath feeds raw bytes through the whole request path: decode,
// validate, plan, encode. Nothing may panic (a recovered panic is a bug to
// fix, found here rather than in production); what is accepted must plan
// into batches that encode, match their schema, fit the planning budget and
// pay exactly what was asked; what is refused must make a DLQ record whose
// reason is the real one.
func FuzzRequestPath(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	for _, h := range hostile {
		f.Add([]byte(h.value))
	}
	rules := hostileRules(f)
	set := rules.schemas
	f.Fuzz(func(t *testing.T, value []byte) {
		r := requestRecord(value, 7)
		r.Headers = []kgo.RecordHeader{{Key: HeaderDLQReason, Value: []byte("duplicate")}, {Key: events.HeaderType, Value: []byte("x")}}
		in, rej := rules.check(r, hostileNow)
		// The scan calls a key duplicate only when encoding/json sees one
		// key twice in an object, and such a request is always refused.
		dup := json.Valid(value) && duplicateKey(value)
		if rej != nil && rej.Reason == ReasonDuplicateKey && !dup {
			t.Fatalf("scan found a duplicate key encoding/json does not see: %v\n%q", rej, value)
		}
		if dup && rej == nil {
			t.Fatalf("a request with a duplicate key was accepted\n%q", value)
		}
		if rej != nil {
			if rej.Reason == ReasonUnprocessable {
				t.Fatalf("validation panicked: %s\n%q", rej.Err, value)
			}
			d := dlqRecord("dlq", r, rej, hostileNow)
			if headerValue(d, HeaderDLQReason) != string(rej.Reason) || headerValue(d, events.HeaderType) != "" {
				t.Fatalf("DLQ headers %v for reason %s", d.Headers, rej.Reason)
			}
			return
		}
		w := newWindow()
		w.note(r, hostileNow)
		src := events.Offset{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
		w.add(in, src, "", maxItems(rules.currencies, in.Currency))
		// The copy carries a trace context, which the size bound counts too.
		w.add(in, events.Offset{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset + 1},
			"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", maxItems(rules.currencies, in.Currency))
		const budget = 4 << 10
		bs := w.plan(rules.currencies, budget, hostileNow)
		if len(bs) != 2 { // one address is never twice in a batch
			t.Fatalf("%d batches for two intents to one address", len(bs))
		}
		for _, b := range bs {
			rec, err := events.NewRecord("batches", "payoutd/batcher", b)
			if err != nil {
				t.Fatalf("encoding: %v", err)
			}
			if err := set.Validate(events.SchemaName(b.Type()), rec.Value); err != nil {
				t.Fatalf("a planned batch breaks its schema: %v\n%s", err, rec.Value)
			}
			if !b.Total.Equal(in.Amount) || len(b.Items) != 1 || b.Items[0].Address != in.Address {
				t.Fatalf("batch %s pays %s, want %s", rec.Value, b.Total, in.Amount)
			}
			if (b.ExecutionDate == nil) != (in.ExecutionDate == nil) || b.ExecutionDate != nil && !b.ExecutionDate.Equal(*in.ExecutionDate) {
				t.Fatalf("execution date %v, want %v", b.ExecutionDate, in.ExecutionDate)
			}
			// The planning estimate never under-counts.
			items, _ := json.Marshal(b.Items)
			if est := itemSize(b.Items[0]) + 1; est < len(items) {
				t.Fatalf("item estimated at %d bytes, encodes to %d: %s", est, len(items), items)
			}
			size := len(rec.Key) + len(rec.Value)
			for _, h := range rec.Headers {
				size += len(h.Key) + len(h.Value)
			}
			if est := batchOverhead(b.Account, b.Currency) + itemSize(b.Items[0]); est < size {
				t.Fatalf("batch estimated at %d bytes, its record is %d", est, size)
			}
			for _, it := range []events.IntentState{{IntentID: in.IntentID, State: events.StatusBatched, BatchID: b.BatchID, UpdatedAt: hostileNow}} {
				rec, err := events.NewRecord("intents", "payoutd/batcher", it)
				if err != nil || set.Validate(events.SchemaName(it.Type()), rec.Value) != nil {
					t.Fatalf("intent state %s: %v", rec.Value, err)
				}
			}
		}
	})
}

// duplicateKey reports whether value is JSON with a key twice in one
// object, by encoding/json's tokens (keys decoded, escapes and all).
func duplicateKey(value []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(value))
	type frame struct {
		keys   map[string]bool
		object bool
		key    bool // the next string token is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				if top != nil && top.object {
					top.key = true
				}
				stack = append(stack, &frame{keys: map[string]bool{}, object: true, key: true})
				continue
			case '[':
				if top != nil && top.object {
					top.key = true
				}
				stack = append(stack, &frame{})
				continue
			default:
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					return false
				}
				continue
			}
		case string:
			if top != nil && top.object && top.key {
				if top.keys[v] {
					return true
				}
				top.keys[v] = true
				top.key = false
				continue
			}
		}
		if top != nil && top.object {
			top.key = true
		}
	}
}
