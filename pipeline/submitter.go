package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
)

// Headers a batch carries when it is written back to the batches topic to be
// tried again later (deferred or undecided).
const (
	HeaderAttempt   = "payoutd-attempt"
	HeaderNotBefore = "payoutd-not-before"
	// HeaderUndecidedSince is when the batch first became undecided.
	HeaderUndecidedSince = "payoutd-undecided-since"
)

// SubmitterConfig configures a Submitter. Zero values take the defaults named.
type SubmitterConfig struct {
	Topics events.Topics
	// Group is the consumer group on the batches topic. Default "payoutd-submitter".
	Group string
	// TransactionalID: see BatcherConfig.TransactionalID. Default Group + a random suffix.
	TransactionalID string
	// InstanceID: see BatcherConfig.InstanceID.
	InstanceID string
	// CheckBalance reads the account's balance before each create and
	// defers a batch the balance cannot cover.
	CheckBalance bool
	// PrecalculateFees asks tariff/extended-fee for each batch's fees; the
	// balance check then covers amount + fee, and MaxFee applies.
	PrecalculateFees bool
	// MaxFee is the most a batch of a currency may cost in fees; a batch
	// above it is deferred. Absent currencies have no limit.
	MaxFee map[string]calypso.Amount
	// DeferDelay is the first wait of a deferred or undecided batch,
	// doubling each attempt up to MaxDeferDelay. Defaults 1 minute and 30
	// minutes.
	DeferDelay    time.Duration
	MaxDeferDelay time.Duration
	// RetryDelay is the older name of Retry.MaxInterval; used when that is zero.
	RetryDelay time.Duration

	// Rate is the most Calypso calls per second one account's lane makes,
	// creates, look-ups, balance and fee calls together (default 5, what
	// Calypso allows an account). It is per process: with N submitter
	// instances set it to Calypso's allowance / N, less what the
	// tracker's polls of that account use. Negative: no limit.
	Rate float64
	// Limiters, when set for an account, is the limiter its lane uses
	// instead of one built from Rate: the process's one limiter for the
	// account, shared with its other Calypso callers (the tracker), so
	// that together they stay within the account's allowance.
	Limiters map[string]*rate.Limiter
	// InFlight is how many batches one account's lane works on at once
	// (default 4).
	InFlight int
	// Retry is each lane's one retry policy for Calypso calls that failed
	// retryably (5xx, 429, timeouts, lost connections). Its end is a
	// decision, never a silent forever: a create whose outcome may be
	// unknown is looked up and, failing that, parked as undecided; one that
	// certainly did not reach Calypso is deferred (CALYPSO_UNAVAILABLE).
	Retry RetryPolicy
	// LookupGrace is how long a batch whose create may have reached Calypso
	// is looked up by idempotency key (answers 004, payout still being
	// created) before it is parked as undecided (default 1 minute).
	LookupGrace time.Duration
	// MaxPending bounds the batches handed to lanes whose outcome is not
	// yet committed; above it the submitter stops fetching (default 4096).
	// A lane failing longer than Retry.MaxElapsed parks its batches
	// without calls, so a hung account cannot fill this budget for long.
	MaxPending int

	// Tracer, when set (payoutd traces), makes each create a span
	// "calypso create mass payout" linked to the trace of every intent of
	// the batch, parent of the Calypso client's HTTP spans; the intents'
	// FAILED outcomes the submitter writes join their intents' traces. Nil: off.
	Tracer trace.Tracer

	// Health receives the component's readiness: part "submitter", and
	// "submitter/lane/ACCOUNT" for a lane that stopped; nil records nothing.
	Health *Health
	Logger *slog.Logger
	Now    func() time.Time
}

// RetryPolicy is capped exponential backoff with jitter, bounded in attempts
// and in time: try n waits a random duration in [d/2, d], d =
// min(InitialInterval·Multiplier^(n-1), MaxInterval).
type RetryPolicy struct {
	// MaxAttempts counts the first try (default 6).
	MaxAttempts int
	// InitialInterval is the first wait (default 200ms).
	InitialInterval time.Duration
	// MaxInterval caps every wait (default 30s).
	MaxInterval time.Duration
	// Multiplier grows the wait (default 2).
	Multiplier float64
	// MaxElapsed bounds one batch's tries of one call, waits included
	// (default 2 minutes).
	MaxElapsed time.Duration
}

