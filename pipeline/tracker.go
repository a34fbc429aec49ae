package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
)

// TrackerConfig configures a Tracker. Zero values take the defaults named.
type TrackerConfig struct {
	// Topics names the topics; empty names are the defaults.
	Topics events.Topics
	// Group is the consumer group on the outcomes topic. Default "payoutd-tracker".
	Group string
	// TransactionalID must be unique per running instance and stable across
	// its restarts: a restarted instance with the same id aborts what its
	// predecessor left open at once, instead of the partitions it owned
	// waiting out the transaction timeout. Default: Group + a random suffix
	// (unique, not stable; `payoutd run` derives it from the host name).
	TransactionalID string
	// InstanceID, when set, makes the instance a static group member
	// (KIP-345), like the batcher's.
	InstanceID string
	// PollAfter is how long a payout may stay silent (no webhook, no event)
	// before Calypso is asked for it. Default 2 minutes. Each poll that
	// finds nothing new doubles the wait, up to MaxPollInterval: payouts
	// silent on purpose (a future executionDate, PENDING_CONFIRMATION)
	// cost ever fewer calls. Any news resets it.
	PollAfter time.Duration
	// MaxPollInterval caps the growing wait between polls. Default 1 hour.
	MaxPollInterval time.Duration
	// RetryDelay is the first wait after a failed look-up; it doubles per
	// failure up to MaxRetryDelay. Defaults 5s and 10 minutes.
	RetryDelay    time.Duration
	MaxRetryDelay time.Duration
	// AlertAfter failed look-ups in a row raise a LOOKUP_FAILING alert.
	// Default 5.
	AlertAfter int
	// MatchWait is how long statuses of a payout wait for its
	// PayoutSubmitted before the payout is taken as foreign (created by
	// another tool on the same subscription), alerted and no longer
	// tracked. Default 30 minutes.
	MatchWait time.Duration
	// RejectedCheckAfter is how long after a PayoutRejected the tracker
	// asks Calypso whether a payout exists for the batch anyway. Default 1m.
	RejectedCheckAfter time.Duration
	// PageSize is the page of the withdrawal list call. Default 100.
	PageSize int
	// Workers bounds the Calypso look-ups under way. Default 4. Calypso's
	// client limits its request rate per account as well, shared with the
	// submitter when they run in one process.
	Workers int
	// CommitInterval is how long consumed records and finished look-ups
	// may wait to be committed together in one transaction. Default 100ms,
	// Kafka Streams' exactly-once default.
	CommitInterval time.Duration
	// CallTimeout bounds each Calypso call (not a whole look-up: a long
	// withdrawal list is read a page per call). Default 30s.
	CallTimeout time.Duration
	// Tracer, when set (payoutd traces), puts what the tracker writes about
	// an intent (its state, IntentSettled or IntentFailed) in that intent's
	// trace, from the traceparent its BatchItem carries. Nil: off.
	Tracer trace.Tracer
	// Health receives the component's readiness (part "tracker"); nil records nothing.
	Health *Health
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
}

