package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
)

// TrackerConfig configures a Tracker. Zero values take the defaults named.
type TrackerConfig struct {
	// Topics names the topics; empty names are the defaults.
	Topics events.Topics
	// TransactionalID is the tracker's producer identity. Default
	// "payoutd-tracker": a fixed id, because one tracker is active per
	// topic set, and a restarted (or second) instance then fences its
	// predecessor and aborts its open transaction before reading its state.
	TransactionalID string
	// PollAfter is how long a payout may stay silent (no webhook, no event)
	// before Calypso is asked for it. Default 2 minutes.
	PollAfter time.Duration
	// Workers bounds the payouts handled at once (Calypso calls and their
	// Kafka transaction). Default 4. Calypso's client limits its own request
	// rate as well.
	Workers int
	// CallTimeout bounds the Calypso calls made for one payout. Default 30s.
	CallTimeout time.Duration
	// Logger defaults to slog.Default().
	// Health receives the component\'s readiness (part "tracker"); nil records nothing.
	Health *Health
	Logger *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
}

func (c *TrackerConfig) setDefaults() {
	c.Topics = c.Topics.WithDefaults()
	if c.TransactionalID == "" {
		c.TransactionalID = "payoutd-tracker"
	}
	if c.PollAfter <= 0 {
		c.PollAfter = 2 * time.Minute
	}
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// TrackerStats counts what a Tracker did; safe to read while it runs.
type TrackerStats struct {
	Loaded   atomic.Int64 // records read to rebuild the state at session start
	Polls    atomic.Int64 // payout/mass calls for silent payouts
	Polled   atomic.Int64 // status events published from polls
	Resolved atomic.Int64 // payouts whose intents were resolved
	Settled  atomic.Int64 // intents settled
	Failed   atomic.Int64 // intents failed
	Errors   atomic.Int64 // payouts whose handling failed and is retried
	Open     atomic.Int64 // payouts being tracked now
}

// Tracker follows the outcomes and batches topics, keeps each open payout's
// latest state (never moving backwards), polls Calypso for payouts that have
// been silent longer than PollAfter, and, once a payout is terminal,
// resolves every intent of its batch into IntentState (intents topic) and
// IntentSettled or IntentFailed (outcomes topic, keyed by intent id).
//
// Restarts neither lose nor duplicate a resolution, by transactions: all
// records of one payout's resolution (and the polled status that led to it)
// are written in one Kafka transaction, so they are visible all together or
// not at all, and a batch counts as resolved as soon as any one of its
// IntentSettled/IntentFailed (or a PayoutRejected) is read. A session
// starts by fencing its predecessor (same TransactionalID), then rebuilds
// its state from both topics, read_committed, up to their last stable
// offsets, and only then acts; anything it resolves was not resolved
// before. Deterministic ids are the second line: were a fenced predecessor
// to have committed anyway, its records carry the same ce_ids, which
// consumers drop.
//
// One tracker is active per topic set: it reads every partition and keeps
// the open payouts in memory (resolved batches shrink to their id).
type Tracker struct {
	cfg      TrackerConfig
	accounts Accounts
	kafka    []kgo.Opt
	log      *slog.Logger
	Stats    TrackerStats
}

// NewTracker returns a Tracker; accounts are the Calypso clients it polls
// with, kafka the client options shared by every component.
func NewTracker(cfg TrackerConfig, accounts Accounts, kafka ...kgo.Opt) (*Tracker, error) {
	cfg.setDefaults()
	if len(accounts) == 0 {
		return nil, errors.New("tracker: no Calypso accounts configured")
	}
	return &Tracker{cfg: cfg, accounts: accounts, kafka: kafka, log: cfg.Logger.With("component", "tracker")}, nil
}

// Run tracks until ctx is done. A session that fails (fenced, broker gone)
// is replaced by a new one, which rebuilds the state from Kafka.
func (t *Tracker) Run(ctx context.Context) error {
	return runSessions(ctx, t.log, t.cfg.Health, "tracker", t.session)
}

// trackedBatch is what the tracker knows of a batch.
type trackedBatch struct {
	plan     *events.BatchPlanned // nil once resolved, or until read
	payoutID string
	account  string
	resolved bool
}

// trackedPayout is an open payout.
type trackedPayout struct {
	id      string
	batchID string
	account string
	state   calypso.State
	heard   time.Time // last event about it, or last poll
	nextTry time.Time // after a failed attempt
	busy    bool      // a worker has it
}

// job is one payout handed to a worker: poll it, or resolve it.
type job struct {
	payoutID string
	account  string
	state    calypso.State
	plan     *events.BatchPlanned // shared, read-only
}

type jobResult struct {
	payoutID string
	batchID  string
	state    calypso.State // the best state known after the job
	polled   bool
	resolved bool
	err      error
}

// trackerSession is one run of the tracker: a Kafka client that reads both
// topics and produces transactionally, and the state rebuilt from them.
type trackerSession struct {
	*Tracker
	cl      *kgo.Client
	txnMu   sync.Mutex // one transaction at a time on cl
	batches map[string]*trackedBatch
	payouts map[string]*trackedPayout
}

func (t *Tracker) session(ctx context.Context) error {
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, t.kafka...),
		kgo.TransactionalID(t.cfg.TransactionalID),
		kgo.ProducerLinger(0),
		kgo.ConsumeTopics(t.cfg.Topics.Batches, t.cfg.Topics.Outcomes),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Control records mark where a transactional partition ends; only by
		// seeing them can the rebuild tell it reached the stable offset.
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	s := &trackerSession{Tracker: t, cl: cl, batches: map[string]*trackedBatch{}, payouts: map[string]*trackedPayout{}}

	// Fence the predecessor first: its open transaction is aborted now, so
	// the stable offsets below cover everything it will ever have written.
	if _, _, err := cl.ProducerID(ctx); err != nil {
		return fmt.Errorf("%w: initialising the producer: %v", errSessionFailed, err)
	}
	if err := s.rebuild(ctx); err != nil {
		return err
	}
	return s.loop(ctx)
}