// Defaults of SubmitterConfig.
const (
	DefaultSubmitterRate     = 5.0
	DefaultSubmitterInFlight = 4
	DefaultLookupGrace       = time.Minute
	DefaultMaxPending        = 4096
)

func (p *RetryPolicy) setDefaults(maxInterval time.Duration) {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 6
	}
	if p.InitialInterval <= 0 {
		p.InitialInterval = 200 * time.Millisecond
	}
	if p.MaxInterval <= 0 {
		p.MaxInterval = maxInterval
	}
	if p.MaxInterval <= 0 {
		p.MaxInterval = 30 * time.Second
	}
	p.MaxInterval = max(p.MaxInterval, p.InitialInterval)
	if p.Multiplier < 1 {
		p.Multiplier = 2
	}
	if p.MaxElapsed <= 0 {
		p.MaxElapsed = 2 * time.Minute
	}
}

// wait is the jittered wait after failed try n (1-based).
func (p RetryPolicy) wait(n int) time.Duration {
	d := float64(p.InitialInterval)
	for i := 1; i < n && d < float64(p.MaxInterval); i++ {
		d *= p.Multiplier
	}
	return halfJitter(time.Duration(min(d, float64(p.MaxInterval))))
}

func (c *SubmitterConfig) setDefaults() {
	c.Topics = c.Topics.WithDefaults()
	if c.Group == "" {
		c.Group = "payoutd-submitter"
	}
	if c.TransactionalID == "" {
		c.TransactionalID = c.Group + "-" + uuid.NewString()
	}
	if c.DeferDelay <= 0 {
		c.DeferDelay = time.Minute
	}
	if c.MaxDeferDelay <= 0 {
		c.MaxDeferDelay = 30 * time.Minute
	}
	c.MaxDeferDelay = max(c.MaxDeferDelay, c.DeferDelay)
	if c.Rate == 0 {
		c.Rate = DefaultSubmitterRate
	}
	if c.InFlight <= 0 {
		c.InFlight = DefaultSubmitterInFlight
	}
	c.Retry.setDefaults(c.RetryDelay)
	if c.LookupGrace <= 0 {
		c.LookupGrace = DefaultLookupGrace
	}
	if c.MaxPending <= 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// SubmitterStats counts what a Submitter did; safe to read while it runs.
type SubmitterStats struct {
	Submitted   atomic.Int64 // batches created at Calypso (or found created)
	Recovered   atomic.Int64 // of which found by idempotency key
	Rejected    atomic.Int64
	Deferred    atomic.Int64
	Undecided   atomic.Int64 // times a batch was parked as undecided
	Quarantined atomic.Int64 // batches that contradict what Calypso holds
	Replanned   atomic.Int64 // batches refused for one row, the rest planned again
	Skipped     atomic.Int64 // batches consumed again whose outcome is final
	CalypsoErrs atomic.Int64 // retryable Calypso failures waited out
	Commits     atomic.Int64
	Aborts      atomic.Int64
}

// Submitter creates each planned batch at Calypso at most once, and at least
// once unless Calypso refuses it for good.
//
// Each account is a lane: its own rate limiter, calls in flight and retry
// policy, so a slow, hung or refused account never delays another. The
// session consumes the batches topic, hands batches to lanes and commits
// each lane's outcomes as they come, together with the batch's durable
// state (the batch-state topic) and the consumed offsets, which move past a
// batch only once it has an outcome. A create whose outcome is unknown is
// never a rejection: it is looked up by idempotency key and, failing that,
// parked as undecided and looked up again later.
type Submitter struct {
	cfg      SubmitterConfig
	kafka    []kgo.Opt
	accounts *accountClients
	log      *slog.Logger
	crash    crashHook
	Stats    SubmitterStats

	limitersMu sync.Mutex
	limiters   map[string]*rate.Limiter

	watch watchlist
}

// accountClients are the Calypso clients by account, replaceable while the
// submitter runs (new credentials for an account whose lane stopped).
type accountClients struct {
	mu sync.RWMutex
	m  Accounts
}

func (a *accountClients) client(account string) (*calypso.Client, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.m.client(account)
}

func (a *accountClients) set(account string, c *calypso.Client) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.m[account] = c
}

