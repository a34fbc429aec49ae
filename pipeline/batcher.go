package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/money"
	"github.com/payoutd/payoutd/schemas"
)

// BatcherConfig configures a Batcher. Zero values take the defaults named.
type BatcherConfig struct {
	// Topics names the topics; empty names are the defaults.
	Topics events.Topics
	// Group is the consumer group on the requests topic. Default "payoutd-batcher".
	Group string
	// TransactionalID must be unique per running instance and is best kept
	// stable across its restarts: a restarted instance with the same id
	// aborts its predecessor's open transaction at once, instead of readers
	// waiting for the transaction timeout. Default: Group + a random suffix.
	TransactionalID string
	// InstanceID, when set, makes the instance a static group member
	// (KIP-345): restarted under the same id, it gets its partitions back at
	// once instead of the group waiting out the dead member's session
	// timeout, which under crash loops would stall every partition. Like
	// TransactionalID, unique per instance and stable across restarts.
	InstanceID string
	// MaxWait closes a window this long after its first record. Default 2s.
	MaxWait time.Duration
	// MaxRecords and MaxBytes close a window early when its buffer reaches
	// them. Defaults 20,000 records and 32 MiB.
	MaxRecords int
	MaxBytes   int
	// MaxRecordBytes sends larger records to the DLQ. Default 64 KiB.
	MaxRecordBytes int
	// MaxBatchBytes bounds a planned batch's encoded record, so that it
	// fits Kafka's record limit (events.MaxMessageBytes, which the topics
	// we create and our producer share). Default events.MaxMessageBytes
	// less 16 KiB.
	MaxBatchBytes int
	// DedupHorizon is how long an intent id is remembered. Default 7 days.
	DedupHorizon time.Duration
	// ExecutionHorizon is how far ahead an executionDate may be; later
	// ones go to the DLQ (execution_date). Default one year.
	ExecutionHorizon time.Duration
	// RebuildWait bounds how long the dedup rebuild waits for a partition's
	// open transactions to end (its last stable offset to reach the high
	// watermark) before failing the session, which is then retried. It
	// never proceeds without them. Default 2 minutes.
	RebuildWait time.Duration
	// StallAfter marks the batcher not ready when records wait and no
	// window has committed for this long. Default 1 minute.
	StallAfter time.Duration
	// Currencies are the payable currencies with their decimals and item
	// limits. Default calypso.DefaultCurrencies().
	Currencies map[string]calypso.CurrencyRule
	// Accounts, when set, are the only accounts accepted.
	Accounts []string
	// Tracer, when set (payoutd traces), makes each BatchItem carry the W3C
	// traceparent of its request record, so that the batch's create call
	// links to the intent's trace and its outcome joins it; the intent's
	// BATCHED state is published in that trace. Nil: off.
	Tracer trace.Tracer
	// Logger defaults to slog.Default().
	// Health receives the component\'s readiness (part "batcher"); nil records nothing.
	Health *Health
	Logger *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
}