// rebuild reads both topics up to their last stable offsets.
func (s *trackerSession) rebuild(ctx context.Context) error {
	start := s.cfg.Now()
	ends, err := stableOffsets(ctx, kadm.NewClient(s.cl), s.cfg.Topics.Batches, s.cfg.Topics.Outcomes)
	if err != nil {
		return err
	}
	type tp struct {
		topic string
		p     int32
	}
	left := map[tp]int64{}
	for topic, ps := range ends {
		for p, end := range ps {
			if end > 0 {
				left[tp{topic, p}] = end
			}
		}
	}
	var n int64
	for len(left) > 0 {
		fetches := s.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err := fatalFetchErr(fetches); err != nil {
			return err
		}
		fetches.EachRecord(func(r *kgo.Record) {
			k := tp{r.Topic, r.Partition}
			if end, ok := left[k]; ok && r.Offset+1 >= end {
				delete(left, k)
			}
			if !r.Attrs.IsControl() {
				n++
				s.apply(r, r.Timestamp)
			}
		})
	}
	s.Stats.Loaded.Add(n)
	s.Stats.Open.Store(int64(len(s.payouts)))
	s.log.Info("state rebuilt from Kafka", "records", n, "open payouts", len(s.payouts), "took", s.cfg.Now().Sub(start))
	return nil
}

// loop follows both topics and hands due payouts to the workers.
func (s *trackerSession) loop(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	fetched := make(chan kgo.Fetches)
	go func() {
		for {
			f := s.cl.PollFetches(ctx)
			if ctx.Err() != nil || f.IsClientClosed() {
				return
			}
			select {
			case fetched <- f:
			case <-ctx.Done():
				return
			}
		}
	}()

	jobs := make(chan job)
	results := make(chan jobResult, s.cfg.Workers)
	var wg sync.WaitGroup
	for range s.cfg.Workers {
		wg.Go(func() {
			for j := range jobs {
				select {
				case results <- s.work(ctx, j):
				case <-ctx.Done(): // the session is over; so is its state
				}
			}
		})
	}
	defer func() {
		cancel() // interrupts Calypso calls; a transaction under way still ends
		close(jobs)
		wg.Wait()
	}()

	tick := time.NewTicker(min(max(s.cfg.PollAfter/4, 10*time.Millisecond), time.Second))
	defer tick.Stop()
	s.dispatchDue(jobs, nil)
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-fetched:
			if err := fatalFetchErr(f); err != nil {
				return err
			}
			s.cfg.Health.Ready("tracker")
			touched := map[string]bool{}
			now := s.cfg.Now()
			f.EachRecord(func(r *kgo.Record) {
				if !r.Attrs.IsControl() {
					if id := s.apply(r, now); id != "" {
						touched[id] = true
					}
				}
			})
			s.dispatchDue(jobs, touched)
		case res := <-results:
			if errors.Is(res.err, errSessionFailed) {
				return res.err
			}
			s.settle(res)
			s.dispatchDue(jobs, map[string]bool{res.payoutID: true})
		case <-tick.C:
			s.dispatchDue(jobs, nil)
		}
		s.Stats.Open.Store(int64(len(s.payouts)))
	}
}