func (c *TrackerConfig) setDefaults() {
	c.Topics = c.Topics.WithDefaults()
	if c.Group == "" {
		c.Group = "payoutd-tracker"
	}
	if c.TransactionalID == "" {
		c.TransactionalID = c.Group + "-" + uuid.NewString()
	}
	if c.PollAfter <= 0 {
		c.PollAfter = 2 * time.Minute
	}
	if c.MaxPollInterval <= 0 {
		c.MaxPollInterval = time.Hour
	}
	c.MaxPollInterval = max(c.MaxPollInterval, c.PollAfter)
	if c.RetryDelay <= 0 {
		c.RetryDelay = 5 * time.Second
	}
	if c.MaxRetryDelay <= 0 {
		c.MaxRetryDelay = 10 * time.Minute
	}
	c.MaxRetryDelay = max(c.MaxRetryDelay, c.RetryDelay)
	if c.AlertAfter <= 0 {
		c.AlertAfter = 5
	}
	if c.MatchWait <= 0 {
		c.MatchWait = 30 * time.Minute
	}
	if c.RejectedCheckAfter <= 0 {
		c.RejectedCheckAfter = time.Minute
	}
	if c.PageSize <= 0 || c.PageSize > calypso.MaxWithdrawalPageSize {
		c.PageSize = calypso.MaxWithdrawalPageSize
	}
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 30 * time.Second
	}
	if c.CommitInterval <= 0 {
		c.CommitInterval = 100 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Alert kinds the tracker raises.
const (
	// AlertWithdrawalUnmatched: a withdrawal of a payout maps to no item of
	// its batch, or to several, or an item has no withdrawal; the payout's
	// resolution stops until a person looks.
	AlertWithdrawalUnmatched events.AlertKind = "WITHDRAWAL_UNMATCHED"
	// AlertStatusForRejectedBatch: Calypso has a payout for a batch the
	// submitter reported rejected (its intents were failed).
	AlertStatusForRejectedBatch events.AlertKind = "STATUS_FOR_REJECTED_BATCH"
	// AlertLookupFailing: Calypso look-ups for a payout keep failing.
	AlertLookupFailing events.AlertKind = "LOOKUP_FAILING"
	// AlertForeignPayout: statuses of a payout payoutd did not submit.
	AlertForeignPayout events.AlertKind = "FOREIGN_PAYOUT"
	// AlertPayoutWithoutItems: a PayoutSubmitted without the batch's items.
	AlertPayoutWithoutItems events.AlertKind = "PAYOUT_WITHOUT_ITEMS"
)

// TrackerAlertKinds are the kinds the tracker raises, for metrics.
func TrackerAlertKinds() []events.AlertKind {
	return []events.AlertKind{AlertWithdrawalUnmatched, AlertStatusForRejectedBatch, AlertLookupFailing, AlertForeignPayout, AlertPayoutWithoutItems}
}

// TrackerStats counts what a Tracker did; safe to read while it runs.
type TrackerStats struct {
	Loaded     atomic.Int64 // state store entries restored from the changelog
	Restored   atomic.Int64 // changelog records read by restores
	Restores   atomic.Int64 // restores done (assignments, aborts)
	RestoreNs  atomic.Int64 // time spent restoring, in nanoseconds
	Partitions atomic.Int64 // outcomes partitions owned now
	Polls      atomic.Int64 // payout/mass calls for silent payouts
	Polled     atomic.Int64 // status events published from polls
	Lookups    atomic.Int64 // other Calypso calls: withdrawal pages, rejected-batch checks
	Resolved   atomic.Int64 // payouts whose intents were resolved
	Settled    atomic.Int64 // intents settled
	Failed     atomic.Int64 // intents failed
	Errors     atomic.Int64 // look-ups that failed and are retried later
	Unmatched  atomic.Int64 // foreign payouts given up on
	Open       atomic.Int64 // store entries open now
	// OldestOpen is when the oldest open payout was first heard of, in Unix
	// nanoseconds (0: none open).
	OldestOpen atomic.Int64
	Commits    atomic.Int64
	Aborts     atomic.Int64
	// Alerts counts alerts raised, by kind (every TrackerAlertKinds key).
	Alerts map[events.AlertKind]*atomic.Int64
}

// Tracker turns Calypso's news about payouts into per-intent truth: it
// follows the outcomes topic as a transactional consumer group, each
// instance owning partitions, keeps each open payout of its partitions in a
// state store (changelog: the tracker-state topic), polls Calypso for
// payouts that have been silent too long, and once a payout is terminal
// resolves every intent of its batch into IntentState (intents topic) and
// IntentSettled or IntentFailed (outcomes topic, keyed by intent id). It is
// the one writer of intent states after BATCHED: SUBMITTED when the
// PayoutSubmitted is read, SETTLED or FAILED at the end, in the payout's
// partition order, so an intent's state never moves backwards.
//
// Exactly once, by transactions: what a batch of consumed records and
// finished look-ups leads to — derived events, store changes and the
// consumed offsets — is committed in one transaction. A transaction that
// aborts (a rebalance, a fenced producer) discards the in-memory stores,
// which are restored from the changelog, and the records are consumed again.
type Tracker struct {
	cfg      TrackerConfig
	accounts Accounts
	kafka    []kgo.Opt
	log      *slog.Logger
	Stats    TrackerStats
}

// ephemeralID matches names Kubernetes gives the pods of a Deployment
// (name-<pod-template-hash>-<5 chars>): a new name at every restart.
var ephemeralID = regexp.MustCompile(`-[bcdfghjklmnpqrstvwxz2456789]{6,10}-[bcdfghjklmnpqrstvwxz2456789]{5}$`)

// EphemeralTransactionalID reports whether id looks like it changes at every
// restart (a Kubernetes Deployment's pod name): then a restarted instance
// cannot fence its predecessor, and the partitions it owned wait out the
// transaction timeout.
func EphemeralTransactionalID(id string) bool { return ephemeralID.MatchString(id) }

// NewTracker returns a Tracker; accounts are the Calypso clients it polls
// with, kafka the client options shared by every component.
func NewTracker(cfg TrackerConfig, accounts Accounts, kafka ...kgo.Opt) (*Tracker, error) {
	cfg.setDefaults()
	if len(accounts) == 0 {
		return nil, errors.New("tracker: no Calypso accounts configured")
	}
	t := &Tracker{cfg: cfg, accounts: accounts, kafka: kafka, log: cfg.Logger.With("component", "tracker")}
	t.Stats.Alerts = map[events.AlertKind]*atomic.Int64{}
	for _, k := range TrackerAlertKinds() {
		t.Stats.Alerts[k] = new(atomic.Int64)
	}
	if EphemeralTransactionalID(cfg.TransactionalID) {
		t.log.Warn("the transactional id looks like a Deployment pod name, which changes at every restart; "+
			"use a StatefulSet (its ordinal names are stable) or set --tracker-transactional-id per instance",
			"transactional_id", cfg.TransactionalID)
	}
	return t, nil
}

// Run tracks until ctx is done. A session that fails (fenced, broker gone)
// is replaced by a new one, which restores its partitions' stores.
func (t *Tracker) Run(ctx context.Context) error {
	return runSessions(ctx, t.log, t.cfg.Health, "tracker", t.session)
}

// trackerSession is one group membership of the tracker.
type trackerSession struct {
	*Tracker
	sess *kgo.GroupTransactSession

	// ownership is written by the group's callbacks and read by the loop.
	ownMu   sync.Mutex
	owned   map[int32]bool
	changed map[int32]bool

	procs map[int32]*processor // the loop's alone
	gen   uint64

	resMu   sync.Mutex
	results []lookupResult
	wakeMu  sync.Mutex
	wake    context.CancelFunc
}

func (t *Tracker) session(ctx context.Context) error {
	s := &trackerSession{Tracker: t, owned: map[int32]bool{}, changed: map[int32]bool{}, procs: map[int32]*processor{}}
	note := func(ps map[string][]int32, own bool) {
		s.ownMu.Lock()
		defer s.ownMu.Unlock()
		for _, p := range ps[t.cfg.Topics.Outcomes] {
			s.owned[p] = own
			s.changed[p] = true
		}
		s.wakeUp() // restore now, not after the poll's tick
	}
	opts := append(append([]kgo.Opt{}, t.kafka...),
		kgo.ConsumerGroup(t.cfg.Group),
		kgo.ConsumeTopics(t.cfg.Topics.Outcomes),
		kgo.TransactionalID(t.cfg.TransactionalID),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RecordPartitioner(changelogPartitioner{state: t.cfg.Topics.TrackerState, def: kgo.StickyKeyPartitioner(nil)}),
		// Fetching a newly assigned partition waits until its store is
		// restored: paused here, before its fetches begin, resumed by the loop.
		kgo.OnPartitionsAssigned(func(_ context.Context, cl *kgo.Client, ps map[string][]int32) {
			cl.PauseFetchPartitions(map[string][]int32{t.cfg.Topics.Outcomes: ps[t.cfg.Topics.Outcomes]})
			note(ps, true)
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { note(ps, false) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { note(ps, false) }),
	)
	if t.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(t.cfg.InstanceID))
	}
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return err
	}
	defer sess.Close()
	s.sess = sess
	return s.loop(ctx)
}

