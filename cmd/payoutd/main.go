// Command payoutd is the one binary of payoutd: the pipeline in production
// (run), everything in one process for a first look (dev), the Calypso
// sandbox, and the operator's tools (topics, produce, tail, replay).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"
	"github.com/willabides/kongplete"
)

// cli is the command tree. Every flag has an environment variable
// (PAYOUTD_…) and help text; `payoutd <command> --help` lists them.
type cli struct {
	Config  kong.ConfigFlag  `name:"config" type:"existingfile" env:"PAYOUTD_CONFIG" placeholder:"FILE" help:"Read settings from this JSON file (keys are flag names: {\"kafka-brokers\": \"k1:9092\"}); flags and PAYOUTD_* variables override it."`
	Version kong.VersionFlag `name:"version" help:"Print the version and exit."`

	Dev        devCmd        `cmd:"" help:"Run everything in one process: embedded Kafka, the Calypso sandbox, all components and sample intents, with a live summary."`
	Run        runCmd        `cmd:"" help:"Run the pipeline against a real Kafka cluster and Calypso (production)."`
	Sandbox    sandboxCmd    `cmd:"" help:"Serve the Calypso sandbox (a faithful stand-in for Calypso's mass-payout API) on its own."`
	Topics     topicsCmd     `cmd:"" help:"Create missing topics with the catalog's settings and report drift."`
	Produce    produceCmd    `cmd:"" help:"Send payout intents from a CSV or JSON-lines file to the requests topic, validated first."`
	Tail       tailCmd       `cmd:"" help:"Follow the outcomes topic (or any payoutd topic), one readable line or JSON object per record."`
	Status     statusCmd     `cmd:"" help:"Follow one payment (intent, batch, payout id or address) through every step, or show what is stuck and what failed."`
	Replay     replayCmd     `cmd:"" help:"Audit: re-derive the typed outcome events from the raw webhook topic and report every difference."`
	Chaos      chaosCmd      `cmd:"" help:"Prove the money invariants while processes die: run components as processes, SIGKILL them mid-payout, audit."`
	Probe      probeCmd      `cmd:"" help:"GET a URL and exit 0 on a 2xx answer (container health checks; the image has no curl)."`
	VersionCmd versionCmd    `cmd:"" name:"version" help:"Print the version and build information."`
	Help       helpCmd       `cmd:"" help:"Show the help of payoutd or of one command."`
	Completion completionCmd `cmd:"" help:"Print the line that enables tab completion in your shell (bash, zsh or fish)."`
}

// command is what every subcommand implements: one validation pass that
// reports every bad setting, then the work.
type command interface {
	validate(p *problems)
	run(ctx context.Context, out io.Writer) error
}

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // the command ran and failed (or found differences)
	exitUsage  = 2 // bad command line or configuration
)

func main() { os.Exit(mainExit(os.Args[1:])) }

func mainExit(args []string) int {
	if len(args) == 0 {
		// A bare `payoutd` is someone asking what it can do.
		args = []string{"--help"}
	}
	var c cli
	probs := &problems{}
	parser, err := newParser(&c, probs)
	if err != nil {
		fmt.Fprintf(os.Stderr, "payoutd: %v\n", err)
		return exitFailed
	}
	// Answers the shell's tab completion (COMP_LINE set) and exits; a no-op
	// otherwise.
	kongplete.Complete(parser)
	kctx, err := parser.Parse(args)
	if err != nil {
		// kong quotes the argument it could not place ("unexpected
		// argument secret=…"), which may be a secret split off its flag.
		parser.Errorf("%s", redactArgs(err.Error(), args, parser.Model.Node))
		return exitUsage
	}
	cmd, ok := kctx.Selected().Target.Addr().Interface().(command)
	if !ok {
		fmt.Fprintf(os.Stderr, "payoutd: %s is not runnable\n", kctx.Command())
		return exitUsage
	}
	cmd.validate(probs)
	if !probs.empty() {
		fmt.Fprintf(os.Stderr, "payoutd %s: invalid configuration:\n", kctx.Command())
		for _, pr := range probs.sorted() {
			fmt.Fprintf(os.Stderr, "  %s\n", pr)
		}
		return exitUsage
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = cmd.run(ctx, os.Stdout)
	var fe *failure
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &fe):
		if fe.msg != "" {
			fmt.Fprintf(os.Stderr, "payoutd %s: %s\n", kctx.Command(), fe.msg)
		}
		return fe.code
	default:
		fmt.Fprintf(os.Stderr, "payoutd %s: %v\n", kctx.Command(), err)
		return exitFailed
	}
}

// newParser builds the command line parser over c; problems collects the
// settings that do not parse, so that one pass reports them all.
func newParser(c *cli, probs *problems) (*kong.Kong, error) {
	v, commit, _ := buildVersion()
	opts := append([]kong.Option{
		kong.Name("payoutd"),
		kong.Vars{"version": "payoutd " + v + " (commit " + commit + ")"},
		kong.Configuration(configFile),
		kong.Description("payoutd pays people in crypto: Kafka payout intents → Calypso mass payouts → typed outcome events.\n\nStart with `payoutd dev`; see each command's --help for its flags and PAYOUTD_* environment variables."),
		kong.UsageOnError(),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true, FlagsLast: true}),
	}, probs.lenientMappers()...)
	return kong.New(c, opts...)
}

// redactArgs removes from a command-line error every value the command line
// carried: the part after "=" of an argument, and any bare argument that is
// not a command name, except file paths. The names of flags and commands stay, so the error
// still says what was wrong.
func redactArgs(msg string, args []string, root *kong.Node) string {
	commands := map[string]bool{}
	var walk func(*kong.Node)
	walk = func(n *kong.Node) {
		for _, c := range n.Children {
			commands[c.Name] = true
			walk(c)
		}
	}
	walk(root)
	// A path is not a secret (a secret file's name is what an operator
	// needs to see when it cannot be read): values of --…-file, --…-dir and
	// --config stay.
	isPath := func(flag string) bool {
		flag = strings.TrimLeft(flag, "-")
		return flag == "config" || strings.HasSuffix(flag, "-file") || strings.HasSuffix(flag, "-dir")
	}
	var values []string
	prev := ""
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok {
			if !(strings.HasPrefix(k, "-") && isPath(k)) {
				values = append(values, v)
			}
		} else if !strings.HasPrefix(a, "-") && !commands[a] && !isPath(prev) {
			values = append(values, a)
		}
		prev = a
	}
	// Longest first, so a value containing another is removed whole.
	sort.Slice(values, func(i, j int) bool { return len(values[i]) > len(values[j]) })
	for _, v := range values {
		if v != "" {
			msg = strings.ReplaceAll(msg, v, "…")
		}
	}
	return msg
}

// failure ends a command with a chosen exit code, e.g. when an audit found
// differences: the command worked, and the answer is "no".
type failure struct {
	code int
	msg  string
}

func (f *failure) Error() string { return f.msg }