// NewSubmitter returns a Submitter acting through accounts' Calypso clients.
func NewSubmitter(cfg SubmitterConfig, accounts Accounts, kafka ...kgo.Opt) (*Submitter, error) {
	cfg.setDefaults()
	if len(accounts) == 0 {
		return nil, errors.New("submitter: no Calypso accounts configured")
	}
	own := make(Accounts, len(accounts))
	for k, v := range accounts {
		own[k] = v
	}
	return &Submitter{
		cfg: cfg, kafka: kafka, accounts: &accountClients{m: own},
		log: cfg.Logger.With("component", "submitter"), limiters: map[string]*rate.Limiter{},
		watch: watchlist{undecided: map[string]time.Time{}, deferred: map[string]bool{}, quarantined: map[string]bool{}, lanes: map[string]LaneStatus{}},
	}, nil
}

// limiter is the account's rate limiter, shared by every lane of the
// process that acts on the account, across sessions.
func (s *Submitter) limiter(account string) *rate.Limiter {
	s.limitersMu.Lock()
	defer s.limitersMu.Unlock()
	l, ok := s.limiters[account]
	if !ok {
		l = s.cfg.Limiters[account]
	}
	if l == nil {
		limit := rate.Limit(s.cfg.Rate)
		if s.cfg.Rate < 0 {
			limit = rate.Inf
		}
		l = rate.NewLimiter(limit, 1)
		s.limiters[account] = l
	}
	return l
}

// Run consumes until ctx is done. A session that fails is replaced.
func (s *Submitter) Run(ctx context.Context) error {
	return runSessions(ctx, s.log, s.cfg.Health, "submitter", s.session)
}

// planned is a consumed batch with its delivery state.
type planned struct {
	rec       *kgo.Record
	batch     events.BatchPlanned
	attempt   int // 1 for a batch never written back
	notBefore time.Time
	// undecidedSince is set on a batch written back as undecided.
	undecidedSince time.Time
}

func (s *Submitter) decode(r *kgo.Record) (planned, error) {
	_, e, err := events.Decode(r)
	if err != nil {
		return planned{}, err
	}
	b, ok := e.(events.BatchPlanned)
	if !ok {
		return planned{}, fmt.Errorf("record is a %T, not a BatchPlanned", e)
	}
	if !b.Total.Equal(b.Sum()) || len(b.Items) == 0 {
		// Never pay a batch whose total is not its items' sum.
		return planned{}, fmt.Errorf("batch %s: total %s is not the sum of its %d items", b.BatchID, b.Total, len(b.Items))
	}
	p := planned{rec: r, batch: b, attempt: 1}
	if v := headerValue(r, HeaderAttempt); v != "" {
		if p.attempt, err = strconv.Atoi(v); err != nil {
			return planned{}, fmt.Errorf("header %s: %w", HeaderAttempt, err)
		}
	}
	for h, t := range map[string]*time.Time{HeaderNotBefore: &p.notBefore, HeaderUndecidedSince: &p.undecidedSince} {
		if v := headerValue(r, h); v != "" {
			if *t, err = time.Parse(time.RFC3339Nano, v); err != nil {
				return planned{}, fmt.Errorf("header %s: %w", h, err)
			}
		}
	}
	return p, nil
}

// entry is a consumed record the session has not yet committed past.
type entry struct {
	p     planned
	state events.BatchState // what was known of the batch when consumed
	// inherited says the batch was in the partition's backlog at assignment,
	// so an earlier owner may have attempted it (see partitionLog.backlogEnd).
	inherited bool
	// dropped is set when the entry's partition was revoked: its lane skips
	// it, and an outcome already found is not written by this instance.
	dropped atomic.Bool
}

// partitionLog tracks one owned partition of the batches topic: which
// consumed offsets still wait for an outcome, and which are done above the
// commit point. Its commit point is the lowest offset still waiting: a
// batch stuck in its lane holds back the partition's offset, never the
// outcomes of the batches behind it, whose batch states make a replay safe.
type partitionLog struct {
	pending   map[int64]*entry
	done      map[int64]bool
	next      int64 // highest consumed offset + 1; -1 nothing consumed
	committed int64 // last commit point written; -1 none
	// backlogEnd is the partition's end when it was assigned. A batch below
	// it was there before this owner: a previous owner (or session) may have
	// sent its create and died before committing the outcome, and no state
	// says so. Such a batch is in doubt from its first attempt here.
	backlogEnd int64
}

func newPartitionLog() *partitionLog {
	return &partitionLog{pending: map[int64]*entry{}, done: map[int64]bool{}, committed: -1, next: -1}
}

