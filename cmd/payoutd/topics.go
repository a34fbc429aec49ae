package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/payoutd/payoutd/events"
)

// topicsCmd creates what is missing and reports what drifted; it never
// changes an existing topic: altering retention or cleanup of a money topic
// is an operator's decision.
type topicsCmd struct {
	kafkaFlags   `embed:""`
	topicFlags   `embed:""`
	logFlags     `embed:""`
	Partitions   int32         `name:"partitions" env:"PAYOUTD_TOPIC_PARTITIONS" default:"6" help:"Partitions of topics created (requests and intents must match: dedup relies on it)."`
	Replication  int16         `name:"replication-factor" env:"PAYOUTD_TOPIC_REPLICATION_FACTOR" default:"-1" help:"Replication factor of topics created (-1: the broker's default)."`
	DedupHorizon time.Duration `name:"dedup-horizon" env:"PAYOUTD_DEDUP_HORIZON" default:"168h" help:"Retention of the intents topic: how long an intent id is remembered."`
	Strict       bool          `name:"strict" env:"PAYOUTD_TOPICS_STRICT" help:"Exit non-zero when an existing topic drifted from the catalog."`
	Timeout      time.Duration `name:"timeout" env:"PAYOUTD_TOPICS_TIMEOUT" default:"60s" help:"Give up after this long."`
}

func (t *topicsCmd) validate(p *problems) {
	t.kafkaFlags.validate(p)
	t.topicFlags.validate(p)
	t.logFlags.validate(p)
	if t.Partitions <= 0 {
		p.add("--partitions (PAYOUTD_TOPIC_PARTITIONS)", "must be positive, got %d", t.Partitions)
	}
	if t.Replication == 0 || t.Replication < -1 {
		p.add("--replication-factor (PAYOUTD_TOPIC_REPLICATION_FACTOR)", "must be -1 or positive, got %d", t.Replication)
	}
	if h := t.DedupHorizon; h < time.Hour || h > 5*365*24*time.Hour {
		p.add("--dedup-horizon (PAYOUTD_DEDUP_HORIZON)", "must be between 1h0m0s and 43800h0m0s, got %s", h)
	}
	positive(p, "--timeout", t.Timeout)
}

func (t *topicsCmd) run(ctx context.Context, out io.Writer) error {
	log := t.logFlags.logger()
	opts, err := t.kafkaFlags.clientOpts(log)
	if err != nil {
		return err
	}
	adm, err := newAdmin(opts)
	if err != nil {
		return err
	}
	defer adm.Close()
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	rep, err := ensureTopics(ctx, adm, t.topicFlags, t.DedupHorizon, t.Partitions, t.Replication)
	if err != nil {
		return err
	}
	for _, n := range rep.Created {
		fmt.Fprintf(out, "created  %s\n", n)
	}
	for _, n := range rep.Existed {
		fmt.Fprintf(out, "exists   %s\n", n)
	}
	for _, d := range rep.Drift {
		fmt.Fprintf(out, "drift    %s\n", d)
	}
	if len(rep.Drift) == 0 {
		fmt.Fprintln(out, "no drift")
		return nil
	}
	if t.Strict {
		return &failure{code: exitFailed, msg: fmt.Sprintf("%d setting(s) drifted from the catalog", len(rep.Drift))}
	}
	return nil
}

// ensureTopics is events.Topics.Ensure for the configured names.
func ensureTopics(ctx context.Context, adm *kadm.Client, tf topicFlags, horizon time.Duration, partitions int32, replication int16) (events.TopicReport, error) {
	return tf.topics().Ensure(ctx, adm, horizon, partitions, replication)
}