// changelogPartitioner writes changelog records to the partition they name
// (the processor's own), everything else by key as usual.
type changelogPartitioner struct {
	state string
	def   kgo.Partitioner
}

func (p changelogPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == p.state {
		return kgo.ManualPartitioner().ForTopic(topic)
	}
	return p.def.ForTopic(topic)
}

// lookup is one Calypso look-up handed to a worker.
type lookup struct {
	partition int32
	gen       uint64
	key       string
	kind      lookupKind
	entry     storedPayout // a copy
}

type lookupKind int

const (
	lookupPoll        lookupKind = iota // the payout's state (then its withdrawals, when PARTIAL)
	lookupWithdrawals                   // the rest of a PARTIAL payout's withdrawal list
	lookupRejected                      // is there a payout for a rejected batch?
)

// lookupResult is what a worker learnt; facts only, applied by the loop.
type lookupResult struct {
	lookup
	polled      *calypso.MassPayout
	withdrawals map[string]withdrawalResult
	nextPage    int
	listed      bool                // the withdrawal list was read (nextPage is where to go on)
	found       *calypso.MassPayout // rejected check: the payout that exists anyway
	notFound    bool
	err         error
}

func (s *trackerSession) loop(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan lookup)
	var wg sync.WaitGroup
	for range s.cfg.Workers {
		wg.Go(func() {
			for j := range jobs {
				res := s.work(ctx, j)
				s.resMu.Lock()
				s.results = append(s.results, res)
				s.resMu.Unlock()
				s.wakeUp()
			}
		})
	}
	defer func() {
		cancel()
		close(jobs)
		wg.Wait()
	}()

	tick := min(max(s.cfg.PollAfter/4, 10*time.Millisecond), time.Second)
	lastScan := time.Time{}
	// Work since the last transaction: committed together once
	// CommitInterval has passed (Kafka Streams' commit.interval.ms), so a
	// steady trickle of webhooks is not a transaction each.
	var (
		pending     []*kgo.Record
		pendingSt   = newTxnStats()
		uncommitted bool
		lastCommit  = time.Now()
	)
	for {
		if err := s.reconcile(ctx); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		// Ready once the group has been joined: a poll that returns empty
		// says nothing about Kafka answering.
		if _, gen := s.sess.Client().GroupMetadata(); gen > 0 {
			s.cfg.Health.Ready("tracker")
		} else {
			s.cfg.Health.NotReady("tracker", "joining the consumer group")
		}

		wait := tick
		if uncommitted {
			wait = max(min(wait, s.cfg.CommitInterval-time.Since(lastCommit)), time.Millisecond)
		}
		pollCtx, pollCancel := context.WithTimeout(ctx, wait)
		s.wakeMu.Lock()
		s.wake = pollCancel
		s.wakeMu.Unlock()
		if s.pendingResults() {
			pollCancel()
		}
		fetches := s.sess.PollRecords(pollCtx, 2000)
		pollCancel()
		if ctx.Err() != nil {
			// Shutting down: what is done is committed, not redone by
			// the next owner (the transaction ends despite ctx).
			if uncommitted {
				return s.commit(ctx, pending, pendingSt)
			}
			return nil
		}
		if err := fatalFetchErr(fetches); err != nil {
			return fmt.Errorf("%w: %v", errSessionFailed, err)
		}
		now := s.cfg.Now()
		polled := false
		var unowned bool
		fetches.EachRecord(func(r *kgo.Record) {
			polled = true
			p := s.procs[r.Partition]
			if p == nil {
				unowned = true
				return
			}
			s.apply(p, r, now)
		})
		if unowned {
			// Records of a partition assigned a moment ago, before its
			// store was restored: abort, restore, read them again.
			s.log.Info("records of a partition not yet restored; reading them again after the restore")
			s.dropAll()
			pending, pendingSt, uncommitted = nil, newTxnStats(), false
			if err := s.sess.Begin(); err != nil {
				return fmt.Errorf("%w: begin: %v", errSessionFailed, err)
			}
			if _, err := s.sess.End(ctx, kgo.TryAbort); err != nil {
				return fmt.Errorf("%w: aborting: %v", errSessionFailed, err)
			}
			continue
		}
		for _, res := range s.takeResults() {
			s.applyResult(res, now)
		}
		if now.Sub(lastScan) >= tick {
			lastScan = now
			s.expire(now)
			s.noteOldestOpen()
		}
		recs, stats, err := s.derive(ctx, now)
		if err != nil {
			return err
		}
		pending = append(pending, recs...)
		pendingSt.merge(stats)
		uncommitted = uncommitted || polled || len(recs) > 0
		if uncommitted && (time.Since(lastCommit) >= s.cfg.CommitInterval || len(pending) >= maxPendingRecords) {
			err := s.commit(ctx, pending, pendingSt)
			pending, pendingSt, uncommitted, lastCommit = nil, newTxnStats(), false, time.Now()
			if err != nil {
				return err
			}
		}
		s.dispatch(jobs, now)
		open := 0
		for _, p := range s.procs {
			open += len(p.open)
		}
		s.Stats.Open.Store(int64(open))
	}
}

