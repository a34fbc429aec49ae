// Package schemas holds the JSON Schema (2020-12) of every payoutd event,
// embedded in the binary, and validates JSON documents against them.
//
// A schema is named by its file stem, e.g. "payout-requested.v1" for
// payout-requested.v1.schema.json; an example document that validates lives
// beside each schema as <name>.example.json, for downstream teams.
// Validation errors name every offending field as a JSON pointer.
package schemas

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

//go:embed *.schema.json *.example.json
var files embed.FS

const idPrefix = "urn:payoutd:schema:"

// Set is the compiled schemas, safe for concurrent use.
type Set struct {
	schemas map[string]*jsonschema.Schema
}

// Load compiles every embedded schema.
func Load() (*Set, error) {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	names, err := fs.Glob(files, "*.schema.json")
	if err != nil {
		return nil, err
	}
	for _, f := range names {
		b, err := files.ReadFile(f)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", f, err)
		}
		if err := c.AddResource(idPrefix+strings.TrimSuffix(f, ".schema.json"), doc); err != nil {
			return nil, fmt.Errorf("schema %s: %w", f, err)
		}
	}
	s := &Set{schemas: make(map[string]*jsonschema.Schema)}
	for _, f := range names {
		name := strings.TrimSuffix(f, ".schema.json")
		if name == "common" {
			continue
		}
		sch, err := c.Compile(idPrefix + name)
		if err != nil {
			return nil, fmt.Errorf("compiling schema %s: %w", name, err)
		}
		s.schemas[name] = sch
	}
	return s, nil
}

// MustLoad is Load for program start-up: the schemas are compiled into the
// binary, so an error is a build defect.
func MustLoad() *Set {
	s, err := Load()
	if err != nil {
		panic(err)
	}
	return s
}

// Names lists the event schemas, sorted.
func (s *Set) Names() []string {
	names := make([]string, 0, len(s.schemas))
	for n := range s.schemas {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Example returns the example document of a schema.
func Example(name string) ([]byte, error) { return files.ReadFile(name + ".example.json") }

// Source returns the schema file's bytes.
func Source(name string) ([]byte, error) { return files.ReadFile(name + ".schema.json") }

// Violation is one field that breaks a schema.
type Violation struct {
	// Field is a JSON pointer to the value, "" for the document itself.
	Field   string
	Message string
}

// Error is a document that does not match its schema.
type Error struct {
	Schema     string
	Violations []Violation
	notJSON    bool
}

// ErrNotJSON is wrapped by an *Error whose document is not JSON at all.
var ErrNotJSON = errors.New("not valid JSON")

// Unwrap lets errors.Is(err, ErrNotJSON) tell malformed input from a schema violation.
func (e *Error) Unwrap() error {
	if e.notJSON {
		return ErrNotJSON
	}
	return nil
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		field := v.Field
		if field == "" {
			field = "(document)"
		}
		parts[i] = field + ": " + v.Message
	}
	return e.Schema + ": " + strings.Join(parts, "; ")
}

// ErrUnknownSchema is returned for a schema name the set does not have.
var ErrUnknownSchema = errors.New("unknown schema")

// Validate checks doc against the named schema. A doc that is not JSON, or
// does not match, gives an *Error naming each offending field.
func (s *Set) Validate(name string, doc []byte) error {
	sch, ok := s.schemas[name]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownSchema, name)
	}
	// UnmarshalJSON keeps numbers as json.Number: no digit is lost to float64.
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return &Error{Schema: name, Violations: []Violation{{Message: "not valid JSON: " + err.Error()}}, notJSON: true}
	}
	err = sch.Validate(inst)
	var ve *jsonschema.ValidationError
	if errors.As(err, &ve) {
		e := &Error{Schema: name}
		collect(ve, message.NewPrinter(language.English), &e.Violations)
		e.Violations = dropEchoes(e.Violations)
		return e
	}
	return err
}

// collect flattens the error tree to its leaves, which say what is wrong
// where; the inner nodes only say which keyword led there.
func collect(ve *jsonschema.ValidationError, p *message.Printer, out *[]Violation) {
	if len(ve.Causes) == 0 {
		*out = append(*out, Violation{Field: pointer(ve.InstanceLocation), Message: ve.ErrorKind.LocalizedString(p)})
		return
	}
	for _, c := range ve.Causes {
		collect(c, p, out)
	}
}

func pointer(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(t))
	}
	return b.String()
}

// dropEchoes removes the "false schema" leaves that unevaluatedProperties
// reports for valid fields once a sibling $ref has failed (a failing subschema
// evaluates nothing): they repeat the real violation. Left alone, such a leaf
// is an unknown property, and says so.
func dropEchoes(vs []Violation) []Violation {
	const echo = "false schema"
	real := vs[:0:0]
	for _, v := range vs {
		if v.Message != echo {
			real = append(real, v)
		}
	}
	if len(real) > 0 {
		return real
	}
	for i := range vs {
		vs[i].Message = "property not allowed"
	}
	return vs
}
