package schemas_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/payoutd/payoutd/schemas"
)

func load(t *testing.T) *schemas.Set {
	t.Helper()
	s, err := schemas.Load()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestExamplesValidate(t *testing.T) {
	s := load(t)
	if len(s.Names()) != 15 {
		t.Fatalf("want 15 event schemas, have %d: %v", len(s.Names()), s.Names())
	}
	for _, name := range s.Names() {
		t.Run(name, func(t *testing.T) {
			ex, err := schemas.Example(name)
			if err != nil {
				t.Fatalf("no example beside the schema: %v", err)
			}
			if err := s.Validate(name, ex); err != nil {
				t.Fatalf("example does not validate: %v", err)
			}
		})
	}
}

// mutate returns the example of name with fn applied to its top-level object.
func mutate(t *testing.T, name string, fn func(map[string]any)) []byte {
	t.Helper()
	ex, err := schemas.Example(name)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(ex, &doc); err != nil {
		t.Fatal(err)
	}
	fn(doc)
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// requireViolation asserts doc is rejected with a message naming field.
func requireViolation(t *testing.T, s *schemas.Set, name string, doc []byte, field string) {
	t.Helper()
	err := s.Validate(name, doc)
	var se *schemas.Error
	if !errors.As(err, &se) {
		t.Fatalf("%s accepted %s, want a violation naming %q (err=%v)", name, doc, field, err)
	}
	if !strings.Contains(err.Error(), field) {
		t.Fatalf("violation does not name %q: %v", field, err)
	}
}

// requiredFields reads "required" of the schema and of the definitions it is built on.
func requiredFields(t *testing.T, name string) []string {
	t.Helper()
	var sch struct {
		Required []string `json:"required"`
		AllOf    []struct {
			Ref string `json:"$ref"`
		} `json:"allOf"`
	}
	src, _ := schemas.Source(name)
	if err := json.Unmarshal(src, &sch); err != nil {
		t.Fatal(err)
	}
	req := sch.Required
	if len(sch.AllOf) > 0 {
		var common struct {
			Defs map[string]struct {
				Required []string `json:"required"`
			} `json:"$defs"`
		}
		c, _ := schemas.Source("common")
		if err := json.Unmarshal(c, &common); err != nil {
			t.Fatal(err)
		}
		for _, a := range sch.AllOf {
			def := a.Ref[strings.LastIndex(a.Ref, "/")+1:]
			req = append(req, common.Defs[def].Required...)
		}
	}
	return req
}

func TestMissingRequiredFieldIsNamed(t *testing.T) {
	s := load(t)
	for _, name := range s.Names() {
		req := requiredFields(t, name)
		if len(req) < 3 {
			t.Fatalf("%s: suspiciously few required fields %v", name, req)
		}
		for _, field := range req {
			t.Run(name+"/"+field, func(t *testing.T) {
				doc := mutate(t, name, func(m map[string]any) { delete(m, field) })
				requireViolation(t, s, name, doc, "'"+field+"'")
			})
		}
	}
}

func TestWrongTypeIsNamed(t *testing.T) {
	s := load(t)
	for _, name := range s.Names() {
		ex, _ := schemas.Example(name)
		var doc map[string]any
		_ = json.Unmarshal(ex, &doc)
		for field := range doc {
			t.Run(name+"/"+field, func(t *testing.T) {
				// No field of any event is an array of arrays.
				bad := mutate(t, name, func(m map[string]any) { m[field] = []any{[]any{}} })
				requireViolation(t, s, name, bad, "/"+field)
			})
		}
	}
}

func TestBadAmountsAreRejected(t *testing.T) {
	s := load(t)
	amountFields := map[string]bool{"amount": true, "total": true, "fee": true, "required": true, "available": true}
	bad := []any{"-1", "-0.5", "1,5", "1e3", "", "abc", -3, "NaN"}
	for _, name := range s.Names() {
		ex, _ := schemas.Example(name)
		var doc map[string]any
		_ = json.Unmarshal(ex, &doc)
		for field := range doc {
			if !amountFields[field] {
				continue
			}
			for _, v := range bad {
				doc := mutate(t, name, func(m map[string]any) { m[field] = v })
				requireViolation(t, s, name, doc, "/"+field)
			}
		}
	}
}

func TestZeroIsNotAPayableAmount(t *testing.T) {
	s := load(t)
	for _, zero := range []any{"0", "0.000", "00", 0, 0.0} {
		doc := mutate(t, "payout-requested.v1", func(m map[string]any) { m["amount"] = zero })
		requireViolation(t, s, "payout-requested.v1", doc, "/amount")
	}
	for _, ok := range []any{"0.000001", "12.50", 12.5, "100"} {
		doc := mutate(t, "payout-requested.v1", func(m map[string]any) { m["amount"] = ok })
		if err := s.Validate("payout-requested.v1", doc); err != nil {
			t.Errorf("amount %v rejected: %v", ok, err)
		}
	}
}

func TestBadEnumIsNamed(t *testing.T) {
	s := load(t)
	enums := map[string]bool{"state": true, "reason": true, "source": true, "payoutState": true}
	n := 0
	for _, name := range s.Names() {
		ex, _ := schemas.Example(name)
		var doc map[string]any
		_ = json.Unmarshal(ex, &doc)
		for field := range doc {
			if !enums[field] || (field == "reason" && (name == "intent-failed.v1" || name == "payout-undecided.v1")) {
				continue
			}
			n++
			bad := mutate(t, name, func(m map[string]any) { m[field] = "NOT_A_VALUE" })
			requireViolation(t, s, name, bad, "/"+field)
		}
	}
	if n < 8 {
		t.Fatalf("only %d enum fields checked", n)
	}
}

func TestUnknownFieldsAndNonJSON(t *testing.T) {
	s := load(t)
	doc := mutate(t, "batch-planned.v1", func(m map[string]any) { m["surprise"] = 1 })
	requireViolation(t, s, "batch-planned.v1", doc, "surprise")
	if errors.Is(s.Validate("batch-planned.v1", doc), schemas.ErrNotJSON) {
		t.Fatal("a schema violation is not malformed JSON")
	}
	doc = mutate(t, "payout-status-changed.v1", func(m map[string]any) { m["surprise"] = 1 })
	requireViolation(t, s, "payout-status-changed.v1", doc, "surprise")

	if err := s.Validate("payout-requested.v1", []byte(`{"intentId":`)); !errors.Is(err, schemas.ErrNotJSON) || !strings.Contains(err.Error(), "not valid JSON") {
		t.Fatalf("truncated JSON: %v", err)
	}
	if err := s.Validate("no-such.v1", []byte(`{}`)); !errors.Is(err, schemas.ErrUnknownSchema) {
		t.Fatalf("unknown schema: %v", err)
	}
}