// noteOldestOpen publishes when the oldest open payout was first heard of.
// It walks every open entry, so the session calls it on its scan tick, not
// on every poll.
func (s *trackerSession) noteOldestOpen() {
	var oldest time.Time
	for _, p := range s.procs {
		for _, tp := range p.open {
			if !tp.FirstHeard.IsZero() && (oldest.IsZero() || tp.FirstHeard.Before(oldest)) {
				oldest = tp.FirstHeard
			}
		}
	}
	if oldest.IsZero() {
		s.Stats.OldestOpen.Store(0)
		return
	}
	s.Stats.OldestOpen.Store(oldest.UnixNano())
}

func (s *trackerSession) wakeUp() {
	s.wakeMu.Lock()
	defer s.wakeMu.Unlock()
	if s.wake != nil {
		s.wake()
	}
}

func (s *trackerSession) pendingResults() bool {
	s.resMu.Lock()
	defer s.resMu.Unlock()
	return len(s.results) > 0
}

func (s *trackerSession) takeResults() []lookupResult {
	s.resMu.Lock()
	defer s.resMu.Unlock()
	out := s.results
	s.results = nil
	return out
}

// reconcile makes the processors match the partitions owned: revoked ones
// are dropped, newly assigned ones restored from the changelog.
func (s *trackerSession) reconcile(ctx context.Context) error {
	s.ownMu.Lock()
	changed := s.changed
	s.changed = map[int32]bool{}
	owned := map[int32]bool{}
	for p, own := range s.owned {
		if own {
			owned[p] = true
		}
	}
	s.ownMu.Unlock()
	restore := map[int32]*processor{}
	for p := range changed {
		delete(s.procs, p)
		if owned[p] {
			s.gen++
			restore[p] = newProcessor(p, s.gen)
		}
	}
	s.Stats.Partitions.Store(int64(len(owned)))
	if len(restore) == 0 {
		return nil
	}
	s.cfg.Health.NotReady("tracker", fmt.Sprintf("restoring the state of %d partitions", len(restore)))
	st, err := s.restore(ctx, restore)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	var resume []int32
	for p, proc := range restore {
		s.procs[p] = proc
		resume = append(resume, p)
	}
	s.sess.Client().ResumeFetchPartitions(map[string][]int32{s.cfg.Topics.Outcomes: resume})
	s.Stats.Restores.Add(1)
	s.Stats.RestoreNs.Add(int64(st.took))
	s.Stats.Loaded.Add(int64(st.entries))
	s.Stats.Restored.Add(st.records)
	s.log.Info("state restored from the changelog", "partitions", len(restore), "records", st.records, "open", st.entries, "took", st.took)
	return nil
}