// point is the partition's commit point once the offsets in finishing have
// their outcomes written.
func (pl *partitionLog) point(finishing map[int64]bool) int64 {
	pt := pl.next
	for o := range pl.pending {
		if !finishing[o] {
			pt = min(pt, o)
		}
	}
	return pt
}

// sessionState is one session's view; only the session goroutine touches it.
type sessionState struct {
	parts    map[int32]*partitionLog
	inflight map[string]int64 // batch id → offset of the record being worked on
	states   *batchStates
	results  []laneResult // outcomes not yet committed
	extra    []extraRecord
	nPending int // handed to lanes, outcome not yet committed
	waiting  []*entry
}

// extraRecord is a record to write for a consumed offset that needs no lane
// (an unreadable batch to the DLQ).
type extraRecord struct {
	partition int32
	offset    int64
	rec       *kgo.Record
}

// laneResult is a lane's outcome for one batch: the records that say it,
// written in one transaction with the batch's state and the offset.
type laneResult struct {
	e         *entry
	partition int32
	offset    int64
	batchID   string
	kind      outcomeKind
	records   []*kgo.Record
	state     *events.BatchState
	since     time.Time // undecided since
	canceled  bool      // the session ended mid-work, or the partition was revoked
}

// abortingFor is how long transactions may keep aborting (a rebalance, a
// record refused) before the session starts over.
const abortingFor = time.Minute

func (s *Submitter) session(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	st := &sessionState{parts: map[int32]*partitionLog{}, inflight: map[string]int64{}, states: newBatchStates()}
	var (
		cbMu     sync.Mutex
		cbErr    error
		assigned []int32
		revoked  []int32
		backlog  = map[int32]int64{} // partition → its end at assignment
	)
	onAssigned := func(actx context.Context, cl *kgo.Client, m map[string][]int32) {
		ps := m[s.cfg.Topics.Batches]
		if len(ps) == 0 {
			return
		}
		ends, endErr := partitionEnds(actx, kadm.NewClient(cl), s.cfg.Topics.Batches, ps)
		// Restore before the group fetches the partitions' offsets (kgo
		// calls this first), so no batch is handled without its state.
		quarantined, err := st.states.restore(actx, s.kafka, s.cfg.Topics.BatchStates, ps)
		for _, id := range quarantined {
			s.noteOutcome(laneResult{batchID: id, kind: outcomeQuarantined})
		}
		cbMu.Lock()
		defer cbMu.Unlock()
		if err != nil && cbErr == nil {
			cbErr = fmt.Errorf("restoring batch states of partitions %v: %w", ps, err)
		}
		if endErr != nil && cbErr == nil {
			cbErr = fmt.Errorf("reading the end of partitions %v: %w", ps, endErr)
		}
		for p, end := range ends {
			backlog[p] = end
		}
		assigned = append(assigned, ps...)
	}
	onRevoked := func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
		cbMu.Lock()
		defer cbMu.Unlock()
		revoked = append(revoked, m[s.cfg.Topics.Batches]...)
	}
	opts := append(append([]kgo.Opt{}, s.kafka...),
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(s.cfg.Topics.Batches),
		kgo.TransactionalID(s.cfg.TransactionalID),
		// read_committed; franz-go always asks for stable offsets (KIP-447),
		// so a new owner waits for the previous owner's transaction to end.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.OnPartitionsAssigned(onAssigned),
		kgo.OnPartitionsRevoked(onRevoked),
		kgo.OnPartitionsLost(onRevoked),
		// A group without committed offsets reads the batches topic from
		// its start: the batch states are what make that replay safe.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if s.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(s.cfg.InstanceID))
	}
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return err
	}
	defer sess.Close()
	s.warnIfNoCommittedOffsets(ctx, sess.Client())

	results := make(chan laneResult, 1024)
	wake := make(chan struct{}, 1)
	lanes := newLanes(ctx, s, results, wake)
	defer lanes.stop()

	// rebalanced applies the group's callbacks: new partitions get a log,
	// revoked ones are forgotten with everything consumed from them.
	rebalanced := func() error {
		cbMu.Lock()
		err, newParts, gone := cbErr, assigned, revoked
		assigned, revoked = nil, nil
		cbMu.Unlock()
		if err != nil {
			return err
		}
		st.drop(gone)
		cbMu.Lock()
		for _, p := range newParts {
			if st.parts[p] == nil {
				st.parts[p] = newPartitionLog()
			}
			st.parts[p].backlogEnd = backlog[p]
		}
		cbMu.Unlock()
		return nil
	}
	dispatch := func(e *entry) {
		st.nPending++
		lanes.submit(e)
	}

	var abortedSince time.Time
	abortWait := 50 * time.Millisecond
	for {
		if err := rebalanced(); err != nil {
			return err
		}
		now := s.cfg.Now()
		var stillWaiting []*entry
		for _, e := range st.waiting {
			if e.p.notBefore.After(now) {
				stillWaiting = append(stillWaiting, e)
				continue
			}
			dispatch(e)
		}
		st.waiting = stillWaiting

		var fetched []*kgo.Record
		if st.nPending < s.cfg.MaxPending {
			pollCtx, stop := s.pollContext(ctx, st.waiting, wake)
			fetches := sess.PollFetches(pollCtx)
			stop()
			if ctx.Err() != nil {
				return nil // nothing uncommitted is lost: it is consumed again
			}
			if err := fatalFetchErr(fetches); err != nil {
				return err
			}
			fetched = fetches.Records()
			s.cfg.Health.Ready("submitter")
		} else {
			s.waitForWork(ctx, st.waiting, wake)
			if ctx.Err() != nil {
				return nil
			}
		}
		if err := rebalanced(); err != nil {
			return err
		}
		for _, r := range fetched {
			if st.parts[r.Partition] == nil {
				continue // revoked since it was fetched
			}
			if e := s.consume(st, r); e != nil {
				if e.p.notBefore.After(s.cfg.Now()) {
					st.waiting = append(st.waiting, e)
				} else {
					dispatch(e)
				}
			}
		}
		st.drain(results)
		if len(st.results) == 0 && len(st.extra) == 0 && !st.pointsMoved() {
			continue
		}
		committed, err := s.commit(ctx, sess, st)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if committed {
			abortedSince, abortWait = time.Time{}, 50*time.Millisecond
			continue
		}
		// A rebalance (or a refused record) aborted the transaction; the
		// session rewound to the committed offsets. What is still ours is
		// written again by the next transaction, after a short wait so that
		// a rebalance in progress can finish.
		if abortedSince.IsZero() {
			abortedSince = time.Now()
		} else if time.Since(abortedSince) > abortingFor {
			return fmt.Errorf("submitter: transactions have aborted for %s", time.Since(abortedSince).Round(time.Second))
		}
		s.log.Warn("transaction aborted; its outcomes are written again by the next one", "retry_in", abortWait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(abortWait):
		}
		abortWait = min(2*abortWait, 2*time.Second)
	}
}