func (c *BatcherConfig) setDefaults() {
	c.Topics = c.Topics.WithDefaults()
	if c.Group == "" {
		c.Group = "payoutd-batcher"
	}
	if c.TransactionalID == "" {
		c.TransactionalID = c.Group + "-" + uuid.NewString()
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 2 * time.Second
	}
	if c.MaxRecords <= 0 {
		c.MaxRecords = 20_000
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = 32 << 20
	}
	if c.MaxRecordBytes <= 0 {
		c.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = events.MaxMessageBytes - 16<<10
	}
	if c.DedupHorizon <= 0 {
		c.DedupHorizon = events.DefaultDedupHorizon
	}
	if c.ExecutionHorizon <= 0 {
		c.ExecutionHorizon = DefaultExecutionHorizon
	}
	if c.RebuildWait <= 0 {
		c.RebuildWait = 2 * time.Minute
	}
	if c.StallAfter <= 0 {
		c.StallAfter = time.Minute
	}
	if c.Currencies == nil {
		c.Currencies = calypso.DefaultCurrencies()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// DefaultExecutionHorizon is how far ahead an executionDate may be by default.
const DefaultExecutionHorizon = 365 * 24 * time.Hour

// DefaultMaxRecordBytes is the largest request record the batcher takes.
const DefaultMaxRecordBytes = 64 << 10

// BatcherStats counts what a Batcher did; safe to read while it runs.
type BatcherStats struct {
	Requests atomic.Int64 // records consumed and committed
	Intents  atomic.Int64 // intents batched
	Batches  atomic.Int64
	DLQ      atomic.Int64
	// DLQBy counts DLQ records per reason (every Reasons() key is present).
	DLQBy       map[Reason]*atomic.Int64
	Commits     atomic.Int64
	Aborts      atomic.Int64
	IndexSize   atomic.Int64
	IndexLoaded atomic.Int64 // intents-topic records read into the dedup index
	Buffered    atomic.Int64 // records in the open window
	// Ready is 1 while the batcher makes progress (its Health part
	// "batcher" is ready), 0 while it starts, rebuilds its dedup index,
	// keeps failing its session or cannot commit with records waiting.
	Ready atomic.Int64
	// AbortsInARow counts windows aborted since the last commit.
	AbortsInARow atomic.Int64
	// OwnedPartitions is how many requests partitions this instance owns.
	OwnedPartitions atomic.Int64
}

// Batcher turns payout requests into planned batches, exactly once: each
// window of consumed requests becomes, in one Kafka transaction, its
// BatchPlanned records, an IntentState(BATCHED) per intent, DLQ records for
// what cannot be paid, and the consumed offsets. A window whose transaction
// does not commit is discarded and consumed again.
type Batcher struct {
	cfg   BatcherConfig
	kafka []kgo.Opt
	rules intentRules
	index *dedupIndex
	log   *slog.Logger
	// owned tracks the group's assignments; the loop applies them.
	owned ownership
	// partitions is the requests topic's partition count, read at each
	// assignment; a record elsewhere than murmur2(key) mod partitions is
	// refused (wrong_partition).
	partitions int
	// partitioner is Kafka's default partitioner (franz-go's, the Java
	// client's): murmur2 of the key, for keyed records.
	partitioner kgo.TopicPartitioner
	// poison holds request records whose output Kafka refused for good
	// (too large, however chunked): read again after the abort, they go to
	// the DLQ instead of aborting every window forever.
	poison map[events.Offset]*Rejection
	// noValue marks poisoned records whose DLQ copy itself was refused.
	noValue map[events.Offset]bool
	// maxBatchBytes is the planning budget; it halves while a multi-item
	// batch is refused as too large (a broker or topic limit below ours).
	maxBatchBytes int
	// isolate produces batch and DLQ records one at a time, after Kafka
	// refused some record for good, until a window commits.
	isolate bool
	// lastCommit is when a window last committed (or the session began).
	lastCommit time.Time
	crash      crashHook
	Stats      BatcherStats
}

// ownership collects what the group's callbacks (run on the client's
// goroutines) report, for the batcher's loop to apply between polls: the
// index drops every partition not owned, and rebuilds those assigned.
type ownership struct {
	mu       sync.Mutex
	assigned map[int32]bool // waiting for their index to be rebuilt
	owned    map[int32]bool
	// told is false from a session's start until the group first assigns
	// or revokes: until then the index keeps what it has.
	told bool
}

func (o *ownership) assign(ps []int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range ps {
		o.assigned[p] = true
		o.owned[p] = true
	}
	o.told = true
}

func (o *ownership) revoke(ps []int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.told = true
	for _, p := range ps {
		delete(o.owned, p)
		delete(o.assigned, p)
	}
}

// take returns and clears the partitions newly assigned, and returns the
// partitions owned now, or nil when the group has not said yet.
func (o *ownership) take() (assigned []int32, owned map[int32]bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for p := range o.assigned {
		assigned = append(assigned, p)
	}
	clear(o.assigned)
	slices.Sort(assigned)
	if !o.told {
		return assigned, nil
	}
	return assigned, maps.Clone(o.owned)
}

// reset forgets every partition: a closed session owns none (a static
// member's Close does not revoke them), and the next one is told anew.
func (o *ownership) reset() {
	o.mu.Lock()
	defer o.mu.Unlock()
	clear(o.assigned)
	clear(o.owned)
	o.told = false
}

// NewBatcher returns a Batcher; kafka are the client options shared by every
// component (seed brokers, TLS, SASL, logging).
func NewBatcher(cfg BatcherConfig, kafka ...kgo.Opt) (*Batcher, error) {
	cfg.setDefaults()
	set, err := schemas.Load()
	if err != nil {
		return nil, err
	}
	accounts := make(map[string]bool, len(cfg.Accounts))
	for _, a := range cfg.Accounts {
		accounts[a] = true
	}
	b := &Batcher{
		cfg: cfg,
		// Our producer's record limit is the one the topics we create are
		// given (max.message.bytes): a batch planned to fit one fits both.
		kafka: append(append([]kgo.Opt{}, kafka...), kgo.ProducerBatchMaxBytes(events.MaxMessageBytes)),
		rules: intentRules{schemas: set, currencies: cfg.Currencies, accounts: accounts, maxRecordBytes: cfg.MaxRecordBytes,
			executionHorizon: cfg.ExecutionHorizon},
		index:         newDedupIndex(cfg.DedupHorizon),
		log:           cfg.Logger.With("component", "batcher"),
		poison:        make(map[events.Offset]*Rejection),
		partitioner:   kgo.StickyKeyPartitioner(nil).ForTopic(cfg.Topics.Requests),
		noValue:       make(map[events.Offset]bool),
		maxBatchBytes: cfg.MaxBatchBytes,
		owned:         ownership{assigned: map[int32]bool{}, owned: map[int32]bool{}},
	}
	b.Stats.DLQBy = make(map[Reason]*atomic.Int64)
	for _, r := range Reasons() {
		b.Stats.DLQBy[r] = new(atomic.Int64)
	}
	return b, nil
}

// Run consumes until ctx is done, then closes the open window and returns
// nil. A session that fails (fenced, broker gone) is replaced by a new one.
func (b *Batcher) Run(ctx context.Context) error {
	return runSessions(ctx, b.log, b.cfg.Health, "batcher", b.session)
}

func (b *Batcher) session(ctx context.Context) error {
	topic := b.cfg.Topics.Requests
	partitionsOf := func(m map[string][]int32) []int32 { return m[topic] }
	opts := append(append([]kgo.Opt{}, b.kafka...),
		kgo.ConsumerGroup(b.cfg.Group),
		kgo.ConsumeTopics(topic),
		kgo.TransactionalID(b.cfg.TransactionalID),
		// read_committed; franz-go always asks for stable offsets (KIP-447),
		// so a new owner waits for the previous owner's transaction to end.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { b.owned.assign(partitionsOf(m)) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { b.owned.revoke(partitionsOf(m)) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { b.owned.revoke(partitionsOf(m)) }),
	)
	if b.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(b.cfg.InstanceID))
	}
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return err
	}
	defer func() {
		sess.Close()
		// Nothing is owned any more. The index keeps what it has until the
		// next session's first assignment: a partition assigned again is
		// caught up from where its index left off (what others wrote
		// meanwhile included), the others are dropped then.
		b.owned.reset()
		b.Stats.OwnedPartitions.Store(0)
	}()
	b.lastCommit = b.cfg.Now()
	defer b.Stats.Ready.Store(0)

	w := newWindow()
	for {
		if err := b.applyOwnership(ctx); err != nil {
			return err
		}
		pollCtx, cancel := ctx, context.CancelFunc(func() {})
		if !w.empty() {
			pollCtx, cancel = context.WithTimeout(ctx, w.opened.Add(b.cfg.MaxWait).Sub(b.cfg.Now()))
		} else {
			// Wake up now and then to apply assignments and report health.
			pollCtx, cancel = context.WithTimeout(ctx, time.Second)
		}
		fetches := sess.PollRecords(pollCtx, b.cfg.MaxRecords-w.records)
		cancel()
		if ctx.Err() != nil {
			// Shutting down: the open window is closed, not abandoned.
			if w.empty() {
				return nil
			}
			_, err := b.commit(ctx, sess, w)
			return err
		}
		if err := fatalFetchErr(fetches); err != nil {
			return err
		}
		records := fetches.Records()
		if len(records) > 0 {
			if err := b.applyOwnership(ctx); err != nil {
				return err
			}
		}
		now := b.cfg.Now()
		for _, r := range records {
			b.admit(w, r, now)
		}
		b.Stats.Buffered.Store(int64(w.records))
		b.reportHealth(now, w)
		if !w.empty() && b.crash.at(crashWindowOpen) {
			return errCrashed
		}
		if w.empty() || !b.due(w, now) {
			continue
		}
		if _, err := b.commit(ctx, sess, w); err != nil {
			return err
		}
		if b.crash.at(crashAfterCommit) {
			return errCrashed
		}
		w = newWindow()
		b.Stats.Buffered.Store(0)
	}
}