// apply folds one record into the state and returns the payout it touched.
func (s *trackerSession) apply(r *kgo.Record, at time.Time) string {
	_, e, err := events.Decode(r)
	if err != nil {
		s.log.Debug("record skipped", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "error", err)
		return ""
	}
	switch e := e.(type) {
	case events.BatchPlanned:
		b := s.batch(e.BatchID)
		if !b.resolved {
			b.plan = &e
			if b.account == "" {
				b.account = e.Account
			}
		}
		return b.payoutID
	case events.PayoutSubmitted:
		b := s.batch(e.BatchID)
		b.payoutID, b.account = e.PayoutID, e.Account
		if b.resolved {
			return ""
		}
		p := s.payout(e.PayoutID)
		p.batchID, p.account = e.BatchID, e.Account
		s.advance(p, calypso.State(e.State), at)
		return p.id
	case events.PayoutRejected:
		s.resolved(e.BatchID)
	case events.IntentSettled:
		s.resolved(e.BatchID)
	case events.IntentFailed:
		s.resolved(e.BatchID)
	default:
		st, ok := events.StatusOf(e)
		if !ok || st.PayoutID == "" {
			return ""
		}
		if b := s.batches[st.BatchID]; b != nil && b.resolved {
			return ""
		}
		p := s.payout(st.PayoutID)
		if p.batchID == "" && st.BatchID != "" {
			p.batchID = st.BatchID
			b := s.batch(st.BatchID)
			b.payoutID = p.id
			if p.account == "" {
				p.account = b.account
			}
		}
		s.advance(p, calypso.State(st.State), at)
		return p.id
	}
	return ""
}

func (s *trackerSession) batch(id string) *trackedBatch {
	b := s.batches[id]
	if b == nil {
		b = &trackedBatch{}
		s.batches[id] = b
	}
	return b
}

func (s *trackerSession) payout(id string) *trackedPayout {
	p := s.payouts[id]
	if p == nil {
		p = &trackedPayout{id: id}
		s.payouts[id] = p
	}
	return p
}

// advance moves p to state if that is further along; a late IN_PROGRESS
// after COMPLETED changes nothing. Any news about p resets its silence.
func (s *trackerSession) advance(p *trackedPayout, state calypso.State, at time.Time) {
	if state.Rank() > p.state.Rank() {
		p.state = state
	}
	if at.After(p.heard) {
		p.heard = at
	}
}

// resolved marks a batch done and forgets its payout.
func (s *trackerSession) resolved(batchID string) {
	b := s.batch(batchID)
	b.resolved, b.plan = true, nil
	if b.payoutID != "" {
		delete(s.payouts, b.payoutID)
	}
}

// dispatchDue hands due payouts (only, when set, those of ids) to idle
// workers, without waiting for one.
func (s *trackerSession) dispatchDue(jobs chan<- job, ids map[string]bool) {
	now := s.cfg.Now()
	check := func(p *trackedPayout) bool {
		j, ok := s.due(p, now)
		if !ok {
			return true
		}
		select {
		case jobs <- j:
			p.busy = true
			return true
		default:
			return false // every worker is busy
		}
	}
	if ids != nil {
		for id := range ids {
			if p := s.payouts[id]; p != nil && !check(p) {
				return
			}
		}
		return
	}
	for _, p := range s.payouts {
		if !check(p) {
			return
		}
	}
}

// due says what to do with p now, if anything: resolve a terminal payout
// whose batch is known, or poll one silent for PollAfter.
func (s *trackerSession) due(p *trackedPayout, now time.Time) (job, bool) {
	if p.busy || now.Before(p.nextTry) {
		return job{}, false
	}
	b := s.batches[p.batchID]
	j := job{payoutID: p.id, account: p.account, state: p.state}
	if b != nil {
		j.plan = b.plan
		if j.account == "" {
			j.account = b.account
		}
	}
	if j.account == "" {
		return job{}, false // neither submitted nor planned seen yet
	}
	if p.state.Terminal() {
		return j, j.plan != nil
	}
	return j, now.Sub(p.heard) >= s.cfg.PollAfter
}

