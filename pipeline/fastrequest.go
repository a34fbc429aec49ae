package pipeline

import (
	"encoding/json"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/payoutd/payoutd/events"
)

// fastRequest decodes a PayoutRequested v1 in one pass when it is plainly
// valid, without the generic JSON tree the schema validator builds (half of
// the batcher's CPU by the profile). It is sound, not complete: true means
// the schema accepts value and in is what decoding it gives; false means
// "not sure", and the schema validator decides and says why. Anything
// unusual (escapes the checks below do not cover, odd date forms, nulls,
// case variants of keys) takes the slow path. FuzzFastRequest holds it to
// agreeing with the schema.
func fastRequest(value []byte) (in events.PayoutRequested, ok bool) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(value, &fields) != nil {
		return in, false
	}
	var required int
	for k, raw := range fields {
		switch k {
		case "intentId":
			in.IntentID, ok = boundedString(raw, 1, 256)
			required++
		case "account":
			in.Account, ok = boundedString(raw, 1, 256)
			required++
		case "currency":
			in.Currency, ok = boundedString(raw, 1, 32)
			ok = ok && currencyCode.MatchString(in.Currency)
			required++
		case "address":
			in.Address, ok = boundedString(raw, 1, 256)
			ok = ok && !strings.ContainsAny(in.Address, " \t\n\f\r")
			required++
		case "amount":
			in.Amount, ok = positiveAmount(raw)
			required++
		case "comment":
			in.Comment, ok = boundedString(raw, 0, 256)
		case "executionDate":
			in.ExecutionDate, ok = dateTime(raw)
		case "requestedAt":
			in.RequestedAt, ok = dateTime(raw)
		case "metadata":
			in.Metadata, ok = stringMap(raw, 32)
		default:
			return in, false // unknown, or a case variant encoding/json would match
		}
		if !ok {
			return in, false
		}
	}
	return in, required == 5
}

var (
	currencyCode = regexp.MustCompile(`^[A-Z0-9]+(_[A-Z0-9]+)*$`)
	// The schema's positive decimal string; a JSON number is checked by value.
	positiveDecimal = regexp.MustCompile(`^([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)$`)
	// RFC 3339 in the one common form; anything else goes to the validator.
	rfc3339 = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$`)
)

// boundedString is a JSON string without escapes of min..max characters.
// Escapes and invalid UTF-8 take the slow path: decoding them exactly as
// encoding/json does is not worth a second implementation.
func boundedString(raw json.RawMessage, min, max int) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	s := string(raw[1 : len(raw)-1])
	if strings.ContainsAny(s, "\\\"") || !utf8.ValidString(s) {
		return "", false
	}
	n := utf8.RuneCountInString(s)
	return s, n >= min && n <= max
}

// stringMap is a JSON object of at most max plain string values (a null
// value would decode to "" without error, and the schema refuses it).
func stringMap(raw json.RawMessage, max int) (map[string]string, bool) {
	var m map[string]json.RawMessage
	if raw[0] != '{' || json.Unmarshal(raw, &m) != nil || len(m) > max {
		return nil, false
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		s, ok := boundedString(v, 0, 1<<20)
		if !ok {
			return nil, false
		}
		out[k] = s
	}
	return out, true
}

func positiveAmount(raw json.RawMessage) (events.Amount, bool) {
	if raw[0] == '"' {
		s, ok := boundedString(raw, 1, 1024)
		if !ok || !positiveDecimal.MatchString(s) {
			return events.Amount{}, false
		}
		a, err := events.ParseAmount(s)
		return a, err == nil
	}
	if raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return events.Amount{}, false // true, false, null, an object, an array
	}
	a, err := events.ParseAmount(string(raw))
	return a, err == nil && a.IsPositive()
}

func dateTime(raw json.RawMessage) (*time.Time, bool) {
	s, ok := boundedString(raw, 20, 64)
	if !ok || !rfc3339.MatchString(s) {
		return nil, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return nil, false
	}
	return &t, true
}
