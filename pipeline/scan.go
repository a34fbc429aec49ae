package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/payoutd/payoutd/money"
)

// scanRequest reads a request's raw bytes once, before any decoder or
// library sees them, and refuses what those would silently mishandle:
// invalid UTF-8 (encoding/json turns it into U+FFFD, and it was paid),
// a key twice in one object (encoding/json keeps the last: "amount":"1",
// "amount":"1000" was paid as 1000), and number tokens beyond money's
// bounds (the JSON Schema library expands 1e10000001 through big.Rat and
// panics). Anything else that is not JSON it leaves to the decoder, which
// names the error.
func scanRequest(b []byte) *Rejection {
	if !utf8.Valid(b) {
		i := 0
		for i < len(b) {
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			i += n
		}
		return &Rejection{ReasonInvalidText, fmt.Sprintf("the value is not valid UTF-8 (byte %d); text must be UTF-8 and is never repaired", i)}
	}
	s := scanner{b: b}
	s.space()
	s.value(0)
	s.space()
	switch {
	case s.rej != nil:
		return s.rej
	case s.bad || s.i != len(b):
		return nil // not JSON: the decoder names the error
	}
	return s.dup // a duplicate key counts only in a JSON document
}

// maxDepth bounds nesting: a request is two levels deep.
const maxDepth = 64

// scanner walks the bytes without allocating on the common path: keys are
// compared as sub-slices, and a value's JSON pointer is built only for an
// error.
type scanner struct {
	b    []byte
	i    int
	rej  *Rejection // refused at once: nothing else may see these bytes
	dup  *Rejection // the first duplicate key, if the rest is JSON
	bad  bool       // not JSON: the decoder will say why
	path [][]byte   // keys (or array indexes) down to the current value
}

func (s *scanner) stop() bool { return s.rej != nil || s.bad }

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// pointer is the current value's JSON pointer, "" for the document.
func (s *scanner) pointer() string {
	var b strings.Builder
	for _, k := range s.path {
		b.WriteByte('/')
		b.Write(k)
	}
	return b.String()
}

// value scans one JSON value.
func (s *scanner) value(depth int) {
	if depth > maxDepth {
		s.rej = &Rejection{ReasonMalformed, fmt.Sprintf("nested deeper than %d levels", maxDepth)}
		return
	}
	if s.i >= len(s.b) {
		s.bad = true
		return
	}
	switch c := s.b[s.i]; {
	case c == '{':
		s.object(depth)
	case c == '[':
		s.i++
		s.space()
		if s.i < len(s.b) && s.b[s.i] == ']' {
			s.i++
			return
		}
		for n := 0; !s.stop(); n++ {
			s.space()
			s.path = append(s.path, strconv.AppendInt(nil, int64(n), 10))
			s.value(depth + 1)
			s.path = s.path[:len(s.path)-1]
			s.space()
			if s.stop() || !s.next(']') {
				return
			}
		}
	case c == '"':
		s.str()
	case c == '-' || (c >= '0' && c <= '9'):
		start := s.i
		for s.i < len(s.b) && isNumberByte(s.b[s.i]) {
			s.i++
		}
		if !validNumber(s.b[start:s.i]) {
			s.bad = true
			return
		}
		if err := money.CheckNumberText(s.b[start:s.i]); err != nil {
			reason := ReasonSchema
			field := s.pointer()
			if field == "/amount" {
				reason = ReasonAmount
			}
			s.rej = &Rejection{reason, fieldName(field) + ": " + err.Error()}
		}
	default:
		for _, lit := range [...]string{"true", "false", "null"} {
			if bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
				s.i += len(lit)
				return
			}
		}
		s.bad = true // not JSON: the decoder will say why
	}
}

// next consumes a ',' (true: another element follows) or the closing byte.
func (s *scanner) next(closing byte) bool {
	if s.i >= len(s.b) {
		s.bad = true
		return false
	}
	switch s.b[s.i] {
	case ',':
		s.i++
		return true
	case closing:
		s.i++
		return false
	}
	s.bad = true
	return false
}