// settle folds a worker's result into the state.
func (s *trackerSession) settle(res jobResult) {
	now := s.cfg.Now()
	if res.resolved {
		s.resolved(res.batchID)
	}
	p := s.payouts[res.payoutID]
	if p == nil {
		return
	}
	p.busy = false
	s.advance(p, res.state, time.Time{})
	if res.polled {
		p.heard = now
	}
	if res.err != nil {
		s.Stats.Errors.Add(1)
		p.nextTry = now.Add(min(s.cfg.PollAfter, 10*time.Second))
		s.log.Warn("payout handling failed; retrying later", "payout", p.id, "batch", p.batchID, "error", res.err, "retry", p.nextTry)
	}
}

// work polls or resolves one payout, writing what it learns in one
// transaction.
func (s *trackerSession) work(ctx context.Context, j job) jobResult {
	res := jobResult{payoutID: j.payoutID, state: j.state}
	if j.plan != nil {
		res.batchID = j.plan.BatchID
	}
	client, err := s.accounts.client(j.account)
	if err != nil {
		res.err = err
		return res
	}
	callCtx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	log := s.log.With("payout", j.payoutID, "batch", res.batchID)
	now := s.cfg.Now()

	var recs []*kgo.Record
	var mp *calypso.MassPayout
	if !j.state.Terminal() {
		s.Stats.Polls.Add(1)
		res.polled = true
		if mp, err = client.MassPayout(callCtx, j.payoutID); err != nil {
			res.err = fmt.Errorf("polling: %w", err)
			return res
		}
		if mp.State.Known() && mp.State.Rank() > j.state.Rank() {
			rec, err := events.NewRecord(s.cfg.Topics.Outcomes, sourceTracker, polledStatus(mp, j, now))
			if err != nil {
				res.err = err
				return res
			}
			recs = append(recs, rec)
			res.state = mp.State
			log.Info("poll found a new state", "state", string(mp.State))
		}
	}
	var resolving bool
	var settled, failed int64
	if res.state.Terminal() && j.plan != nil {
		out, err := s.resolution(callCtx, client, j, res.state, mp, now)
		if err != nil {
			// Publish the polled status anyway; the resolution is retried.
			res.err = fmt.Errorf("resolving: %w", err)
		} else {
			recs, resolving = append(recs, out...), true
			for _, r := range out {
				switch headerValue(r, events.HeaderType) {
				case string(events.TypeIntentSettled):
					settled++
				case string(events.TypeIntentFailed):
					failed++
				}
			}
		}
	}
	if len(recs) == 0 {
		return res
	}
	if err := s.write(ctx, recs); err != nil {
		res.state, res.err = j.state, err
		return res
	}
	if mp != nil && res.state != j.state {
		s.Stats.Polled.Add(1)
	}
	if resolving {
		res.resolved = true
		s.Stats.Resolved.Add(1)
		s.Stats.Settled.Add(settled)
		s.Stats.Failed.Add(failed)
		log.Info("payout resolved", "state", string(res.state), "intents", len(j.plan.Items))
	}
	return res
}

const sourceTracker = "payoutd/tracker"

// polledStatus is the event a webhook for mp's state would have produced:
// PayoutConfirmed for CONFIRMED, PayoutStatusChanged otherwise; same ids.
func polledStatus(mp *calypso.MassPayout, j job, now time.Time) events.Event {
	st := events.PayoutStatus{
		PayoutID: j.payoutID, BatchID: mp.IdempotencyKey, State: string(mp.State), Terminal: mp.State.Terminal(),
		Source: events.FromPoll, OccurredAt: now,
	}
	if st.BatchID == "" && j.plan != nil {
		st.BatchID = j.plan.BatchID
	}
	if mp.State == calypso.StateConfirmed {
		return events.PayoutConfirmed{PayoutStatus: st}
	}
	return events.PayoutStatusChanged{PayoutStatus: st, Currency: mp.Currency}
}

// withdrawalFailure is why one recipient of a PARTIAL payout was not paid.
type withdrawalFailure struct{ code, reason string }