// dropAll forgets every store; the owned partitions are restored next.
func (s *trackerSession) dropAll() {
	s.procs = map[int32]*processor{}
	s.ownMu.Lock()
	defer s.ownMu.Unlock()
	for p, own := range s.owned {
		if own {
			s.changed[p] = true
		}
	}
}

// maxPendingRecords commits early when this much waits for a transaction.
const maxPendingRecords = 20_000

// txnStats are counted once a transaction commits.
type txnStats struct {
	resolved, settled, failed, polled, unmatched int64
	alerts                                       map[events.AlertKind]int64
	resolvedLog                                  []func()
}

func newTxnStats() *txnStats { return &txnStats{alerts: map[events.AlertKind]int64{}} }

func (t *txnStats) merge(o *txnStats) {
	t.resolved += o.resolved
	t.settled += o.settled
	t.failed += o.failed
	t.polled += o.polled
	t.unmatched += o.unmatched
	for k, n := range o.alerts {
		t.alerts[k] += n
	}
	t.resolvedLog = append(t.resolvedLog, o.resolvedLog...)
}

// commit writes recs and the consumed offsets in one transaction. An
// abort drops the stores, which are restored before the next poll.
func (s *trackerSession) commit(ctx context.Context, recs []*kgo.Record, st *txnStats) error {
	committed, err := produceInTxn(ctx, s.sess, recs)
	if err != nil {
		s.Stats.Aborts.Add(1)
		return err
	}
	if !committed {
		s.Stats.Aborts.Add(1)
		s.log.Info("transaction aborted (a rebalance, or a record failed); restoring the stores and reading again")
		s.dropAll()
		return nil
	}
	s.Stats.Commits.Add(1)
	s.Stats.Resolved.Add(st.resolved)
	s.Stats.Settled.Add(st.settled)
	s.Stats.Failed.Add(st.failed)
	s.Stats.Polled.Add(st.polled)
	s.Stats.Unmatched.Add(st.unmatched)
	for k, n := range st.alerts {
		if c := s.Stats.Alerts[k]; c != nil {
			c.Add(n)
		}
	}
	for _, f := range st.resolvedLog {
		f()
	}
	return nil
}

