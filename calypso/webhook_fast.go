package calypso

import (
	"bytes"
	"unicode/utf8"
)

// parseWebhookFast decodes a plain webhook body in one pass: the envelope
// and, for the payout event types, its data, where encoding/json takes two
// decodes (and four scans of the data's bytes). It is the ingress's largest
// cost per webhook by the profile.
//
// It is sound, not complete: ok means the body is exactly what
// parseWebhookSlow accepts and w is what it returns; !ok means "not sure",
// and the caller decodes with encoding/json, which decides and names the
// error. Anything unusual takes that path: escapes in keys or in the
// strings decoded, null or mistyped fields, duplicate keys, keys that
// encoding/json would match case-insensitively, non-ASCII keys, deep
// nesting. FuzzParseWebhookFast holds the two to agreeing.
func parseWebhookFast(body []byte) (w *Webhook, ok bool) {
	s := jsonScan{b: body}
	s.ws()
	if s.i >= len(body) || body[s.i] != '{' {
		return nil, false
	}
	s.i++
	var (
		wh      Webhook
		pe      PayoutEvent
		typedOK bool // data was an object that decoded as a PayoutEvent
		seen    uint8
	)
	for first := true; ; first = false {
		key, end, ok := s.member(first)
		if !ok {
			return nil, false
		}
		if end {
			break
		}
		raw, ok := s.value()
		if !ok {
			return nil, false
		}
		var bit uint8
		switch string(key) {
		case "requestId":
			bit = 1 << 0
			wh.RequestID, ok = plainString(raw)
		case "id":
			bit = 1 << 1
			wh.ID, ok = fastID(raw)
		case "createdDate":
			bit = 1 << 2
			wh.CreatedDate, ok = fastTime(raw)
		case "level":
			bit = 1 << 3
			wh.Level, ok = plainString(raw)
		case "service":
			bit = 1 << 4
			wh.Service, ok = plainString(raw)
		case "eventType":
			bit = 1 << 5
			wh.EventType, ok = plainString(raw)
		case "data":
			bit = 1 << 6
			wh.Data = bytes.Clone(raw) // encoding/json copies a RawMessage too
			if raw[0] == '{' {
				pe, typedOK = fastPayoutEvent(raw)
			}
		default:
			ok = skippableKey(key, webhookKeys)
		}
		if !ok || seen&bit != 0 {
			return nil, false
		}
		seen |= bit
	}
	s.ws()
	if s.i != len(body) || wh.ID == "" || wh.EventType == "" {
		return nil, false
	}
	switch wh.EventType {
	case EventPayoutChangeStatus, EventPayoutConfirmed, EventPayoutHashReceived, EventPayoutValidationError:
		if !typedOK {
			return nil, false
		}
		wh.Payout = &pe
	}
	return &wh, true
}

// fastPayoutEvent decodes the data object of a payout webhook (raw is one
// syntactically valid JSON object); !ok: not sure.
func fastPayoutEvent(raw []byte) (pe PayoutEvent, ok bool) {
	s := jsonScan{b: raw, i: 1}
	var seen uint16
	for first := true; ; first = false {
		key, end, ok := s.member(first)
		if !ok {
			return pe, false
		}
		if end {
			return pe, true
		}
		v, ok := s.value()
		if !ok {
			return pe, false
		}
		var bit uint16
		switch string(key) {
		case "type":
			bit = 1 << 0
			pe.Type, ok = plainString(v)
		case "parentExternalId":
			bit = 1 << 1
			pe.ParentExternalID, ok = fastID(v)
		case "payoutStatus":
			bit = 1 << 2
			var st string
			st, ok = plainString(v)
			pe.PayoutStatus = State(st)
		case "hash":
			bit = 1 << 3
			pe.Hash, ok = plainString(v)
		case "idempotencyKey":
			bit = 1 << 4
			pe.IdempotencyKey, ok = plainString(v)
		case "currency":
			bit = 1 << 5
			pe.Currency, ok = plainString(v)
		case "externalId":
			bit = 1 << 6
			pe.ExternalID, ok = plainString(v)
		case "createdDate":
			bit = 1 << 7
			pe.CreatedDate, ok = fastTime(v)
		case "message":
			bit = 1 << 8
			pe.Message, ok = plainString(v)
		case "dealWithdrawalId":
			bit = 1 << 9
			pe.DealWithdrawalID, ok = fastID(v)
		case "validationStatus":
			bit = 1 << 10
			pe.ValidationStatus, ok = plainString(v)
		case "approved":
			bit = 1 << 11
			pe.Approved = bytes.Clone(v)
		default:
			ok = skippableKey(key, payoutEventKeys)
		}
		if !ok || seen&bit != 0 {
			return pe, false
		}
		seen |= bit
	}
}

// The JSON names of Webhook's and PayoutEvent's fields, normalised as
// skippableKey compares them.
var (
	webhookKeys     = [][]byte{[]byte("requestid"), []byte("id"), []byte("createddate"), []byte("level"), []byte("service"), []byte("eventtype"), []byte("data")}
	payoutEventKeys = [][]byte{[]byte("type"), []byte("parentexternalid"), []byte("payoutstatus"), []byte("hash"), []byte("idempotencykey"), []byte("currency"),
		[]byte("externalid"), []byte("createddate"), []byte("message"), []byte("dealwithdrawalid"), []byte("validationstatus"), []byte("approved")}
)