// resolution builds the records that resolve every intent of j's batch.
func (s *trackerSession) resolution(ctx context.Context, client *calypso.Client, j job, state calypso.State, mp *calypso.MassPayout, now time.Time) ([]*kgo.Record, error) {
	var failures map[string]withdrawalFailure
	if state == calypso.StatePartial {
		if mp == nil {
			var err error
			if mp, err = client.MassPayout(ctx, j.payoutID); err != nil {
				return nil, err
			}
		}
		var err error
		if failures, err = partialFailures(ctx, client, mp); err != nil {
			return nil, err
		}
	}
	plan := j.plan
	var out []*kgo.Record
	add := func(topic string, e events.Event) error {
		r, err := events.NewRecord(topic, sourceTracker, e)
		out = append(out, r)
		return err
	}
	for _, it := range plan.Items {
		o := events.IntentOutcome{
			IntentID: it.IntentID, BatchID: plan.BatchID, PayoutID: j.payoutID, Account: plan.Account,
			Currency: plan.Currency, Amount: it.Amount, Address: it.Address, PayoutState: string(state), ResolvedAt: now,
		}
		st := events.IntentState{IntentID: it.IntentID, BatchID: plan.BatchID, PayoutID: j.payoutID, UpdatedAt: now}
		var outcome events.Event
		f, partFailed := failures[it.Address]
		switch {
		case state == calypso.StateCompleted, state == calypso.StatePartial && !partFailed:
			st.State = events.StatusSettled
			outcome = events.IntentSettled{IntentOutcome: o}
		default:
			if !partFailed {
				f = withdrawalFailure{code: string(state), reason: fmt.Sprintf("mass payout %s ended %s at Calypso", j.payoutID, state)}
			}
			st.State, st.Code, st.Reason = events.StatusFailed, f.code, f.reason
			outcome = events.IntentFailed{IntentOutcome: o, Code: f.code, Reason: f.reason}
		}
		if err := add(s.cfg.Topics.Intents, st); err != nil {
			return nil, err
		}
		if err := add(s.cfg.Topics.Outcomes, outcome); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// partialFailures maps the recipients of a PARTIAL payout that were not paid
// to why, from the payout's withdrawal errors. Errors name withdrawals, not
// addresses, so each failing withdrawal is looked up for its address (a
// batch never pays an address twice). A withdrawal Calypso reports
// COMPLETED despite an error entry was paid.
func partialFailures(ctx context.Context, client *calypso.Client, mp *calypso.MassPayout) (map[string]withdrawalFailure, error) {
	out := map[string]withdrawalFailure{}
	for _, we := range mp.Errors.WithdrawalErrors {
		var bad *calypso.WithdrawalError
		for i, e := range we.Errors {
			if e.Status != "SUCCESS" {
				bad = &we.Errors[i]
				break
			}
		}
		if bad == nil {
			continue
		}
		w, err := client.Withdrawal(ctx, string(we.WithdrawalID))
		if err != nil {
			return nil, err
		}
		if w.State == string(calypso.StateCompleted) {
			continue
		}
		reason := bad.ErrorMessage
		if reason == "" {
			reason = "withdrawal failed: " + bad.Status
		}
		out[w.DepositAddress] = withdrawalFailure{code: bad.Status, reason: reason}
	}
	if len(out) == 0 {
		// Settling every intent of a PARTIAL payout would pay nobody twice
		// but would tell a ledger money arrived that did not: wait until
		// Calypso lists the failed withdrawals.
		return nil, fmt.Errorf("PARTIAL payout %s lists no failed withdrawal yet", mp.ID)
	}
	return out, nil
}

// write produces recs in one transaction. A record that fails aborts it
// (retried later); a transaction that cannot end fails the session.
func (s *trackerSession) write(ctx context.Context, recs []*kgo.Record) error {
	s.txnMu.Lock()
	defer s.txnMu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.cl.BeginTransaction(); err != nil {
		return fmt.Errorf("%w: begin: %v", errSessionFailed, err)
	}
	perr := s.cl.ProduceSync(ctx, recs...).FirstErr()
	if perr != nil {
		if err := s.cl.AbortBufferedRecords(ctx); err != nil {
			return fmt.Errorf("%w: aborting: %v", errSessionFailed, err)
		}
	}
	if err := s.cl.EndTransaction(ctx, kgo.TransactionEndTry(perr == nil)); err != nil {
		return fmt.Errorf("%w: end: %v", errSessionFailed, err)
	}
	if perr != nil {
		return fmt.Errorf("producing: %w", perr)
	}
	return nil
}
