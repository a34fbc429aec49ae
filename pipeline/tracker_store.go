package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
)

// The tracker's state, in Kafka Streams' words: each partition of the
// outcomes topic has a processor, whose state store holds the open payouts
// of that partition, and whose changelog is the same-numbered partition of
// the compacted tracker-state topic. Every change to a store entry is
// written to the changelog in the transaction that commits the records
// which caused it; a resolved payout's entry is deleted (a tombstone). A
// processor is restored from its changelog when its partition is assigned,
// so a start reads only what is open, never the outcomes' history.

// storeVersion is the version of storedPayout's encoding; an entry of
// another version is refused at restore, not misread.
const storeVersion = 1

// Entry kinds.
const (
	entryPayout   = "payout"   // a payout: submitted, or only heard of so far
	entryRejected = "rejected" // a batch the submitter reported rejected: is there a payout anyway?
)

// storedPayout is one state store entry, keyed by payout id (by batch id for
// a rejected batch). It is the tracker's private changelog format.
type storedPayout struct {
	V    int    `json:"v"`
	Kind string `json:"kind"`
	// PayoutID is the Calypso payout; empty for a rejected batch.
	PayoutID string `json:"payoutId,omitempty"`
	BatchID  string `json:"batchId,omitempty"`
	Account  string `json:"account,omitempty"`
	Currency string `json:"currency,omitempty"`
	// Items are the batch's items, from PayoutSubmitted.
	Items []events.BatchItem `json:"items,omitempty"`
	// ItemsFromCalypso: the PayoutSubmitted came without items (written
	// by a submitter of an earlier version, during a rolling upgrade); they
	// are read from the payout's withdrawal rows (comment = intent id).
	ItemsFromCalypso bool `json:"itemsFromCalypso,omitempty"`
	ItemCount        int  `json:"itemCount,omitempty"`
	// Submitted: PayoutSubmitted was read. Until then the payout is only
	// heard of (webhooks can be faster than the submitter's commit).
	Submitted bool `json:"submitted,omitempty"`
	// OfRejected: the payout of a batch the submitter reported rejected;
	// its intents were failed then, so it is followed to its end, not resolved.
	OfRejected bool          `json:"ofRejected,omitempty"`
	State      calypso.State `json:"state,omitempty"`
	// TerminalPublished: a terminal status event for the payout is on the
	// outcomes topic (from a webhook or from us).
	TerminalPublished bool      `json:"terminalPublished,omitempty"`
	FirstHeard        time.Time `json:"firstHeard"`
	Heard             time.Time `json:"heard"`
	// PollEvery is the current silence allowed before a poll; it doubles
	// while polls find nothing new (a payout silent on purpose).
	PollEvery time.Duration `json:"pollEvery,omitempty"`
	// Failures counts look-ups failed in a row; NextTry is when to try again.
	Failures int       `json:"failures,omitempty"`
	NextTry  time.Time `json:"nextTry,omitzero"`
	// Alerted lists the alert kinds raised for the entry, each once.
	Alerted []events.AlertKind `json:"alerted,omitempty"`
	// Parked: resolution stopped for a person to look (an alert says why).
	Parked bool `json:"parked,omitempty"`
	// Withdrawals are the per-withdrawal results of a PARTIAL payout, kept
	// across attempts, and NextPage the next page to read (-1: all read).
	Withdrawals map[string]withdrawalResult `json:"withdrawals,omitempty"`
	NextPage    int                         `json:"nextPage,omitempty"`
}