// drop forgets revoked partitions: their logs, waiting batches, outcomes not
// yet written and work in lanes. The new owner consumes them from the
// committed offsets, with the batch states this instance committed.
func (st *sessionState) drop(partitions []int32) {
	if len(partitions) == 0 {
		return
	}
	gone := map[int32]bool{}
	for _, p := range partitions {
		pl := st.parts[p]
		if pl == nil {
			continue
		}
		gone[p] = true
		for _, e := range pl.pending {
			e.dropped.Store(true)
			if st.inflight[e.p.batch.BatchID] == e.p.rec.Offset {
				delete(st.inflight, e.p.batch.BatchID)
			}
		}
		delete(st.parts, p)
		st.states.forget(p)
	}
	st.waiting = slices.DeleteFunc(st.waiting, func(e *entry) bool { return gone[e.p.rec.Partition] })
	st.results = slices.DeleteFunc(st.results, func(r laneResult) bool {
		if gone[r.partition] {
			st.nPending--
			return true
		}
		return false
	})
	st.extra = slices.DeleteFunc(st.extra, func(x extraRecord) bool { return gone[x.partition] })
}

// pollContext is ctx, ended early when a lane has a result or a waiting
// batch comes due, so that outcomes are committed as they come.
func (s *Submitter) pollContext(ctx context.Context, waiting []*entry, wake chan struct{}) (context.Context, func()) {
	pollCtx, cancel := context.WithCancel(ctx)
	if due, ok := earliest(waiting); ok {
		var c2 context.CancelFunc
		pollCtx, c2 = context.WithTimeout(pollCtx, due.Sub(s.cfg.Now()))
		prev := cancel
		cancel = func() { c2(); prev() }
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-wake:
			select {
			case <-done:
				// The poll is over and the session may have drained
				// already: keep the wake for its next poll.
				select {
				case wake <- struct{}{}:
				default:
				}
			default:
				// Taken before the poll ended: its result was sent
				// before the wake, so the drain after the poll sees it.
				cancel()
			}
		case <-done:
		case <-pollCtx.Done():
		}
	}()
	return pollCtx, func() { close(done); cancel() }
}

