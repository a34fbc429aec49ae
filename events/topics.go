package events

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Topics names the topics payoutd uses. Every name is configurable; the zero
// value of a field means its default.
type Topics struct {
	Requests    string
	DLQ         string
	Batches     string
	Intents     string
	Outcomes    string
	WebhooksRaw string
	// BatchStates is the submitter's compacted knowledge of each batch,
	// keyed by batch id, co-partitioned with Batches.
	BatchStates string
	// TrackerState is the tracker's changelog: each open payout, keyed by
	// payout id, co-partitioned with Outcomes; a tombstone once resolved.
	TrackerState string
}

// DefaultTopics returns the default topic names.
func DefaultTopics() Topics {
	return Topics{
		Requests:    "payouts.requests",
		DLQ:         "payouts.requests.dlq",
		Batches:     "payouts.batches",
		Intents:     "payouts.intents",
		Outcomes:    "payouts.outcomes",
		WebhooksRaw: "calypso.webhooks.raw",

		BatchStates:  "payouts.batches.state",
		TrackerState: "payouts.tracker.state",
	}
}

// WithDefaults fills empty names with the defaults.
func (t Topics) WithDefaults() Topics {
	d := DefaultTopics()
	for _, f := range []struct{ v, def *string }{
		{&t.Requests, &d.Requests}, {&t.DLQ, &d.DLQ}, {&t.Batches, &d.Batches},
		{&t.Intents, &d.Intents}, {&t.Outcomes, &d.Outcomes}, {&t.WebhooksRaw, &d.WebhooksRaw},
		{&t.BatchStates, &d.BatchStates}, {&t.TrackerState, &d.TrackerState},
	} {
		if *f.v == "" {
			*f.v = *f.def
		}
	}
	return t
}

// Forever is a Retention that never deletes.
const Forever time.Duration = -1

const day = 24 * time.Hour

// DefaultDedupHorizon is how long the batcher remembers an intent id.
const DefaultDedupHorizon = 7 * day

// MaxMessageBytes is the largest record batch payoutd writes: the
// max.message.bytes of the topics it creates and the limit of its
// producers (kgo.ProducerBatchMaxBytes), kept in step so that a record
// planned to fit one fits the other.
const MaxMessageBytes = 1 << 20

// TopicSpec is a topic's contract: what it is keyed by, what it holds, and
// the broker settings it needs.
type TopicSpec struct {
	Name      string
	Key       string
	Value     string
	Cleanup   string // cleanup.policy
	Retention time.Duration
	Why       string
}

// Configs returns the topic configs that the spec fixes.
func (s TopicSpec) Configs() map[string]string {
	ms := int64(-1)
	if s.Retention != Forever {
		ms = s.Retention.Milliseconds()
	}
	return map[string]string{
		"cleanup.policy":    s.Cleanup,
		"retention.ms":      strconv.FormatInt(ms, 10),
		"max.message.bytes": strconv.Itoa(MaxMessageBytes),
	}
}

// Catalog returns the specs of every topic. dedupHorizon is how long the
// intents topic keeps an intent id after its last state (0 means the default).
func (t Topics) Catalog(dedupHorizon time.Duration) []TopicSpec {
	t = t.WithDefaults()
	if dedupHorizon <= 0 {
		dedupHorizon = DefaultDedupHorizon
	}
	return []TopicSpec{
		{t.Requests, "intent id", "PayoutRequested v1", "delete", min(7*day, dedupHorizon), "the input"},
		{t.DLQ, "original key", "original bytes, reason in headers", "delete", 90 * day, "nothing invalid is dropped silently"},
		{t.Batches, "batch id", "BatchPlanned v1", "delete", 730 * day, "write-ahead log of what will be paid; audit"},
		{t.Intents, "intent id", "IntentState v1", "compact,delete", dedupHorizon, "dedup index and each intent's latest state"},
		{t.Outcomes, "payout id (batch id before one exists; intent id for intent outcomes)", "typed outcome events", "delete", 730 * day, "what ledgers consume"},
		{t.WebhooksRaw, "payout id, else event id", "exact webhook bytes; Sign/Key/received-at in headers", "delete", Forever, "audit replay source"},
		{t.BatchStates, "batch id", "BatchState v1", "compact", Forever, "what the submitter decided for each batch: a decided batch is never created again"},
		{t.TrackerState, "payout id", "the tracker's open payouts (tombstone once resolved)", "compact", Forever, "the tracker's state store changelog: a restart restores only what is open"},
	}
}

// Drift is a difference between a topic on the cluster and its spec.
type Drift struct {
	Topic   string
	Setting string
	Want    string
	Got     string
}