// reportHealth says whether the batcher makes progress: not while windows
// keep aborting, nor while the records of w wait and nothing has committed
// for StallAfter.
func (b *Batcher) reportHealth(now time.Time, w *window) {
	aborts := b.Stats.AbortsInARow.Load()
	stalled := now.Sub(b.lastCommit)
	waiting := w != nil && !w.empty()
	if waiting && w.opened.After(b.lastCommit) {
		stalled = now.Sub(w.opened) // idle until these came
	}
	switch {
	case aborts >= 3:
		b.notReady(fmt.Sprintf("%d windows in a row aborted; nothing committed for %s", aborts, now.Sub(b.lastCommit).Round(time.Second)))
	case waiting && stalled > b.cfg.StallAfter:
		b.notReady(fmt.Sprintf("records wait but nothing committed for %s", stalled.Round(time.Second)))
	default:
		b.Stats.Ready.Store(1)
		b.cfg.Health.Ready("batcher")
	}
}

func (b *Batcher) notReady(reason string) {
	b.Stats.Ready.Store(0)
	b.cfg.Health.NotReady("batcher", reason)
}

// applyOwnership drops partitions not owned from the dedup index and rebuilds
// the index of newly assigned ones before any of their records is admitted.
func (b *Batcher) applyOwnership(ctx context.Context) error {
	assigned, owned := b.owned.take()
	dropped := false
	for p := range b.index.parts {
		if owned != nil && !owned[p] {
			b.index.drop(p)
			dropped = true
		}
	}
	b.Stats.OwnedPartitions.Store(int64(len(owned)))
	if dropped {
		b.Stats.IndexSize.Store(int64(b.index.len()))
	}
	if len(assigned) == 0 {
		return nil
	}
	b.notReady(fmt.Sprintf("rebuilding the dedup index of partitions %v from %s", assigned, b.cfg.Topics.Intents))
	if err := b.catchUp(ctx, assigned); err != nil {
		// These partitions are not caught up: the session fails, and the
		// next one is assigned them again.
		err = fmt.Errorf("rebuilding the dedup index of partitions %v: %w", assigned, err)
		b.notReady(err.Error())
		return err
	}
	b.lastCommit = b.cfg.Now()
	return nil
}