// waitForWork blocks while too much is pending, until a lane has a result,
// a waiting batch comes due or ctx ends.
func (s *Submitter) waitForWork(ctx context.Context, waiting []*entry, wake <-chan struct{}) {
	var due <-chan time.Time
	if t, ok := earliest(waiting); ok {
		timer := time.NewTimer(t.Sub(s.cfg.Now()))
		defer timer.Stop()
		due = timer.C
	}
	select {
	case <-ctx.Done():
	case <-wake:
	case <-due:
	}
}

func earliest(es []*entry) (time.Time, bool) {
	var t time.Time
	for _, e := range es {
		if t.IsZero() || e.p.notBefore.Before(t) {
			t = e.p.notBefore
		}
	}
	return t, !t.IsZero()
}

// consume records r in its partition's log and returns the entry to hand to
// a lane, or nil when r needs no work (unreadable, final, a copy of a batch
// already being worked on, or consumed again after a rewind).
func (s *Submitter) consume(st *sessionState, r *kgo.Record) *entry {
	pl := st.parts[r.Partition]
	if _, ok := pl.pending[r.Offset]; ok || pl.done[r.Offset] || r.Offset < pl.committed || st.extraFor(r) {
		return nil // consumed again after an aborted transaction rewound the session
	}
	pl.next = max(pl.next, r.Offset+1)
	p, err := s.decode(r)
	if err != nil {
		s.log.Error("unreadable record on the batches topic; sent to the DLQ", "partition", r.Partition, "offset", r.Offset, "error", err)
		st.extra = append(st.extra, extraRecord{r.Partition, r.Offset,
			dlqRecord(s.cfg.Topics.DLQ, r, &Rejection{Reason: ReasonBadBatch, Err: err.Error()}, s.cfg.Now())})
		return nil
	}
	b := p.batch
	state, known := st.states.get(r.Partition, b.BatchID)
	if known && state.State.Final() {
		s.Stats.Skipped.Add(1)
		s.log.Warn("batch consumed again after its final outcome; not created again",
			"batch", b.BatchID, "state", state.State, "payout", state.PayoutID, "partition", r.Partition, "offset", r.Offset)
		pl.done[r.Offset] = true
		return nil
	}
	if _, busy := st.inflight[b.BatchID]; busy {
		// A copy of a batch being worked on (a write-back consumed while
		// the original is in its lane): the work in flight speaks for it.
		pl.done[r.Offset] = true
		return nil
	}
	if !p.undecidedSince.IsZero() {
		s.watch.setUndecided(b.BatchID, p.undecidedSince)
	}
	e := &entry{p: p, state: state, inherited: r.Offset < pl.backlogEnd}
	pl.pending[r.Offset] = e
	st.inflight[b.BatchID] = r.Offset
	return e
}

// extraFor reports whether r already has a record waiting to be written.
func (st *sessionState) extraFor(r *kgo.Record) bool {
	return slices.ContainsFunc(st.extra, func(x extraRecord) bool { return x.partition == r.Partition && x.offset == r.Offset })
}

// drain collects the results lanes have sent so far.
func (st *sessionState) drain(results <-chan laneResult) {
	for {
		select {
		case r := <-results:
			switch {
			case r.e != nil && r.e.dropped.Load():
				st.nPending-- // its partition was revoked
			case !r.canceled:
				st.results = append(st.results, r)
			}
		default:
			return
		}
	}
}

// finishing is the offsets, by partition, that the next transaction writes
// outcomes for.
func (st *sessionState) finishing() map[int32]map[int64]bool {
	out := map[int32]map[int64]bool{}
	add := func(p int32, o int64) {
		if out[p] == nil {
			out[p] = map[int64]bool{}
		}
		out[p][o] = true
	}
	for _, r := range st.results {
		add(r.partition, r.offset)
	}
	for _, x := range st.extra {
		add(x.partition, x.offset)
	}
	return out
}

// pointsMoved reports whether a partition's commit point moved past what
// was committed (batches skipped, with no records to write).
func (st *sessionState) pointsMoved() bool {
	for _, pl := range st.parts {
		if pl.next >= 0 && pl.point(nil) > pl.committed {
			return true
		}
	}
	return false
}