// apply folds one consumed record into p's store.
func (s *trackerSession) apply(p *processor, r *kgo.Record, now time.Time) {
	_, e, err := events.Decode(r)
	if err != nil {
		s.log.Debug("record skipped", "partition", r.Partition, "offset", r.Offset, "error", err)
		return
	}
	switch e := e.(type) {
	case events.PayoutSubmitted:
		if _, done := p.recent.get(e.PayoutID); done {
			return // resolved already: a late copy must not move intents back
		}
		tp := s.entry(p, e.PayoutID, now)
		if u, ok := p.unmatched.get(e.PayoutID); ok {
			p.unmatched.remove(e.PayoutID)
			advance(&tp.storedPayout, u.state)
			tp.TerminalPublished = tp.TerminalPublished || u.terminalPublished
		}
		if !tp.Submitted {
			tp.announce = true
		}
		tp.Submitted, tp.BatchID, tp.Account, tp.Currency, tp.Items = true, e.BatchID, e.Account, e.Currency, e.Items
		if len(e.Items) == 0 && e.ItemCount > 0 {
			tp.ItemsFromCalypso, tp.ItemCount, tp.NextPage, tp.Withdrawals = true, e.ItemCount, 0, nil
		}
		advance(&tp.storedPayout, calypso.State(e.State))
		s.heard(tp, now)
	case events.PayoutRejected:
		if e.Account == "" {
			return
		}
		if p.open[e.BatchID] != nil {
			return // a repeat
		}
		// Is there a payout for it anyway? Asked a little later, when a
		// create that raced the rejection would show.
		p.open[e.BatchID] = &trackedPayout{key: e.BatchID, dirty: true, storedPayout: storedPayout{Kind: entryRejected,
			BatchID: e.BatchID, Account: e.Account, Currency: e.Currency, FirstHeard: now, NextTry: now.Add(s.cfg.RejectedCheckAfter)}}
	case events.Alert:
		if e.Kind != AlertStatusForRejectedBatch || e.PayoutID == "" {
			return
		}
		if _, done := p.recent.get(e.PayoutID); done {
			return
		}
		tp := s.entry(p, e.PayoutID, now)
		if u, ok := p.unmatched.get(e.PayoutID); ok {
			p.unmatched.remove(e.PayoutID)
			advance(&tp.storedPayout, u.state)
			tp.TerminalPublished = tp.TerminalPublished || u.terminalPublished
		}
		tp.OfRejected, tp.BatchID, tp.Account = true, e.BatchID, e.Account
		tp.Heard = time.Time{} // look now
	default:
		st, ok := events.StatusOf(e)
		if !ok || st.PayoutID == "" {
			return
		}
		if _, done := p.recent.get(st.PayoutID); done {
			return
		}
		if u, ok := p.unmatched.get(st.PayoutID); ok {
			if calypso.State(st.State).Rank() > u.state.Rank() {
				u.state = calypso.State(st.State)
			}
			u.terminalPublished = u.terminalPublished || st.Terminal
			p.unmatched.add(st.PayoutID, u)
			return
		}
		tp := s.entry(p, st.PayoutID, now)
		if tp.BatchID == "" {
			tp.BatchID = st.BatchID
		}
		advance(&tp.storedPayout, calypso.State(st.State))
		if st.Terminal && calypso.State(st.State).Terminal() {
			tp.TerminalPublished = true
		}
		s.heard(tp, now)
	}
}

