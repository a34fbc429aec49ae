package main

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/alecthomas/kong"
)

// problems collects every bad setting found at start-up, so an operator
// fixes them all in one go instead of one per restart. Each entry names the
// setting by its flag and environment variable.
type problems struct {
	list []string
	seen map[string]bool
	// unparsed are settings whose value did not parse: a later check of
	// the zero value left behind would only repeat the problem.
	unparsed map[string]bool
}

// add records that setting (a flag name without dashes, or a free label) is bad.
func (p *problems) add(setting, format string, args ...any) {
	if p.unparsed[setting] {
		return
	}
	msg := setting + ": " + fmt.Sprintf(format, args...)
	if p.seen == nil {
		p.seen = map[string]bool{}
	}
	if p.seen[msg] {
		return
	}
	p.seen[msg] = true
	p.list = append(p.list, msg)
}

func (p *problems) empty() bool { return len(p.list) == 0 }

// sorted returns the problems in a stable order.
func (p *problems) sorted() []string {
	out := append([]string(nil), p.list...)
	sort.Strings(out)
	return out
}

// settingName is how a problem names a kong value: "--flag (PAYOUTD_ENV)".
func settingName(v *kong.Value) string {
	name := "--" + v.Name
	if v.Flag == nil {
		name = "<" + v.Name + ">"
	}
	if len(v.Tag.Envs) > 0 {
		name += " (" + strings.Join(v.Tag.Envs, ", ") + ")"
	}
	return name
}

// lenient wraps kong's own mapper for a type so that a value that does not
// parse is recorded in p instead of ending the parse: the validation pass
// then reports it together with every other bad setting.
func (p *problems) lenient(next kong.Mapper) kong.MapperFunc {
	return func(ctx *kong.DecodeContext, target reflect.Value) error {
		tok, err := ctx.Scan.PopValue("value")
		if err != nil {
			return err
		}
		err = next.Decode(ctx.WithScanner(kong.ScanFromTokens(tok)), target)
		if err != nil {
			name := settingName(ctx.Value)
			p.add(name, "%v", err)
			if p.unparsed == nil {
				p.unparsed = map[string]bool{}
			}
			p.unparsed[name] = true
			target.Set(reflect.Zero(target.Type()))
		}
		return nil
	}
}

// lenientMappers are the kong options that make number and duration flags
// lenient (see problems.lenient).
func (p *problems) lenientMappers() []kong.Option {
	reg := kong.NewRegistry().RegisterDefaults()
	opts := []kong.Option{
		kong.TypeMapper(reflect.TypeFor[time.Duration](), p.lenient(reg.ForType(reflect.TypeFor[time.Duration]()))),
	}
	for _, k := range []reflect.Kind{reflect.Int, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Float64} {
		opts = append(opts, kong.KindMapper(k, p.lenient(reg.ForType(kindType(k)))))
	}
	return opts
}

func kindType(k reflect.Kind) reflect.Type {
	switch k {
	case reflect.Int16:
		return reflect.TypeFor[int16]()
	case reflect.Int32:
		return reflect.TypeFor[int32]()
	case reflect.Int64:
		return reflect.TypeFor[int64]()
	case reflect.Float64:
		return reflect.TypeFor[float64]()
	}
	return reflect.TypeFor[int]()
}
