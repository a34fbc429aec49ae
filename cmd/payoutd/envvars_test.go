package main

import (
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// flagsWithoutEnv are the flags that have no PAYOUTD_* variable on purpose.
var flagsWithoutEnv = map[string]string{
	"help":    "asks for help; a variable would print help instead of running",
	"version": "asks for the version; a variable would print it instead of running",
}

// Every flag of every command has a PAYOUTD_* variable, as the help and the
// README promise, except those listed in flagsWithoutEnv.
func TestEveryFlagHasAnEnvironmentVariable(t *testing.T) {
	var c cli
	parser, err := newParser(&c, &problems{})
	if err != nil {
		t.Fatal(err)
	}
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, f := range n.Flags {
			if _, ok := flagsWithoutEnv[f.Name]; ok {
				continue
			}
			if len(f.Envs) == 0 {
				t.Errorf("payoutd %s --%s has no PAYOUTD_* variable", n.Path(), f.Name)
			}
			for _, e := range f.Envs {
				if !strings.HasPrefix(e, "PAYOUTD_") {
					t.Errorf("payoutd %s --%s: variable %s does not start with PAYOUTD_", n.Path(), f.Name, e)
				}
			}
		}
		for _, ch := range n.Children {
			walk(ch)
		}
	}
	walk(parser.Model.Node)
}