// skippableKey says whether encoding/json certainly ignores key, which
// matched none of the fields exactly: it is ASCII and no field's name
// matches it case-insensitively, even ignoring '-' and '_' (the stricter
// reading, whichever rule a JSON version applies).
func skippableKey(key []byte, known [][]byte) bool {
	var buf [32]byte
	n := 0
	for _, c := range key {
		switch {
		case c >= utf8.RuneSelf:
			return false
		case c == '-' || c == '_':
			continue
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		if n == len(buf) {
			return true // longer than any field's name
		}
		buf[n] = c
		n++
	}
	for _, k := range known {
		if bytes.Equal(buf[:n], k) {
			return false
		}
	}
	return true
}

// plainString is a JSON string without escapes, in valid UTF-8 (which
// encoding/json keeps as is); anything else is for encoding/json.
func plainString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	in := raw[1 : len(raw)-1]
	if bytes.IndexByte(in, '\\') >= 0 || !utf8.Valid(in) {
		return "", false
	}
	return string(in), true
}

// fastID is ID.UnmarshalJSON, without its second decode for plain strings
// and numbers (a scanned number's text is what json.Number keeps).
func fastID(raw []byte) (ID, bool) {
	switch c := raw[0]; {
	case c == '"':
		if s, ok := plainString(raw); ok {
			return ID(s), true
		}
	case c == '-' || '0' <= c && c <= '9':
		return ID(raw), true
	}
	var id ID
	return id, id.UnmarshalJSON(raw) == nil
}

// fastTime is Time.UnmarshalJSON, without its second decode for plain
// strings.
func fastTime(raw []byte) (Time, bool) {
	if s, ok := plainString(raw); ok {
		if s == "" {
			return Time{}, true
		}
		t, err := ParseTime(s)
		return Time{t}, err == nil
	}
	var t Time
	return t, t.UnmarshalJSON(raw) == nil
}

// maxScanDepth bounds the nesting the fast path reads; deeper is for
// encoding/json (whose own limit is far higher).
const maxScanDepth = 32

// jsonScan checks JSON syntax as encoding/json does, over b from i. Every
// method returns ok=false on anything it does not accept, which includes
// all invalid JSON.
type jsonScan struct {
	b     []byte
	i     int
	depth int
}

func (s *jsonScan) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// member reads the next member's key of the object being read (just past
// its '{' when first) and the ':' after it; end: the object closed. Keys
// with escapes are refused.
func (s *jsonScan) member(first bool) (key []byte, end, ok bool) {
	s.ws()
	if s.i >= len(s.b) {
		return nil, false, false
	}
	switch c := s.b[s.i]; {
	case c == '}':
		s.i++
		return nil, true, true
	case !first && c == ',':
		s.i++
		s.ws()
	case !first:
		return nil, false, false
	}
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false, false
	}
	start := s.i
	if esc, ok := s.str(); !ok || esc {
		return nil, false, false
	}
	key = s.b[start+1 : s.i-1]
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != ':' {
		return nil, false, false
	}
	s.i++
	return key, false, true
}

// value reads one value after optional whitespace and returns its bytes.
func (s *jsonScan) value() ([]byte, bool) {
	s.ws()
	start := s.i
	if !s.skip() {
		return nil, false
	}
	return s.b[start:s.i], true
}

func (s *jsonScan) skip() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		_, ok := s.str()
		return ok
	case c == '{' || c == '[':
		if s.depth++; s.depth > maxScanDepth {
			return false
		}
		defer func() { s.depth-- }()
		s.i++
		if c == '{' {
			for first := true; ; first = false {
				_, end, ok := s.member(first)
				if !ok {
					return false
				}
				if end {
					return true
				}
				if _, ok := s.value(); !ok {
					return false
				}
			}
		}
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == ']' {
			s.i++
			return true
		}
		for {
			if _, ok := s.value(); !ok {
				return false
			}
			s.ws()
			if s.i >= len(s.b) {
				return false
			}
			switch s.b[s.i] {
			case ']':
				s.i++
				return true
			case ',':
				s.i++
			default:
				return false
			}
		}
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || '0' <= c && c <= '9':
		return s.number()
	}
	return false
}

func (s *jsonScan) literal(lit string) bool {
	if !bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
		return false
	}
	s.i += len(lit)
	return true
}

// str reads a string; esc says it holds escapes. Control characters are
// invalid JSON; other bytes, valid UTF-8 or not, are accepted as
// encoding/json accepts them.
func (s *jsonScan) str() (esc, ok bool) {
	s.i++ // '"'
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return esc, true
		case c < 0x20:
			return esc, false
		case c == '\\':
			esc = true
			if s.i+1 >= len(s.b) {
				return esc, false
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.b) {
					return esc, false
				}
				for _, h := range s.b[s.i+2 : s.i+6] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return esc, false
					}
				}
				s.i += 6
			default:
				return esc, false
			}
		default:
			s.i++
		}
	}
	return esc, false
}

// number reads a number by JSON's grammar.
func (s *jsonScan) number() bool {
	digits := func() int {
		n := 0
		for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	if s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.b) && s.b[s.i] == '0':
		s.i++
	case digits() == 0:
		return false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if digits() == 0 {
			return false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}