// commit writes the lanes' outcomes and moves each partition's offset to its
// commit point, in one transaction, and reports whether it committed. An
// aborted transaction changes nothing here: its outcomes are written again
// by the next one. An error ends the session: the next one starts from the
// committed offsets and the batch states, and redoes the work (creates
// answer 016 and are found by idempotency key).
func (s *Submitter) commit(ctx context.Context, sess *kgo.GroupTransactSession, st *sessionState) (bool, error) {
	var out []*kgo.Record
	for _, x := range st.extra {
		out = append(out, x.rec)
	}
	for _, r := range st.results {
		out = append(out, r.records...)
		if r.kind == outcomeSubmitted && s.crash.at(crashAfterCreate) {
			return false, errCrashed // Calypso accepted, nothing committed
		}
	}
	finishing := st.finishing()
	points := map[int32]int64{}
	for p, pl := range st.parts {
		if pl.next >= 0 {
			points[p] = pl.point(finishing[p])
		}
	}
	ok, err := s.produceAndCommit(ctx, sess, out, points)
	if err != nil || !ok {
		s.Stats.Aborts.Add(1)
		if err != nil {
			return false, fmt.Errorf("submitter transaction: %w", err)
		}
		return false, nil
	}
	s.Stats.Commits.Add(1)
	for _, r := range st.results {
		if pl := st.parts[r.partition]; pl != nil {
			delete(pl.pending, r.offset)
			pl.done[r.offset] = true
		}
		if st.inflight[r.batchID] == r.offset {
			delete(st.inflight, r.batchID)
		}
		st.nPending--
		if r.state != nil {
			st.states.put(r.partition, *r.state)
		}
		s.noteOutcome(r)
	}
	for _, x := range st.extra {
		if pl := st.parts[x.partition]; pl != nil {
			pl.done[x.offset] = true
		}
	}
	for p, pt := range points {
		pl := st.parts[p]
		pl.committed = pt
		for o := range pl.done {
			if o < pt {
				delete(pl.done, o)
			}
		}
	}
	st.results, st.extra = nil, nil
	return true, nil
}

// produceAndCommit is produceInTxn with the offsets set to the commit points
// instead of everything polled.
func (s *Submitter) produceAndCommit(ctx context.Context, sess *kgo.GroupTransactSession, records []*kgo.Record, points map[int32]int64) (bool, error) {
	topic := s.cfg.Topics.Batches
	setPoints := func(req *kmsg.TxnOffsetCommitRequest) error {
		idx := slices.IndexFunc(req.Topics, func(t kmsg.TxnOffsetCommitRequestTopic) bool { return t.Topic == topic })
		if idx < 0 {
			t := kmsg.NewTxnOffsetCommitRequestTopic()
			t.Topic = topic
			req.Topics = append(req.Topics, t)
			idx = len(req.Topics) - 1
		}
		t := &req.Topics[idx]
		var parts []kmsg.TxnOffsetCommitRequestTopicPartition
		for p, o := range points {
			rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
			rp.Partition, rp.Offset, rp.LeaderEpoch, rp.Metadata = p, o, -1, &req.MemberID
			parts = append(parts, rp)
		}
		t.Partitions = parts
		if len(parts) == 0 {
			req.Topics = slices.Delete(req.Topics, idx, idx+1)
		}
		return nil
	}
	ctx = kgo.PreTxnCommitFnContext(ctx, setPoints)
	return produceInTxn(ctx, sess, records)
}

// warnIfNoCommittedOffsets says loudly when the group has no committed
// offsets: it then reads the batches topic from its start, and only the
// batch states keep the replay from paying anything twice.
func (s *Submitter) warnIfNoCommittedOffsets(ctx context.Context, cl *kgo.Client) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	offsets, err := kadm.NewClient(cl).FetchOffsets(ctx, s.cfg.Group)
	if err != nil {
		s.log.Warn("could not read the submitter group's committed offsets", "group", s.cfg.Group, "error", err)
		return
	}
	committed := false
	offsets.Each(func(o kadm.OffsetResponse) {
		committed = committed || (o.Topic == s.cfg.Topics.Batches && o.Err == nil && o.At >= 0)
	})
	if committed {
		return
	}
	s.log.Warn("submitter group has no committed offsets on the batches topic: reading it from the start; "+
		"batches with a final state on the batch-state topic are skipped, the others are looked up by idempotency key before any create",
		"group", s.cfg.Group, "topic", s.cfg.Topics.Batches, "batch_states", s.cfg.Topics.BatchStates)
}

