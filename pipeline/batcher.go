package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
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
	// DedupHorizon is how long an intent id is remembered. Default 7 days.
	DedupHorizon time.Duration
	// Currencies are the payable currencies with their decimals and item
	// limits. Default calypso.DefaultCurrencies().
	Currencies map[string]calypso.CurrencyRule
	// Accounts, when set, are the only accounts accepted.
	Accounts []string
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
		c.MaxRecordBytes = 64 << 10
	}
	if c.DedupHorizon <= 0 {
		c.DedupHorizon = events.DefaultDedupHorizon
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
	// assigned is set by the group when partitions are assigned: the index
	// must catch up with the intents topic before the next dedup check.
	assigned atomic.Bool
	crash    crashHook
	Stats    BatcherStats
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
		cfg:   cfg,
		kafka: kafka,
		rules: intentRules{schemas: set, currencies: cfg.Currencies, accounts: accounts, maxRecordBytes: cfg.MaxRecordBytes},
		index: newDedupIndex(cfg.DedupHorizon),
		log:   cfg.Logger.With("component", "batcher"),
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
	opts := append(append([]kgo.Opt{}, b.kafka...),
		kgo.ConsumerGroup(b.cfg.Group),
		kgo.ConsumeTopics(b.cfg.Topics.Requests),
		kgo.TransactionalID(b.cfg.TransactionalID),
		// read_committed; franz-go always asks for stable offsets (KIP-447),
		// so a new owner waits for the previous owner's transaction to end.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) { b.assigned.Store(true) }),
	)
	if b.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(b.cfg.InstanceID))
	}
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return err
	}
	defer sess.Close()
	b.assigned.Store(true)

	w := newWindow()
	for {
		pollCtx, cancel := ctx, context.CancelFunc(func() {})
		if !w.empty() {
			pollCtx, cancel = context.WithDeadline(ctx, w.opened.Add(b.cfg.MaxWait))
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
		b.cfg.Health.Ready("batcher")
		records := fetches.Records()
		if len(records) > 0 && b.assigned.Swap(false) {
			if err := b.catchUp(ctx); err != nil {
				return fmt.Errorf("rebuilding the dedup index: %w", err)
			}
		}
		now := b.cfg.Now()
		for _, r := range records {
			b.admit(w, r, now)
		}
		b.Stats.Buffered.Store(int64(w.records))
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

func (b *Batcher) due(w *window, now time.Time) bool {
	return w.full || w.records >= b.cfg.MaxRecords || w.bytes >= b.cfg.MaxBytes ||
		!now.Before(w.opened.Add(b.cfg.MaxWait))
}

// admit puts one consumed request into the window: as an intent to batch, or
// as a DLQ record with its reason.
func (b *Batcher) admit(w *window, r *kgo.Record, now time.Time) {
	w.note(r, now)
	in, rej := b.rules.check(r)
	if rej == nil && (w.ids[in.IntentID] || b.index.has(in.IntentID, now)) {
		rej = &Rejection{ReasonDuplicate, fmt.Sprintf("intent %s was already batched", in.IntentID)}
	}
	if rej != nil {
		b.log.Info("request to DLQ", "intent", string(r.Key), "reason", rej.Reason, "error", rej.Err,
			"partition", r.Partition, "offset", r.Offset)
		w.reject(dlqRecord(b.cfg.Topics.DLQ, r, rej, now))
		return
	}
	w.add(in, events.Offset{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}, maxItems(b.cfg.Currencies, in.Currency))
}

// commit writes the window in one transaction. It reports whether the
// transaction committed; an abort is not an error (the window's records are
// consumed again), a failed session is.
func (b *Batcher) commit(ctx context.Context, sess *kgo.GroupTransactSession, w *window) (bool, error) {
	now := b.cfg.Now()
	batches := w.plan(b.cfg.Currencies, now)
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
	committed, err := produceInTxn(ctx, sess, out)
	if err != nil || !committed {
		b.Stats.Aborts.Add(1)
		b.log.Warn("window aborted; its records will be consumed again", "records", w.records, "error", err)
		return false, err
	}
	for id := range w.ids {
		b.index.add(id, now)
	}
	b.Stats.Commits.Add(1)
	b.Stats.Requests.Add(int64(w.records))
	b.Stats.Intents.Add(int64(len(w.ids)))
	b.Stats.Batches.Add(int64(len(batches)))
	b.Stats.DLQ.Add(int64(len(w.dlq)))
	for _, r := range w.dlq {
		if n, ok := b.Stats.DLQBy[Reason(headerValue(r, HeaderDLQReason))]; ok {
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

// catchUp reads the intents topic into the dedup index, from where the index
// left off to the last stable offset.
func (b *Batcher) catchUp(ctx context.Context) error {
	start := b.cfg.Now()
	n, err := readIntents(ctx, b.kafka, b.cfg.Topics.Intents, b.index)
	if err != nil {
		return err
	}
	b.index.prune(b.cfg.Now())
	b.Stats.IndexLoaded.Add(int64(n))
	b.Stats.IndexSize.Store(int64(b.index.len()))
	b.log.Info("dedup index caught up", "read", n, "entries", b.index.len(), "took", b.cfg.Now().Sub(start))
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
