package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/internal/replay"
)

// replayCmd is the audit of invariant 6: the typed outcome events are a pure
// function of the archived webhook bytes. It reads only Kafka; it has no
// Calypso configuration, so it cannot call Calypso.
type replayCmd struct {
	From      string        `name:"from" env:"PAYOUTD_REPLAY_FROM" help:"Replay webhooks archived at or after this time (RFC 3339, by record timestamp; default: the beginning)."`
	To        string        `name:"to" env:"PAYOUTD_REPLAY_TO" help:"Replay webhooks archived before this time (RFC 3339; default: now)."`
	OutTopic  string        `name:"out-topic" env:"PAYOUTD_REPLAY_OUT_TOPIC" help:"Also write the re-derived events to this topic (never the live outcomes topic)."`
	OutFile   string        `name:"out-file" env:"PAYOUTD_REPLAY_OUT_FILE" help:"Also write the re-derived events to this file, one JSON object per line ('-': stdout)."`
	Quiet     bool          `name:"quiet" env:"PAYOUTD_REPLAY_QUIET" help:"Print the summary only, not each difference."`
	EdgeSlack time.Duration `name:"edge-slack" env:"PAYOUTD_REPLAY_EDGE_SLACK" default:"1m" help:"Also read this far beyond --from and --to, to pair events whose partner lies just outside the window."`

	kafkaFlags `embed:""`
	topicFlags `embed:""`
	logFlags   `embed:""`

	from, to time.Time
}

func (c *replayCmd) validate(p *problems) {
	c.kafkaFlags.validate(p)
	c.topicFlags.validate(p)
	c.logFlags.validate(p)
	parse := func(flag, v string) time.Time {
		if v == "" {
			return time.Time{}
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			p.add(flag, "%q is not an RFC 3339 time such as 2025-01-31T00:00:00Z", v)
		}
		return t
	}
	c.from, c.to = parse("--from", c.From), parse("--to", c.To)
	if !c.from.IsZero() && !c.to.IsZero() && !c.to.After(c.from) {
		p.add("--to", "must be after --from")
	}
	positive(p, "--edge-slack", c.EdgeSlack)
	if c.OutTopic != "" && c.OutTopic == c.topicFlags.topics().Outcomes {
		p.add("--out-topic", "must not be the live outcomes topic %q: consumers would see every event twice", c.OutTopic)
	}
}

func (c *replayCmd) run(ctx context.Context, out io.Writer) error {
	log := c.logFlags.logger()
	opts, err := c.kafkaFlags.clientOpts(log)
	if err != nil {
		return err
	}
	sink, err := c.openSink(opts)
	if err != nil {
		return err
	}
	topics := c.topicFlags.topics()
	rep, err := replay.Run(ctx, replay.Config{Kafka: opts, Topics: topics, From: c.from, To: c.to,
		EdgeSlack: c.EdgeSlack, OutTopic: c.OutTopic, Emit: sink.emit})
	if cerr := sink.close(ctx); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if !c.Quiet {
		for _, d := range rep.Missing {
			fmt.Fprintf(out, "missing    %s\n", d)
		}
		for _, d := range rep.Extra {
			fmt.Fprintf(out, "extra      %s\n", d)
		}
		for _, d := range rep.Different {
			fmt.Fprintf(out, "different  %s\n", d)
		}
	}
	fmt.Fprintf(out, "replayed %d webhook(s) (%d archived untyped) → %d event(s); %d ingress event(s) on %s; %d matched; %d difference(s): %d missing, %d extra, %d different\n",
		rep.Webhooks, rep.Untyped, rep.Derived, rep.Compared, topics.Outcomes, rep.Matched, rep.Differences(),
		len(rep.Missing), len(rep.Extra), len(rep.Different))
	if rep.EdgeUnpaired > 0 {
		fmt.Fprintf(out, "%d event(s) near the window's edges matched a partner just outside --from/--to (read within --edge-slack %s)\n",
			rep.EdgeUnpaired, c.EdgeSlack)
	}
	if rep.Differences() > 0 {
		return &failure{code: exitFailed, msg: "the outcome topic differs from what its webhooks say"}
	}
	return nil
}

// sink writes re-derived events to --out-file and --out-topic as they come,
// so that nothing is held in memory.
type sink struct {
	file   *os.File
	buf    *bufio.Writer
	enc    *json.Encoder
	client *kgo.Client
	mu     sync.Mutex
	err    error // the first failed produce
}

func (c *replayCmd) openSink(opts []kgo.Opt) (*sink, error) {
	s := &sink{}
	switch c.OutFile {
	case "":
	case "-":
		s.buf = bufio.NewWriter(os.Stdout)
	default:
		f, err := os.Create(c.OutFile)
		if err != nil {
			return nil, err
		}
		s.file, s.buf = f, bufio.NewWriter(f)
	}
	if s.buf != nil {
		s.enc = json.NewEncoder(s.buf)
	}
	if c.OutTopic != "" {
		cl, err := kgo.NewClient(append(opts, kgo.ProducerLinger(5*time.Millisecond))...)
		if err != nil {
			return nil, err
		}
		s.client = cl
	}
	return s, nil
}

func (s *sink) emit(r *kgo.Record) error {
	if s.enc != nil {
		jr := toJSONRecord(r)
		jr.Partition, jr.Offset = 0, 0
		if err := s.enc.Encode(jr); err != nil {
			return err
		}
	}
	if s.client != nil {
		// Produce blocks while the client's buffer is full, which bounds
		// the memory of a large replay.
		s.client.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
			if err != nil {
				s.mu.Lock()
				s.err = cmp.Or(s.err, err)
				s.mu.Unlock()
			}
		})
	}
	return nil
}

func (s *sink) close(ctx context.Context) error {
	var errs []error
	if s.buf != nil {
		errs = append(errs, s.buf.Flush())
	}
	if s.file != nil {
		errs = append(errs, s.file.Close())
	}
	if s.client != nil {
		errs = append(errs, s.client.Flush(ctx))
		s.client.Close()
		s.mu.Lock()
		errs = append(errs, s.err)
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}