// withdrawalResult is what the list call said of one withdrawal.
type withdrawalResult struct {
	State   string `json:"state"`
	Comment string `json:"comment,omitempty"`
	Address string `json:"address,omitempty"`
	Amount  string `json:"amount,omitempty"`
	Code    string `json:"code,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

func (e *storedPayout) alerted(k events.AlertKind) bool {
	for _, a := range e.Alerted {
		if a == k {
			return true
		}
	}
	return false
}

// processor is the tracker's work on one partition of the outcomes topic.
type processor struct {
	partition int32
	gen       uint64 // distinguishes this incarnation from a dropped one
	open      map[string]*trackedPayout
	// recent are payouts resolved lately, unmatched are foreign payouts
	// given up on: both bounded and in memory only, so a late duplicate is
	// ignored without growing the state for ever.
	recent    *boundedSet[struct{}]
	unmatched *boundedSet[unmatchedPayout]
}

// trackedPayout is an open store entry and what the processor needs beside it.
type trackedPayout struct {
	key string
	storedPayout
	busy     bool // a worker has it
	dirty    bool // changed since the last transaction
	announce bool // PayoutSubmitted just read: intents become SUBMITTED
	// What the last look-up found, applied by derive.
	polledState   *calypso.MassPayout
	rejectedCheck *lookupResult
	foreign       bool  // heard of too long without a PayoutSubmitted
	failing       error // look-ups failed AlertAfter times: raise LOOKUP_FAILING
}

// unmatchedPayout is what is kept of a foreign payout.
type unmatchedPayout struct {
	state             calypso.State
	terminalPublished bool
}

// boundedSet remembers the last n keys added.
type boundedSet[V any] struct {
	n     int
	m     map[string]V
	order []string
}

func newBoundedSet[V any](n int) *boundedSet[V] { return &boundedSet[V]{n: n, m: map[string]V{}} }

func (b *boundedSet[V]) add(k string, v V) {
	if _, ok := b.m[k]; !ok {
		b.order = append(b.order, k)
	}
	b.m[k] = v
	for len(b.m) > b.n && len(b.order) > 0 {
		delete(b.m, b.order[0])
		b.order = b.order[1:]
	}
	if len(b.order) > 2*b.n { // drop keys removed meanwhile
		kept := b.order[:0]
		for _, k := range b.order {
			if _, ok := b.m[k]; ok {
				kept = append(kept, k)
			}
		}
		b.order = kept
	}
}

func (b *boundedSet[V]) get(k string) (V, bool) { v, ok := b.m[k]; return v, ok }
func (b *boundedSet[V]) remove(k string)        { delete(b.m, k) }

// boundedSetSize bounds the recent and unmatched sets of a processor.
const boundedSetSize = 10_000

func newProcessor(p int32, gen uint64) *processor {
	return &processor{partition: p, gen: gen, open: map[string]*trackedPayout{},
		recent: newBoundedSet[struct{}](boundedSetSize), unmatched: newBoundedSet[unmatchedPayout](boundedSetSize)}
}

// changelogRecord is the changelog record of entry key of p: its encoding,
// or a tombstone when e is nil. It goes to p's own partition.
func (s *trackerSession) changelogRecord(p *processor, key string, e *storedPayout) (*kgo.Record, error) {
	r := &kgo.Record{Topic: s.cfg.Topics.TrackerState, Partition: p.partition, Key: []byte(key)}
	if e != nil {
		e.V = storeVersion
		b, err := json.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("encoding the state of %s: %w", key, err)
		}
		r.Value = b
	}
	return r, nil
}

// restoredValue is a changelog value read by a restore, and where.
type restoredValue struct {
	value  []byte
	offset int64
}

// restoreStats says what one restore read.
type restoreStats struct {
	records int64
	entries int
	took    time.Duration
}

// restore rebuilds the state stores of partitions from their changelog:
// from each partition's start offset up to its high watermark sampled now,
// after the partitions were assigned to us (so everything their previous
// owner committed is below it). The read is read_committed: an open
// transaction of a previous owner is waited for (its commit or abort
// marker lands at or past the sampled mark), never skipped, and the restore
// has no timeout of its own: a store is never used half restored.
func (s *trackerSession) restore(ctx context.Context, procs map[int32]*processor) (restoreStats, error) {
	start := time.Now()
	var st restoreStats
	if len(procs) == 0 {
		return st, nil
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, s.kafka...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())...)
	if err != nil {
		return st, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topic := s.cfg.Topics.TrackerState
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return st, fmt.Errorf("%w: listing the start offsets of %s: %v", errSessionFailed, topic, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return st, fmt.Errorf("%w: listing the end offsets of %s: %v", errSessionFailed, topic, err)
	}
	left := map[int32]int64{} // partition → high watermark to reach
	from := map[int32]kgo.Offset{}
	for p := range procs {
		so, ok1 := starts.Lookup(topic, p)
		eo, ok2 := ends.Lookup(topic, p)
		if !ok1 || !ok2 {
			return st, fmt.Errorf("%w: %s has no partition %d: it must have as many partitions as the outcomes topic", errSessionFailed, topic, p)
		}
		if eo.Offset <= so.Offset { // empty, or trimmed to nothing
			continue
		}
		left[p] = eo.Offset
		from[p] = kgo.NewOffset().At(so.Offset)
	}
	if len(left) == 0 {
		st.took = time.Since(start)
		return st, nil
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: from})
	// The latest value per key, kept raw: before compaction most entries
	// read are deleted again by their tombstones, and only the survivors
	// are worth decoding.
	latest := map[int32]map[string]restoredValue{}
	for p := range procs {
		latest[p] = map[string]restoredValue{}
	}
	for len(left) > 0 {
		f := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if err := fatalFetchErr(f); err != nil {
			return st, fmt.Errorf("%w: restoring: %v", errSessionFailed, err)
		}
		f.EachRecord(func(r *kgo.Record) {
			if end, ok := left[r.Partition]; ok && r.Offset+1 >= end {
				delete(left, r.Partition)
			}
			if r.Attrs.IsControl() {
				return
			}
			st.records++
			m := latest[r.Partition]
			if m == nil {
				return
			}
			if r.Value == nil {
				delete(m, string(r.Key))
				return
			}
			m[string(r.Key)] = restoredValue{r.Value, r.Offset}
		})
	}
	for p, m := range latest {
		proc := procs[p]
		for key, v := range m {
			var e storedPayout
			if err := json.Unmarshal(v.value, &e); err != nil || e.V != storeVersion {
				// Our own format: a bad entry is a bug or a newer
				// version. Keep the rest going and say so loudly.
				s.log.Error("state store entry unreadable; skipped", "partition", p, "offset", v.offset, "key", key, "error", err, "version", e.V)
				continue
			}
			proc.open[key] = &trackedPayout{key: key, storedPayout: e}
		}
	}
	for _, p := range procs {
		st.entries += len(p.open)
	}
	st.took = time.Since(start)
	return st, nil
}
