package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
)

// produceCmd sends intents from a file. Nothing is sent while any row is
// bad (unless --skip-invalid): half a payroll is worse than none.
type produceCmd struct {
	File        string `arg:"" placeholder:"FILE" help:"CSV (header: intentId,account,currency,amount,address[,executionDate,comment]) or JSON-lines file; '-' reads stdin."`
	Format      string `name:"format" env:"PAYOUTD_PRODUCE_FORMAT" default:"auto" help:"File format: auto (JSON lines if the first non-blank character is '{', else CSV), csv or jsonl."`
	SkipInvalid bool   `name:"skip-invalid" env:"PAYOUTD_PRODUCE_SKIP_INVALID" help:"Send the valid rows even when some are bad (the bad ones are still reported)."`
	DryRun      bool   `name:"dry-run" env:"PAYOUTD_PRODUCE_DRY_RUN" help:"Validate only; send nothing."`
	Quiet       bool   `name:"quiet" env:"PAYOUTD_PRODUCE_QUIET" help:"No progress line."`
	// The batcher's setting, under its name and variable, so one
	// environment configures both.
	ExecutionHorizon time.Duration `name:"batcher-execution-horizon" env:"PAYOUTD_BATCHER_EXECUTION_HORIZON" default:"8760h" help:"The batcher's horizon: a row with an executionDate further ahead is refused here, as the batcher would send it to the DLQ."`
	kafkaFlags       `embed:""`
	topicFlags       `embed:""`
	logFlags         `embed:""`
}

func (c *produceCmd) validate(p *problems) {
	c.kafkaFlags.validate(p)
	c.logFlags.validate(p)
	switch c.Format {
	case "auto", "csv", "jsonl":
	default:
		p.add("--format", "must be auto, csv or jsonl, got %q", c.Format)
	}
	if c.File != "-" {
		checkReadable(p, "<file>", c.File)
	}
	if h := c.ExecutionHorizon; h < time.Hour || h > 10*365*24*time.Hour {
		p.add("--batcher-execution-horizon (PAYOUTD_BATCHER_EXECUTION_HORIZON)", "must be between 1h0m0s and 87600h0m0s, got %s", h)
	}
}

// format is --format, or for auto the format the content shows: a JSON
// lines file starts with '{', a CSV file with its header. The extension is
// not trusted: stdin has none, and intents.txt is either.
func (c *produceCmd) format(in *bufio.Reader) string {
	if c.Format != "auto" {
		return c.Format
	}
	for i := 1; ; i++ {
		b, err := in.Peek(i)
		if len(b) < i {
			return "csv" // empty or all blank: the CSV reader says what is missing
		}
		switch ch := b[i-1]; {
		case ch == '{':
			return "jsonl"
		case ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || (i <= 3 && ch >= 0x80):
			// blank, or part of a UTF-8 byte-order mark
		default:
			return "csv"
		}
		if err != nil {
			return "csv"
		}
	}
}

func (c *produceCmd) run(ctx context.Context, out io.Writer) error {
	in := io.Reader(os.Stdin)
	if c.File != "-" {
		f, err := os.Open(c.File)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	ir, err := newIntentReader(c.ExecutionHorizon)
	if err != nil {
		return err
	}
	br := bufio.NewReader(in)
	rows, bad, err := ir.readFile(br, c.format(br))
	if err != nil {
		return err
	}
	for _, b := range bad {
		fmt.Fprintf(os.Stderr, "%s: %s\n", c.File, b)
	}
	fmt.Fprintf(out, "%d valid, %d invalid\n", len(rows), len(bad))
	if len(bad) > 0 && !c.SkipInvalid {
		return &failure{code: exitFailed, msg: fmt.Sprintf("%d invalid row(s); nothing sent (--skip-invalid sends the valid ones)", len(bad))}
	}
	if c.DryRun || len(rows) == 0 {
		return nil
	}
	sent, err := c.send(ctx, rows)
	fmt.Fprintf(out, "sent %d intent(s) to %s\n", sent, c.topicFlags.topics().Requests)
	if err != nil {
		return err
	}
	if len(bad) > 0 {
		return &failure{code: exitFailed, msg: fmt.Sprintf("%d invalid row(s) skipped", len(bad))}
	}
	return nil
}

// send produces the rows keyed by intent id (so an intent's records share a
// partition, which dedup relies on) and waits for every acknowledgement.
func (c *produceCmd) send(ctx context.Context, rows []row) (int64, error) {
	log := c.logFlags.logger()
	opts, err := c.kafkaFlags.clientOpts(log)
	if err != nil {
		return 0, err
	}
	topic := c.topicFlags.topics().Requests
	cl, err := kgo.NewClient(append(opts, kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(5*time.Millisecond))...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	adm := newAdminFrom(cl)
	if err := pingKafka(ctx, adm, 10*time.Second); err != nil {
		return 0, err
	}

	var acked atomic.Int64
	var firstErr atomic.Pointer[error]
	stopProgress := c.progress(&acked, len(rows))
	defer stopProgress()
	now := time.Now().UTC()
	for _, rw := range rows {
		in := rw.intent
		if in.RequestedAt == nil {
			in.RequestedAt = &now
		}
		rec, err := events.NewRecord(topic, "payoutd/produce", in)
		if err != nil {
			return acked.Load(), fmt.Errorf("line %d: %w", rw.line, err)
		}
		line := rw.line
		cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			if err != nil {
				e := fmt.Errorf("line %d: %w", line, err)
				firstErr.CompareAndSwap(nil, &e)
				return
			}
			acked.Add(1)
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return acked.Load(), err
	}
	if e := firstErr.Load(); e != nil {
		return acked.Load(), *e
	}
	return acked.Load(), nil
}

// progress prints "sent n/total (p%)" on stderr a few times a second, on
// one line when stderr is a terminal.
func (c *produceCmd) progress(done *atomic.Int64, total int) (stop func()) {
	if c.Quiet {
		return func() {}
	}
	tty := isTerminal(os.Stderr)
	quit := make(chan struct{})
	finished := make(chan struct{})
	show := func() {
		n := done.Load()
		line := fmt.Sprintf("sent %d/%d (%d%%)", n, total, n*100/int64(total))
		if tty {
			fmt.Fprintf(os.Stderr, "\r%s", line)
		} else {
			fmt.Fprintln(os.Stderr, line)
		}
	}
	go func() {
		defer close(finished)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				show()
				if tty {
					fmt.Fprintln(os.Stderr)
				}
				return
			case <-tick.C:
				show()
			}
		}
	}()
	return func() { close(quit); <-finished }
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