func (d Drift) String() string {
	return fmt.Sprintf("%s: %s is %q, want %q", d.Topic, d.Setting, d.Got, d.Want)
}

// TopicReport says what EnsureTopics did and found.
type TopicReport struct {
	Created []string
	Existed []string
	// Missing are the topics that do not exist (DescribeTopics only:
	// EnsureTopics creates them).
	Missing []string
	Drift   []Drift
	// Partitions is each topic's partition count, from the create answer for
	// a new topic: a broker may not list a topic yet a moment after creating it.
	Partitions map[string]int32
}

// EnsureTopics creates the topics of specs that are missing, with the given
// partitions and replication factor (-1 for the broker default), and reports
// every existing topic whose cleanup policy or retention differs from its
// spec.
func EnsureTopics(ctx context.Context, adm *kadm.Client, specs []TopicSpec, partitions int32, replication int16) (TopicReport, error) {
	rep := TopicReport{Partitions: make(map[string]int32)}
	details, err := listSpecs(ctx, adm, specs)
	if err != nil {
		return rep, err
	}
	for _, s := range specs {
		if d, ok := details[s.Name]; ok && !errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			if d.Err != nil {
				return rep, fmt.Errorf("topic %s: %w", s.Name, d.Err)
			}
			rep.Existed = append(rep.Existed, s.Name)
			rep.Partitions[s.Name] = int32(len(d.Partitions))
			continue
		}
		cfg := make(map[string]*string)
		for k, v := range s.Configs() {
			cfg[k] = &v
		}
		resp, err := adm.CreateTopic(ctx, partitions, replication, cfg, s.Name)
		if err == nil {
			err = resp.Err
		}
		if errors.Is(err, kerr.TopicAlreadyExists) {
			// Created meanwhile by another instance, or not yet in the
			// metadata we listed: a broker publishes new topics asynchronously.
			rep.Existed = append(rep.Existed, s.Name)
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("creating topic %s: %w", s.Name, err)
		}
		rep.Created = append(rep.Created, s.Name)
		rep.Partitions[s.Name] = partitions
		if resp.NumPartitions > 0 {
			rep.Partitions[s.Name] = resp.NumPartitions
		}
	}
	drift, err := driftOf(ctx, adm, specs, rep.Existed)
	rep.Drift = append(rep.Drift, drift...)
	return rep, err
}

// DescribeTopics is EnsureTopics without the create: it changes nothing, and
// reports the topics of specs that do not exist in Missing. It is what a
// check before start-up and `payoutd run` itself may call, where creating a
// money topic with guessed settings would hide a mistyped name.
func DescribeTopics(ctx context.Context, adm *kadm.Client, specs []TopicSpec) (TopicReport, error) {
	rep := TopicReport{Partitions: make(map[string]int32)}
	details, err := listSpecs(ctx, adm, specs)
	if err != nil {
		return rep, err
	}
	for _, s := range specs {
		d, ok := details[s.Name]
		switch {
		case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			rep.Missing = append(rep.Missing, s.Name)
		case d.Err != nil:
			return rep, fmt.Errorf("topic %s: %w", s.Name, d.Err)
		default:
			rep.Existed = append(rep.Existed, s.Name)
			rep.Partitions[s.Name] = int32(len(d.Partitions))
		}
	}
	drift, err := driftOf(ctx, adm, specs, rep.Existed)
	rep.Drift = append(rep.Drift, drift...)
	return rep, err
}

// driftOf reports every existing topic whose settings differ from its spec.
func driftOf(ctx context.Context, adm *kadm.Client, specs []TopicSpec, existed []string) ([]Drift, error) {
	if len(existed) == 0 {
		return nil, nil
	}
	configs, err := adm.DescribeTopicConfigs(ctx, existed...)
	if err != nil {
		return nil, fmt.Errorf("describing topic configs: %w", err)
	}
	bySpec := make(map[string]TopicSpec, len(specs))
	for _, s := range specs {
		bySpec[s.Name] = s
	}
	var drift []Drift
	for _, rc := range configs {
		if rc.Err != nil {
			return drift, fmt.Errorf("describing topic %s: %w", rc.Name, rc.Err)
		}
		got := make(map[string]string, len(rc.Configs))
		for _, c := range rc.Configs {
			got[c.Key] = c.MaybeValue()
		}
		want := bySpec[rc.Name].Configs()
		keys := make([]string, 0, len(want))
		for k := range want {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if got[k] != want[k] {
				drift = append(drift, Drift{Topic: rc.Name, Setting: k, Want: want[k], Got: got[k]})
			}
		}
	}
	return drift, nil
}