func (b *Batcher) due(w *window, now time.Time) bool {
	return w.full || w.records >= b.cfg.MaxRecords || w.bytes >= b.cfg.MaxBytes ||
		!now.Before(w.opened.Add(b.cfg.MaxWait))
}

// admit puts one consumed request into the window: as an intent to batch, or
// as a DLQ record with its reason.
func (b *Batcher) admit(w *window, r *kgo.Record, now time.Time) {
	w.note(r, now)
	src := events.Offset{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
	rej := b.poison[src]
	var in events.PayoutRequested
	if rej == nil {
		in, rej = b.rules.check(r, now)
	}
	if rej == nil {
		rej = b.checkPartition(r)
	}
	if rej == nil {
		if _, dup := w.ids[in.IntentID]; dup || b.index.has(r.Partition, in.IntentID, now) {
			rej = &Rejection{ReasonDuplicate, fmt.Sprintf("intent %s was already batched", in.IntentID)}
		}
	}
	if rej != nil {
		b.log.Info("request to DLQ", "intent", money.Truncate(string(r.Key), 256), "reason", rej.Reason, "error", rej.Err,
			"partition", r.Partition, "offset", r.Offset)
		d := dlqRecord(b.cfg.Topics.DLQ, r, rej, now)
		if b.noValue[src] {
			d.Value = nil
		}
		w.reject(d, rej.Reason)
		return
	}
	var tp string
	if b.cfg.Tracer != nil {
		tp = requestTraceparent(r)
	}
	w.add(in, src, tp, maxItems(b.cfg.Currencies, in.Currency))
}

// checkPartition refuses a record that is not where Kafka's default
// partitioner puts its key. Dedup looks for an intent's earlier copies in
// its own partition only; a copy elsewhere (another partitioner upstream,
// a partition count changed) would be paid twice.
func (b *Batcher) checkPartition(r *kgo.Record) *Rejection {
	if b.partitions <= 0 {
		return nil
	}
	want := int32(b.partitioner.Partition(r, b.partitions))
	if want == r.Partition {
		return nil
	}
	return &Rejection{ReasonWrongPartition, fmt.Sprintf(
		"record key %q is in partition %d, but Kafka's default partitioner puts it in partition %d of %d. "+
			"Produce requests keyed by intent id with the murmur2 partitioner (Java client and franz-go: the default; "+
			"librdkafka: partitioner=murmur2_random; Sarama: a hash partitioner on murmur2, not its FNV-1a default), "+
			"then send this record again: dedup only looks for an intent's earlier copies in its own partition",
		money.Truncate(string(r.Key), 256), r.Partition, want, b.partitions)}
}

// commit writes the window in one transaction. It reports whether the
// transaction committed; an abort is not an error (the window's records are
// consumed again), a failed session is.
func (b *Batcher) commit(ctx context.Context, sess *kgo.GroupTransactSession, w *window) (bool, error) {
	now := b.cfg.Now()
	batches := w.plan(b.cfg.Currencies, b.maxBatchBytes, now)
	var evs []outEvent
	for _, batch := range batches {
		evs = append(evs, outEvent{b.cfg.Topics.Batches, batch})
		for _, it := range batch.Items {
			evs = append(evs, outEvent{b.cfg.Topics.Intents, events.IntentState{
				IntentID: it.IntentID, State: events.StatusBatched, BatchID: batch.BatchID, UpdatedAt: now,
			}})
		}
	}
	out, err := records("payoutd/batcher", evs)
	if err != nil {
		return false, err
	}
	if b.cfg.Tracer != nil {
		// Each intent's BATCHED state is published in the intent's trace.
		var items []events.BatchItem
		for _, batch := range batches {
			items = append(items, batch.Items...)
		}
		continueIntentTraces(ctx, out, items, b.cfg.Topics.Intents)
	}
	out = append(out, w.dlq...)

	if b.crash.at(crashMidTxn) {
		if err := sess.Begin(); err != nil {
			return false, err
		}
		for _, r := range out {
			sess.Produce(ctx, r, nil)
		}
		_ = sess.Client().Flush(ctx)
		return false, errCrashed
	}
	var alone func(*kgo.Record) bool
	if b.isolate {
		alone = func(r *kgo.Record) bool { return r.Topic != b.cfg.Topics.Intents }
	}
	committed, err := produceRecordsInTxn(ctx, sess, out, alone)
	var perr *produceError
	if errors.As(err, &perr) {
		if perr.deterministic() {
			if b.isolate {
				b.poisonRefused(perr, batches, w)
			}
			// Next time, each batch and DLQ record alone, so that a
			// refusal names the one record that caused it.
			b.isolate = true
		}
		err = nil
	}
	if err != nil || !committed {
		b.Stats.Aborts.Add(1)
		aborts := b.Stats.AbortsInARow.Add(1)
		cause := "the transaction did not commit (a rebalance or a failed commit)"
		if perr != nil {
			cause = perr.Error()
		} else if err != nil {
			cause = err.Error()
		}
		b.log.Warn("window aborted; its records will be consumed again", "records", w.records, "error", cause, "in_a_row", aborts)
		b.reportHealth(b.cfg.Now(), w)
		return false, err
	}
	for id, p := range w.ids {
		b.index.add(p, id, now)
	}
	for _, r := range w.dlq {
		if len(b.poison) == 0 {
			break
		}
		// A poisoned request is in the DLQ now, for good.
		src := dlqOffset(r)
		delete(b.poison, src)
		delete(b.noValue, src)
	}
	b.lastCommit = b.cfg.Now()
	b.isolate = false
	b.Stats.AbortsInARow.Store(0)
	b.Stats.Commits.Add(1)
	b.Stats.Requests.Add(int64(w.records))
	b.Stats.Intents.Add(int64(len(w.ids)))
	b.Stats.Batches.Add(int64(len(batches)))
	b.Stats.DLQ.Add(int64(len(w.dlq)))
	for _, reason := range w.reasons {
		if n, ok := b.Stats.DLQBy[reason]; ok {
			n.Add(1)
		}
	}
	b.Stats.IndexSize.Store(int64(b.index.len()))
	for _, batch := range batches {
		b.log.Info("batch planned", "batch", batch.BatchID, "account", batch.Account, "currency", batch.Currency,
			"items", len(batch.Items), "total", batch.Total.String())
	}
	return true, nil
}

// poisonRefused decides what to do about records Kafka refused for good
// (too large for the broker or topic, or invalid to it): retrying them
// unchanged would abort every window forever. A batch of several items is
// planned again in smaller chunks (the budget halves); what came from one
// request (a one-item batch, its intent state, a DLQ copy) goes to the DLQ
// with the broker's error when it is consumed again.
func (b *Batcher) poisonRefused(perr *produceError, batches []events.BatchPlanned, w *window) {
	byBatch := make(map[string]events.BatchPlanned, len(batches))
	for _, bp := range batches {
		byBatch[bp.BatchID] = bp
	}
	dlqSource := make(map[*kgo.Record]events.Offset, len(w.dlq))
	for _, r := range w.dlq {
		dlqSource[r] = dlqOffset(r)
	}
	for _, f := range perr.failed {
		if !isRefusedForGood(f.err) {
			continue
		}
		rej := &Rejection{ReasonTooLarge, fmt.Sprintf("Kafka refused what this request became (%d bytes to %s): %v", recordSize(f.record), f.record.Topic, f.err)}
		switch f.record.Topic {
		case b.cfg.Topics.Batches:
			bp := byBatch[string(f.record.Key)]
			if len(bp.Items) > 1 {
				b.maxBatchBytes = max(min(b.maxBatchBytes, recordSize(f.record))/2, 1)
				b.log.Warn("a batch was too large for Kafka; planning smaller ones", "batch", bp.BatchID, "bytes", recordSize(f.record),
					"budget", b.maxBatchBytes, "error", f.err)
				continue
			}
			for _, it := range bp.Items {
				b.poison[it.Source] = rej
			}
		case b.cfg.Topics.Intents:
			for _, bp := range batches {
				for _, it := range bp.Items {
					if it.IntentID == string(f.record.Key) {
						b.poison[it.Source] = rej
					}
				}
			}
		case b.cfg.Topics.DLQ:
			if src, ok := dlqSource[f.record]; ok {
				// The DLQ copy itself is refused: it goes again without its
				// value, which stays readable at its source offset.
				b.poison[src] = &Rejection{ReasonTooLarge, rej.Err + "; the DLQ copy leaves the value out: read it at the source offset"}
				b.noValue[src] = true
			}
		}
	}
}

// catchUp rebuilds the dedup index of newly assigned partitions from the
// intents topic, and learns the requests topic's partition count.
func (b *Batcher) catchUp(ctx context.Context, partitions []int32) error {
	start := b.cfg.Now()
	if err := b.readPartitionCounts(ctx); err != nil {
		return err
	}
	n, err := readIntents(ctx, b.kafka, b.cfg.Topics.Intents, b.index, partitions, b.cfg.RebuildWait)
	if err != nil {
		return err
	}
	b.index.prune(b.cfg.Now())
	b.Stats.IndexLoaded.Add(int64(n))
	b.Stats.IndexSize.Store(int64(b.index.len()))
	b.log.Info("dedup index caught up", "partitions", partitions, "read", n, "entries", b.index.len(), "took", b.cfg.Now().Sub(start))
	return nil
}

// readPartitionCounts learns how many partitions the requests topic has, and
// refuses to go on when the intents topic has another count: then an
// intent's states are not in its requests' partition, and dedup would miss
// them.
func (b *Batcher) readPartitionCounts(ctx context.Context) error {
	cl, err := kgo.NewClient(b.kafka...)
	if err != nil {
		return err
	}
	defer cl.Close()
	req, intents := b.cfg.Topics.Requests, b.cfg.Topics.Intents
	details, err := kadm.NewClient(cl).ListTopics(ctx, req, intents)
	if err != nil {
		return fmt.Errorf("listing %s and %s: %w", req, intents, err)
	}
	nr, ni := len(details[req].Partitions), len(details[intents].Partitions)
	if nr == 0 || ni == 0 {
		return fmt.Errorf("listing %s and %s: %d and %d partitions", req, intents, nr, ni)
	}
	if nr != ni {
		return fmt.Errorf("%s has %d partitions and %s %d: they must have as many, or dedup misses duplicates (payoutd topics reports it)", req, nr, intents, ni)
	}
	b.partitions = nr
	return nil
}

func headerValue(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// errSessionFailed marks errors after which a transactional session cannot go on.
var errSessionFailed = errors.New("transactional session failed")

// dlqOffset is where a DLQ record's request came from, by its headers.
func dlqOffset(r *kgo.Record) events.Offset {
	p, _ := strconv.ParseInt(headerValue(r, HeaderDLQPartition), 10, 32)
	o, _ := strconv.ParseInt(headerValue(r, HeaderDLQOffset), 10, 64)
	return events.Offset{Topic: headerValue(r, HeaderDLQTopic), Partition: int32(p), Offset: o}
}
