package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/chaos"
)

// chaosCmd proves the money invariants while processes die: it runs this
// binary's `run` as separate processes (two batchers, two submitters, an
// ingress, a tracker) against one broker and a fault-injecting sandbox,
// SIGKILLs and restarts them while intents flow, and audits the result.
type chaosCmd struct {
	Brokers       []string      `name:"kafka-brokers" env:"PAYOUTD_KAFKA_BROKERS" default:"localhost:9092" help:"Kafka seed brokers (plaintext), comma-separated."`
	Intents       int           `name:"intents" env:"PAYOUTD_CHAOS_INTENTS" default:"2000" help:"Valid intents to send (plus 5% duplicates and 2% invalid records)."`
	KillEvery     time.Duration `name:"kill-every" env:"PAYOUTD_CHAOS_KILL_EVERY" default:"3s" help:"Pause between two kills."`
	MaxKills      int           `name:"max-kills" env:"PAYOUTD_CHAOS_MAX_KILLS" default:"0" help:"Stop killing after this many (0: until every intent is resolved)."`
	RestartBroker string        `name:"restart-broker" env:"PAYOUTD_CHAOS_RESTART_BROKER" help:"Shell command that restarts Kafka, run once mid-run (e.g. '.ci/kafka.sh restart')."`
	Deadline      time.Duration `name:"deadline" env:"PAYOUTD_CHAOS_DEADLINE" default:"10m" help:"Give up (and fail) after this long."`
	Seed          uint64        `name:"seed" env:"PAYOUTD_CHAOS_SEED" default:"1" help:"Seed of the kills, the intents and the sandbox's faults."`
	LogDir        string        `name:"log-dir" env:"PAYOUTD_CHAOS_LOG_DIR" help:"Where each process's log goes (default: a new temporary folder, printed)."`
	logFlags      `embed:""`
}

func (c *chaosCmd) validate(p *problems) {
	c.logFlags.validate(p)
	if len(c.Brokers) == 0 {
		p.add("--kafka-brokers (PAYOUTD_KAFKA_BROKERS)", "is required")
	}
	if c.Intents <= 0 {
		p.add("--intents", "must be positive, got %d", c.Intents)
	}
	positive(p, "--kill-every", c.KillEvery)
	positive(p, "--deadline", c.Deadline)
}

func (c *chaosCmd) run(ctx context.Context, out io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// Topics and groups of their own, so a run never meets an earlier one.
	prefix := fmt.Sprintf("chaos-%d", time.Now().UnixNano())
	d := events.DefaultTopics()
	topics := events.Topics{Requests: prefix + "." + d.Requests, DLQ: prefix + "." + d.DLQ, Batches: prefix + "." + d.Batches,
		Intents: prefix + "." + d.Intents, Outcomes: prefix + "." + d.Outcomes, WebhooksRaw: prefix + "." + d.WebhooksRaw,
		BatchStates: prefix + "." + d.BatchStates, TrackerState: prefix + "." + d.TrackerState}
	cfg := chaos.Config{
		Binary: self, Brokers: c.Brokers, Topics: topics, Intents: c.Intents,
		KillEvery: c.KillEvery, MaxKills: c.MaxKills, Deadline: c.Deadline, Seed: c.Seed,
		LogDir: c.LogDir, Log: c.logFlags.logger(),
		Args: func(component string, i int, env chaos.Env) []string {
			return componentArgs(prefix, topics, c.Brokers, component, i, env)
		},
	}
	if c.RestartBroker != "" {
		cfg.RestartBroker = []string{"sh", "-c", c.RestartBroker}
	}
	rep, err := chaos.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, rep)
	for _, p := range rep.Problems {
		fmt.Fprintln(out, "  violation:", p)
	}
	return chaosVerdict(rep)
}

// chaosVerdict fails a run that broke an invariant, and one that killed
// nothing: it proved nothing about crashes, whatever its audit says.
func chaosVerdict(rep chaos.Report) error {
	switch {
	case !rep.OK():
		return &failure{code: exitFailed, msg: fmt.Sprintf("%d invariant violations", len(rep.Problems))}
	case rep.Kills == 0:
		return &failure{code: exitFailed, msg: "killed no process, so the run proves nothing about crashes: lower --kill-every or send more --intents"}
	}
	return nil
}

// componentArgs is the `payoutd run` command line of one chaos process. Each
// instance keeps its transactional id across restarts, as a pod would, so a
// restarted process fences what its killed predecessor left open.
func componentArgs(prefix string, t events.Topics, brokers []string, component string, i int, env chaos.Env) []string {
	args := []string{"run",
		"--components=" + component,
		"--kafka-brokers=" + strings.Join(brokers, ","),
		"--topic-requests=" + t.Requests, "--topic-dlq=" + t.DLQ, "--topic-batches=" + t.Batches,
		"--topic-intents=" + t.Intents, "--topic-outcomes=" + t.Outcomes, "--topic-webhooks-raw=" + t.WebhooksRaw,
		"--topic-batch-states=" + t.BatchStates, "--topic-tracker-state=" + t.TrackerState,
		"--calypso-url=" + env.SandboxURL,
		"--calypso-rate-limit=-1",
		"--webhook-key=" + env.WebhookKey + "=" + env.WebhookSecret,
		"--ingress-addr=" + env.IngressAddr,
		"--ops-addr=127.0.0.1:0",
		"--batcher-group=" + prefix + "-batcher",
		"--submitter-group=" + prefix + "-submitter",
		fmt.Sprintf("--batcher-transactional-id=%s-batcher-%d", prefix, i),
		fmt.Sprintf("--submitter-transactional-id=%s-submitter-%d", prefix, i),
		"--tracker-group=" + prefix + "-tracker",
		fmt.Sprintf("--tracker-transactional-id=%s-tracker-%d", prefix, i),
		"--batcher-max-wait=300ms",
		"--submitter-retry-delay=1s",
		// Above the sandbox's 2 s look-up lag (chaos.Faults), so that a
		// payout created by a lost create is found, and short enough that a
		// refused batch whose create was in doubt is decided within the run.
		"--submitter-lookup-grace=10s",
		// Parked batches (undecided, Calypso unavailable) come back within
		// seconds; the run has no balance deferrals.
		"--submitter-defer-delay=2s", "--submitter-max-defer-delay=10s",
		"--tracker-poll-after=2s",
		"--shutdown-timeout=10s",
		"--log-format=json",
	}
	for _, a := range env.Accounts {
		args = append(args, "--calypso-account=id="+a.ID+",key="+a.APIKey+",secret="+a.APISecret)
	}
	return args
}
