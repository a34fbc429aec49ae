package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/alecthomas/kong"
)

// configFile loads a --config JSON file for kong. Keys are flag names
// ("kafka-brokers"; "kafka_brokers" and "kafkaBrokers" work too). A value
// from the file fills a flag only when neither the command line nor the
// flag's PAYOUTD_* variable set it: flags > environment > file > defaults.
func configFile(r io.Reader) (kong.Resolver, error) {
	values := map[string]any{}
	dec := json.NewDecoder(r)
	dec.UseNumber()
	if err := dec.Decode(&values); err != nil {
		// Never echo the file's content: it may hold secrets.
		return nil, fmt.Errorf("config file is not a JSON object: %s", jsonErrorWithoutContent(err))
	}
	normalised := make(map[string]any, len(values))
	for k, v := range values {
		if n, ok := v.(json.Number); ok {
			v = n.String() // kong parses the text, exactly
		}
		normalised[strings.ReplaceAll(k, "-", "_")] = v
	}
	b, err := json.Marshal(normalised)
	if err != nil {
		return nil, err
	}
	inner, err := kong.JSON(strings.NewReader(string(b)))
	if err != nil {
		return nil, err
	}
	return environmentFirst{inner}, nil
}

// environmentFirst lets a flag's environment variable win over the file:
// kong applies environment variables as defaults, which a resolver would
// otherwise override.
type environmentFirst struct{ kong.Resolver }

func (r environmentFirst) Resolve(ctx *kong.Context, parent *kong.Path, flag *kong.Flag) (any, error) {
	for _, env := range flag.Envs {
		if _, set := os.LookupEnv(env); set {
			return nil, nil
		}
	}
	return r.Resolver.Resolve(ctx, parent, flag)
}

// jsonErrorWithoutContent describes a JSON decoding error by position only.
func jsonErrorWithoutContent(err error) string {
	switch e := err.(type) {
	case *json.SyntaxError:
		return fmt.Sprintf("syntax error at byte %d", e.Offset)
	case *json.UnmarshalTypeError:
		return fmt.Sprintf("expected an object, found %s", e.Value)
	}
	return "unreadable"
}

// helpCmd is `payoutd help [COMMAND…]`, the same text as --help.
type helpCmd struct {
	Command []string `arg:"" optional:"" help:"The command to explain."`
}

func (helpCmd) validate(*problems) {}

func (h *helpCmd) run(context.Context, io.Writer) error {
	code := mainExit(append(append([]string{}, h.Command...), "--help"))
	if code != exitOK {
		return &failure{code: code}
	}
	return nil
}

// completionCmd prints what enables tab completion: the shells call
// payoutd back with COMP_LINE set, and kongplete answers from the command
// tree, so completions never drift from the flags.
type completionCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"bash, zsh or fish."`
}

func (completionCmd) validate(*problems) {}

func (c *completionCmd) run(_ context.Context, out io.Writer) error {
	bin, err := os.Executable()
	if err != nil {
		bin = "payoutd"
	}
	var line string
	switch c.Shell {
	case "bash":
		line = fmt.Sprintf("complete -C %q payoutd", bin)
	case "zsh":
		line = fmt.Sprintf("autoload -U +X bashcompinit && bashcompinit\ncomplete -C %q payoutd", bin)
	case "fish":
		line = fmt.Sprintf("complete -c payoutd -f -a '(env COMP_LINE=(commandline -cp) %s)'", bin)
	}
	_, err = fmt.Fprintf(out, "# Add to your shell's startup file, or eval it:\n%s\n", line)
	return err
}