// Ensure runs EnsureTopics over the catalog, and also reports topics that
// must be co-partitioned but differ in partition count: the batcher's dedup
// needs an intent id in the same partition number of requests and intents,
// the submitter a batch id in batches and batch states, and the tracker a
// payout id in outcomes and its state changelog.
func (t Topics) Ensure(ctx context.Context, adm *kadm.Client, dedupHorizon time.Duration, partitions int32, replication int16) (TopicReport, error) {
	t = t.WithDefaults()
	rep, err := EnsureTopics(ctx, adm, t.Catalog(dedupHorizon), partitions, replication)
	if err != nil {
		return rep, err
	}
	return rep, t.checkReport(ctx, adm, &rep, dedupHorizon)
}

// Describe is Ensure without the create: what `payoutd run` checks before
// and while it starts. A missing topic is in the report's Missing, and is
// left out of the co-partitioning check.
func (t Topics) Describe(ctx context.Context, adm *kadm.Client, dedupHorizon time.Duration) (TopicReport, error) {
	t = t.WithDefaults()
	rep, err := DescribeTopics(ctx, adm, t.Catalog(dedupHorizon))
	if err != nil {
		return rep, err
	}
	return rep, t.checkReport(ctx, adm, &rep, dedupHorizon)
}

// checkReport adds to rep what the catalog's topics owe each other: the
// requests topic's retention within the dedup horizon, and co-partitioning.
func (t Topics) checkReport(ctx context.Context, adm *kadm.Client, rep *TopicReport, dedupHorizon time.Duration) error {
	if dedupHorizon <= 0 {
		dedupHorizon = DefaultDedupHorizon
	}
	requestsRetentionWithinHorizon(rep, t.Requests, dedupHorizon)
	pairs := [][2]string{{t.Requests, t.Intents}, {t.Batches, t.BatchStates}, {t.Outcomes, t.TrackerState}}
	missing := make(map[string]bool, len(rep.Missing))
	for _, n := range rep.Missing {
		missing[n] = true
	}
	// A topic that existed meanwhile (created concurrently) has no count yet.
	var unknown []string
	for _, pair := range pairs {
		for _, name := range pair {
			if rep.Partitions[name] == 0 && !missing[name] {
				unknown = append(unknown, name)
			}
		}
	}
	if len(unknown) > 0 {
		details, err := adm.ListTopics(fresh(ctx), unknown...)
		if err != nil {
			return fmt.Errorf("listing topics: %w", err)
		}
		for _, name := range unknown {
			if n := len(details[name].Partitions); n > 0 {
				rep.Partitions[name] = int32(n)
			}
		}
	}
	for _, pair := range pairs {
		if missing[pair[0]] || missing[pair[1]] {
			continue
		}
		if a, b := rep.Partitions[pair[0]], rep.Partitions[pair[1]]; a != b {
			rep.Drift = append(rep.Drift, Drift{Topic: pair[1], Setting: "partitions",
				Want: strconv.Itoa(int(a)) + " (as " + pair[0] + ")", Got: strconv.Itoa(int(b))})
		}
	}
	return nil
}

// requestsRetentionWithinHorizon words the requests topic's retention drift
// by what matters: the dedup horizon is part of the upstream contract and
// must be at least the requests topic's retention, or a duplicate read
// after the horizon (from a reset offset, a replay) is paid again. A
// retention within the horizon is drift only in the catalog's sense.
func requestsRetentionWithinHorizon(rep *TopicReport, requests string, horizon time.Duration) {
	for i, d := range rep.Drift {
		if d.Topic != requests || d.Setting != "retention.ms" {
			continue
		}
		got, err := strconv.ParseInt(d.Got, 10, 64)
		if err != nil || got < 0 || got > horizon.Milliseconds() {
			rep.Drift[i].Want = fmt.Sprintf("%s, at most the dedup horizon (%d ms): a duplicate older than the horizon is paid again",
				d.Want, horizon.Milliseconds())
		}
	}
}

// fresh makes kadm's metadata calls skip kgo's metadata cache, which would
// otherwise answer for up to MetadataMinAge (5s) that a topic created a
// moment ago does not exist. kadm bypasses the cache when authorized
// operations are asked for.
func fresh(ctx context.Context) context.Context { return kadm.WithAuthorizedOps(ctx) }

// listSpecs lists the topics of specs, fresh from the brokers.
func listSpecs(ctx context.Context, adm *kadm.Client, specs []TopicSpec) (kadm.TopicDetails, error) {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	details, err := adm.ListTopics(fresh(ctx), names...)
	if err != nil {
		return nil, fmt.Errorf("listing topics: %w", err)
	}
	return details, nil
}
