package main

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
	"github.com/payoutd/payoutd/schemas"
)

// csvColumns are the CSV header names, the first five required.
var csvColumns = []string{"intentId", "account", "currency", "amount", "address", "executionDate", "comment"}

// row is one intent read from a file, at its line.
type row struct {
	line   int
	intent events.PayoutRequested
	value  []byte // the JSON sent, exact amount as a decimal string
}

// rowError is one bad row, by line number.
type rowError struct {
	line int
	msg  string
}

func (e rowError) String() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

// intentReader validates intents the way the batcher will: the
// PayoutRequested schema first, then the money rules (a known currency, a
// positive amount within its decimals). Amounts are read from their text and
// never pass through a float64.
type intentReader struct {
	schemas    *schemas.Set
	currencies map[string]calypso.CurrencyRule
	seen       map[string]int // intent id → first line
	// batcher holds the batcher's own rules (text, amount bounds, the
	// execution horizon), so a row it would send to the DLQ is refused here.
	batcher *pipeline.RequestChecker
	now     func() time.Time
}

// newIntentReader checks with the batcher's rules; executionHorizon is its
// --batcher-execution-horizon (0: the default).
func newIntentReader(executionHorizon time.Duration) (*intentReader, error) {
	set, err := schemas.Load()
	if err != nil {
		return nil, err
	}
	currencies := calypso.DefaultCurrencies()
	checker, err := pipeline.NewRequestChecker(currencies, 0, executionHorizon)
	if err != nil {
		return nil, err
	}
	return &intentReader{schemas: set, currencies: currencies, seen: map[string]int{}, batcher: checker, now: time.Now}, nil
}

// readFile reads every row of a CSV or JSON-lines file; format is "csv" or
// "jsonl". Bad rows are all returned, not just the first.
func (ir *intentReader) readFile(r io.Reader, format string) ([]row, []rowError, error) {
	if format == "csv" {
		return ir.readCSV(r)
	}
	return ir.readJSONL(r)
}

func (ir *intentReader) readCSV(r io.Reader) ([]row, []rowError, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if err != nil {
		return nil, nil, fmt.Errorf("reading the CSV header: %w", err)
	}
	col := map[string]int{}
	var bad []rowError
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		if !slices.Contains(csvColumns, h) {
			bad = append(bad, rowError{1, fmt.Sprintf("unknown column %q (want %s)", h, strings.Join(csvColumns, ","))})
			continue
		}
		col[h] = i
	}
	for _, req := range csvColumns[:5] {
		if _, ok := col[req]; !ok {
			bad = append(bad, rowError{1, fmt.Sprintf("missing column %q", req)})
		}
	}
	if len(bad) > 0 {
		return nil, bad, nil
	}
	var rows []row
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line, _ := cr.FieldPos(0)
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			bad = append(bad, rowError{pe.Line, pe.Err.Error()})
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		if len(rec) != len(header) {
			bad = append(bad, rowError{line, fmt.Sprintf("has %d fields, the header %d", len(rec), len(header))})
			continue
		}
		doc := map[string]string{}
		for name, i := range col {
			if v := rec[i]; v != "" {
				doc[name] = v
			}
		}
		value, _ := json.Marshal(doc) // strings only: cannot fail
		if rw, msg := ir.check(line, value); msg != "" {
			bad = append(bad, rowError{line, msg})
		} else {
			rows = append(rows, rw)
		}
	}
	return rows, bad, nil
}

func (ir *intentReader) readJSONL(r io.Reader) ([]row, []rowError, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var rows []row
	var bad []rowError
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if rw, msg := ir.check(line, append([]byte(nil), b...)); msg != "" {
			bad = append(bad, rowError{line, msg})
		} else {
			rows = append(rows, rw)
		}
	}
	return rows, bad, sc.Err()
}

// check validates one JSON document and returns the row to send, or why not.
func (ir *intentReader) check(line int, doc []byte) (row, string) {
	if err := ir.schemas.Validate(events.SchemaName(events.TypePayoutRequested), doc); err != nil {
		var se *schemas.Error
		if errors.As(err, &se) {
			return row{}, violations(se)
		}
		return row{}, err.Error()
	}
	var in events.PayoutRequested
	if err := json.Unmarshal(doc, &in); err != nil {
		return row{}, err.Error()
	}
	rule, ok := ir.currencies[in.Currency]
	switch {
	case !ok:
		return row{}, fmt.Sprintf("currency %q is not payable (known: %s)", in.Currency, strings.Join(sortedKeys(ir.currencies), ", "))
	case !in.Amount.IsPositive():
		return row{}, fmt.Sprintf("amount: must be positive (got %s)", in.Amount)
	case !in.Amount.FitsDecimals(rule.Decimals):
		return row{}, fmt.Sprintf("amount: at most %d decimals for %s (got %s)", rule.Decimals, in.Currency, in.Amount)
	}
	if _, rej := ir.batcher.Check(doc, ir.now()); rej != nil {
		return row{}, rej.Err
	}
	if first, dup := ir.seen[in.IntentID]; dup {
		return row{}, fmt.Sprintf("intent id %q is already on line %d", in.IntentID, first)
	}
	ir.seen[in.IntentID] = line
	value, err := json.Marshal(in)
	if err != nil {
		return row{}, err.Error()
	}
	return row{line: line, intent: in, value: value}, ""
}

// violations says what is wrong with a row in words: a field whose rule is
// a pattern or format is explained by what it must look like, not by the
// schema's regular expression. One message per field.
func violations(se *schemas.Error) string {
	var parts []string
	seen := map[string]bool{}
	for _, v := range se.Violations {
		field := strings.TrimPrefix(v.Field, "/")
		if field == "" {
			field = "(row)"
		}
		if seen[field] {
			continue
		}
		seen[field] = true
		msg := v.Message
		if words, ok := fieldRules[field]; ok && isShapeViolation(msg) {
			msg = words
		}
		parts = append(parts, field+": "+msg)
	}
	return strings.Join(parts, "; ")
}

// fieldRules describe each request field's shape for a person.
var fieldRules = map[string]string{
	"amount":        "must be a positive decimal such as 12.50 (no sign, no exponent, no thousands separator)",
	"address":       "must be the recipient's address: one word, no spaces or control characters, at most 256 characters",
	"currency":      "must be a Calypso currency code such as USDT_TRX or BTC (upper case)",
	"executionDate": "must be an RFC 3339 date-time with a zone, such as 2026-12-01T09:00:00Z (a plain date like 2026-12-01 is not accepted; leave it empty to pay at once)",
	"requestedAt":   "must be an RFC 3339 date-time with a zone, such as 2026-12-01T09:00:00Z",
	"intentId":      "must be 1 to 256 characters",
	"account":       "must be 1 to 256 characters",
}

// isShapeViolation reports a violation of a pattern, format, length or
// type, which the schema words for machines.
func isShapeViolation(msg string) bool {
	for _, s := range []string{"does not match pattern", "is not valid", "got string, want", "got number, want", "length must be", "characters long"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