// entry returns p's entry under key, creating an open payout entry.
func (s *trackerSession) entry(p *processor, key string, now time.Time) *trackedPayout {
	tp := p.open[key]
	if tp == nil {
		tp = &trackedPayout{key: key, storedPayout: storedPayout{Kind: entryPayout, PayoutID: key, FirstHeard: now, PollEvery: s.cfg.PollAfter}}
		p.open[key] = tp
	}
	tp.dirty = true
	return tp
}

// heard resets a payout's silence: news came.
func (s *trackerSession) heard(tp *trackedPayout, now time.Time) {
	tp.Heard, tp.PollEvery = now, s.cfg.PollAfter
}

// advance moves e to state if that is further along; a late IN_PROGRESS
// after COMPLETED changes nothing, and the first terminal state sticks.
func advance(e *storedPayout, state calypso.State) {
	if state.Known() && state.Rank() > e.State.Rank() {
		e.State = state
	}
}

// applyResult folds a worker's result into its store, if the store is
// still the one the work was for.
func (s *trackerSession) applyResult(res lookupResult, now time.Time) {
	p := s.procs[res.partition]
	if p == nil || p.gen != res.gen {
		return // the partition moved on meanwhile; its new owner looks again
	}
	tp := p.open[res.key]
	if tp == nil {
		return
	}
	tp.busy, tp.dirty = false, true
	for id, w := range res.withdrawals {
		if tp.Withdrawals == nil {
			tp.Withdrawals = map[string]withdrawalResult{}
		}
		tp.Withdrawals[id] = w
	}
	if res.listed {
		tp.NextPage = res.nextPage
	}
	log := s.log.With("payout", tp.PayoutID, "batch", tp.BatchID)
	if res.err != nil {
		s.Stats.Errors.Add(1)
		tp.Failures++
		wait := min(s.cfg.RetryDelay<<min(tp.Failures-1, 20), s.cfg.MaxRetryDelay)
		tp.NextTry = now.Add(wait)
		if tp.Failures == s.cfg.AlertAfter {
			tp.failing = res.err
		}
		if tp.Failures == 1 {
			log.Warn("Calypso look-up failed; retrying with a growing wait", "error", res.err, "retry_in", wait)
		} else {
			log.Debug("Calypso look-up failed again", "error", res.err, "failures", tp.Failures, "retry_in", wait)
		}
		return
	}
	tp.Failures, tp.NextTry = 0, time.Time{}
	switch res.kind {
	case lookupRejected:
		tp.rejectedCheck = &res
	default:
		if mp := res.polled; mp != nil {
			if mp.State.Known() && mp.State.Rank() > tp.State.Rank() {
				tp.polledState = mp
				s.heard(tp, now)
			} else {
				// Nothing new: a payout silent on purpose is asked ever
				// less often.
				tp.Heard = now
				tp.PollEvery = min(2*max(tp.PollEvery, s.cfg.PollAfter), s.cfg.MaxPollInterval)
			}
		}
	}
}