// noteOutcome updates what the submitter shows an operator (metrics, health).
func (s *Submitter) noteOutcome(r laneResult) {
	switch r.kind {
	case outcomeUndecided:
		s.watch.setUndecided(r.batchID, r.since)
	case outcomeDeferred:
		s.watch.clearUndecided(r.batchID)
		s.watch.setDeferred(r.batchID, true)
	case outcomeQuarantined:
		s.watch.clearUndecided(r.batchID)
		s.watch.setDeferred(r.batchID, false)
		n := s.watch.quarantine(r.batchID)
		s.cfg.Health.NotReady("submitter/quarantine", fmt.Sprintf("submitter: %d batches quarantined; see the DLQ and BATCH_CONTRADICTED alerts", n))
	default:
		s.watch.clearUndecided(r.batchID)
		s.watch.setDeferred(r.batchID, false)
	}
}

// watchlist is what an operator watches: undecided batches, quarantined
// batches and the lanes' states.
type watchlist struct {
	mu          sync.Mutex
	undecided   map[string]time.Time
	deferred    map[string]bool
	quarantined map[string]bool
	lanes       map[string]LaneStatus
}

func (w *watchlist) setUndecided(batch string, since time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if old, ok := w.undecided[batch]; !ok || since.Before(old) {
		w.undecided[batch] = since
	}
}

func (w *watchlist) clearUndecided(batch string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.undecided, batch)
}

func (w *watchlist) quarantine(batch string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.quarantined[batch] = true
	return len(w.quarantined)
}

// Undecided returns how many batches this submitter holds as undecided and
// since when the oldest has been (zero when none).
func (s *Submitter) Undecided() (int, time.Time) {
	s.watch.mu.Lock()
	defer s.watch.mu.Unlock()
	var oldest time.Time
	for _, t := range s.watch.undecided {
		if oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
	}
	return len(s.watch.undecided), oldest
}

func (w *watchlist) setDeferred(batch string, on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if on {
		w.deferred[batch] = true
	} else {
		delete(w.deferred, batch)
	}
}

// Deferred returns how many batches this process has deferred and not yet
// seen to another outcome (funds, fees, or Calypso unavailable).
func (s *Submitter) Deferred() int {
	s.watch.mu.Lock()
	defer s.watch.mu.Unlock()
	return len(s.watch.deferred)
}

// QuarantinedBatches returns how many batches this process quarantined.
func (s *Submitter) QuarantinedBatches() int {
	s.watch.mu.Lock()
	defer s.watch.mu.Unlock()
	return len(s.watch.quarantined)
}

// LaneState is where an account's lane stands.
type LaneState string

const (
	LaneOK      LaneState = "ok"      // creating
	LaneFailing LaneState = "failing" // Calypso's calls fail retryably; batches are retried, then parked
	LaneStopped LaneState = "stopped" // authentication or configuration error; batches wait for a fix
)

// LaneStatus is one lane's latest state.
type LaneStatus struct {
	Account string
	State   LaneState
	Reason  string
	Since   time.Time
}

// Lanes returns every lane's state, in no order.
func (s *Submitter) Lanes() []LaneStatus {
	s.watch.mu.Lock()
	defer s.watch.mu.Unlock()
	out := make([]LaneStatus, 0, len(s.watch.lanes))
	for _, l := range s.watch.lanes {
		out = append(out, l)
	}
	return out
}

// setLane records a lane's state; it reports whether the state changed.
func (s *Submitter) setLane(account string, state LaneState, reason string) bool {
	s.watch.mu.Lock()
	old, ok := s.watch.lanes[account]
	changed := !ok || old.State != state
	if changed {
		s.watch.lanes[account] = LaneStatus{Account: account, State: state, Reason: reason, Since: s.cfg.Now()}
	}
	s.watch.mu.Unlock()
	part := "submitter/lane/" + account
	if state == LaneStopped {
		s.cfg.Health.NotReady(part, reason)
	} else if changed {
		s.cfg.Health.Forget(part)
	}
	return changed
}

// partitionEnds returns the high watermark of each of topic's partitions ps.
func partitionEnds(ctx context.Context, adm *kadm.Client, topic string, ps []int32) (map[int32]int64, error) {
	listed, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		return nil, err
	}
	out := make(map[int32]int64, len(ps))
	for _, p := range ps {
		if o, ok := listed.Lookup(topic, p); ok {
			out[p] = o.Offset
		}
	}
	return out, nil
}
