package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/internal/topicscan"
)

// tailCmd follows a payoutd topic, read_committed: what it shows is what
// every consumer sees, never an aborted window.
type tailCmd struct {
	Topic    string `name:"topic" env:"PAYOUTD_TAIL_TOPIC" short:"t" default:"outcomes" help:"Topic: requests, dlq, batches, intents, outcomes, webhooks-raw, or any topic name."`
	JSON     bool   `name:"json" env:"PAYOUTD_TAIL_JSON" help:"One JSON object per record (headers, CloudEvents ones included, and the value)."`
	From     string `name:"from" env:"PAYOUTD_TAIL_FROM" default:"end" help:"Where to start: start or end."`
	NoFollow bool   `name:"no-follow" env:"PAYOUTD_TAIL_NO_FOLLOW" help:"Stop at the end of the topic instead of waiting for more."`
	Limit    int    `name:"limit" env:"PAYOUTD_TAIL_LIMIT" short:"n" help:"Stop after this many records (0: no limit)."`

	kafkaFlags `embed:""`
	topicFlags `embed:""`
	logFlags   `embed:""`
}

func (c *tailCmd) validate(p *problems) {
	c.kafkaFlags.validate(p)
	c.logFlags.validate(p)
	if c.From != "start" && c.From != "end" {
		p.add("--from", "must be start or end, got %q", c.From)
	}
	if c.Limit < 0 {
		p.add("--limit", "must not be negative")
	}
	if c.NoFollow && c.From == "end" {
		p.add("--no-follow", "with --from=end there is nothing to show; use --from=start")
	}
}

// topicName resolves a topic alias to the configured name.
func (t topicFlags) resolve(alias string) string {
	ts := t.topics()
	switch alias {
	case "requests":
		return ts.Requests
	case "dlq":
		return ts.DLQ
	case "batches":
		return ts.Batches
	case "intents":
		return ts.Intents
	case "outcomes":
		return ts.Outcomes
	case "webhooks-raw", "webhooks":
		return ts.WebhooksRaw
	}
	return alias
}

func (c *tailCmd) run(ctx context.Context, out io.Writer) error {
	log := c.logFlags.logger()
	opts, err := c.kafkaFlags.clientOpts(log)
	if err != nil {
		return err
	}
	topic := c.topicFlags.resolve(c.Topic)
	start := kgo.NewOffset().AtEnd()
	if c.From == "start" {
		start = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(append(opts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(start),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if err := pingKafka(ctx, adm, 10*time.Second); err != nil {
		return err
	}
	var ends map[int32]int64
	if c.NoFollow {
		if ends, err = topicscan.StableEnds(ctx, adm, topic); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(out)
	n := 0
	for {
		if c.NoFollow && len(ends) == 0 {
			return nil
		}
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err := fetches.Err0(); err != nil {
			return fmt.Errorf("fetching %s: %w", topic, err)
		}
		for _, r := range fetches.Records() {
			if c.NoFollow {
				end, open := ends[r.Partition]
				if !open || r.Offset >= end {
					continue // written after we started
				}
				if r.Offset+1 >= end {
					delete(ends, r.Partition)
				}
			}
			if r.Attrs.IsControl() {
				continue // a transaction marker: only tells where the partition ends
			}
			if c.JSON {
				if err := enc.Encode(toJSONRecord(r)); err != nil {
					return err
				}
			} else if _, err := fmt.Fprintln(out, pretty(r)); err != nil {
				return err
			}
			n++
			if c.Limit > 0 && n >= c.Limit {
				return nil
			}
		}
	}
}