func (s *scanner) object(depth int) {
	s.i++
	s.space()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return
	}
	var small [16][]byte
	keys := small[:0]
	var set map[string]bool // once there are many keys
	for !s.stop() {
		s.space()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			s.bad = true
			return
		}
		key, ok := s.str()
		if !ok {
			return
		}
		dup := false
		if set != nil {
			dup = set[string(key)]
			set[string(key)] = true
		} else {
			for _, k := range keys {
				dup = dup || bytes.Equal(k, key)
			}
			if len(keys) < cap(keys) {
				keys = append(keys, key)
			} else {
				set = make(map[string]bool, 64)
				for _, k := range keys {
					set[string(k)] = true
				}
				set[string(key)] = true
			}
		}
		if dup && s.dup == nil {
			s.dup = &Rejection{ReasonDuplicateKey, fmt.Sprintf("%s: key %q appears twice; which one counts is ambiguous, so neither is paid",
				fieldName(s.pointer()), money.Truncate(string(key), 64))}
		}
		s.space()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			s.bad = true
			return
		}
		s.i++
		s.space()
		s.path = append(s.path, key)
		s.value(depth + 1)
		s.path = s.path[:len(s.path)-1]
		s.space()
		if s.stop() || !s.next('}') {
			return
		}
	}
}

// str scans a string token and returns its text: a sub-slice when it holds
// no escapes, decoded (rare) when it does.
func (s *scanner) str() ([]byte, bool) {
	start := s.i
	s.i++
	escaped := false
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			escaped = true
			s.i += 2
			continue
		case '"':
			s.i++
			raw := s.b[start:s.i]
			if !escaped {
				return raw[1 : len(raw)-1], true
			}
			var out string
			if json.Unmarshal(raw, &out) != nil {
				s.bad = true
				return nil, false
			}
			return []byte(out), true
		}
		if s.b[s.i] < 0x20 {
			break // a raw control character: not JSON
		}
		s.i++
	}
	s.bad = true
	return nil, false
}

// validNumber is JSON's number grammar:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func validNumber(b []byte) bool {
	i := 0
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(b)
}

func isNumberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

func fieldName(pointer string) string {
	if pointer == "" {
		return "(document)"
	}
	return pointer
}

// checkIdentifier refuses what a person cannot see or a system may read
// differently: control characters (NUL, ESC), format characters (U+200B
// zero-width space, U+202E right-to-left override), every kind of space
// (NBSP, U+3000 ideographic space) and U+FFFD, which stands for bytes that
// were not text. An address, account or id that differs from what an
// operator reads pays someone else.
func checkIdentifier(field, s string) *Rejection {
	for i, r := range s {
		if r < utf8.RuneSelf && r > ' ' && r != 0x7f {
			continue // printable ASCII: the common case, without table look-ups
		}
		if r < utf8.RuneSelf || r == utf8.RuneError || unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r) ||
			unicode.IsSpace(r) || unicode.Is(unicode.Zs, r) || unicode.Is(unicode.Co, r) {
			return &Rejection{ReasonInvalidText, fmt.Sprintf("%s has %s at byte %d: control, invisible and space characters are never part of an %s",
				field, runeName(r), i, field)}
		}
	}
	return nil
}

// checkComment allows spaces in free text, but not control characters or
// the format characters that reorder or hide what is shown.
func checkComment(field, s string) *Rejection {
	for i, r := range s {
		if r < utf8.RuneSelf && r >= ' ' && r != 0x7f {
			continue
		}
		if r < utf8.RuneSelf || r == utf8.RuneError || unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r) {
			return &Rejection{ReasonInvalidText, fmt.Sprintf("%s has %s at byte %d: control and invisible characters are not allowed", field, runeName(r), i)}
		}
	}
	return nil
}

func runeName(r rune) string {
	switch r {
	case 0:
		return "U+0000 (NUL)"
	case 0x1b:
		return "U+001B (ESC)"
	case ' ':
		return "U+0020 (space)"
	case 0xa0:
		return "U+00A0 (no-break space)"
	case 0x200b:
		return "U+200B (zero-width space)"
	case 0x202e:
		return "U+202E (right-to-left override)"
	case 0x3000:
		return "U+3000 (ideographic space)"
	case utf8.RuneError:
		return "U+FFFD (replacement character: bytes that were not text)"
	}
	return fmt.Sprintf("%U", r)
}
