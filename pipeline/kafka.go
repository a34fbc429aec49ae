package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// runSessions runs session until ctx is done. A session ends with an error
// when its transactional producer or group membership cannot go on (fenced,
// broker gone too long); a fresh session then starts from the committed
// offsets, which is always safe because nothing uncommitted was visible.
//
// While a session is being (re)started, part is not ready on health; the
// session itself says when it is ready (after its state is restored). The
// restart backoff grows while sessions keep failing and starts again from
// its floor once a session has run healthily for a while, so one failure
// after a quiet week is retried at once.
func runSessions(ctx context.Context, log *slog.Logger, health *Health, part string, session func(context.Context) error) error {
	const (
		floor   = 500 * time.Millisecond
		ceiling = 10 * time.Second
		healthy = time.Minute
	)
	backoff := floor
	for {
		health.NotReady(part, "starting a session")
		started := time.Now()
		err := session(ctx)
		if ctx.Err() != nil || errors.Is(err, errCrashed) {
			return err
		}
		if time.Since(started) > healthy {
			backoff = floor
		}
		health.NotReady(part, fmt.Sprintf("session failed, restarting in %s: %v", backoff, err))
		log.Error("session ended; starting a new one", "error", err, "after", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, ceiling)
	}
}

// crashPoint names a place where tests stop a component dead, as a SIGKILL
// would: nothing after it runs, and an open transaction is left open.
type crashPoint string

const (
	crashWindowOpen  crashPoint = "window-open"  // batcher: records consumed, window not closed
	crashMidTxn      crashPoint = "mid-txn"      // batcher: records produced, transaction not ended
	crashAfterCommit crashPoint = "after-commit" // batcher: transaction committed
	crashAfterCreate crashPoint = "after-create" // submitter: Calypso accepted, nothing committed
)

// errCrashed ends a component's Run at a crash point.
var errCrashed = errors.New("crashed at a test crash point")

// crashHook is nil outside tests.
type crashHook func(crashPoint) bool

func (h crashHook) at(p crashPoint) bool { return h != nil && h(p) }

// fatalFetchErr returns the first fetch error a consumer cannot retry past.
// kgo retries broker and network errors itself; context ends are the
// caller's business.
func fatalFetchErr(f kgo.Fetches) error {
	if f.IsClientClosed() {
		return errSessionFailed
	}
	var fatal error
	f.EachError(func(topic string, p int32, err error) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return
		}
		if fatal == nil {
			fatal = fmt.Errorf("fetching %s[%d]: %w", topic, p, err)
		}
	})
	return fatal
}

// txnTimeout bounds how long a begun transaction may take to finish.
const txnTimeout = 30 * time.Second

// produceInTxn writes records and the consumed offsets in one transaction,
// as produceRecordsInTxn does, reporting a transaction aborted because Kafka
// refused records as not committed, without error.
func produceInTxn(ctx context.Context, sess *kgo.GroupTransactSession, records []*kgo.Record) (bool, error) {
	committed, err := produceRecordsInTxn(ctx, sess, records, nil)
	var perr *produceError
	if errors.As(err, &perr) {
		return false, nil
	}
	return committed, err
}

// produceRecordsInTxn writes records and the consumed offsets in one
// transaction. Records are flushed and checked before ending, because a transaction must
// not commit when any of its records failed: then it aborts and returns a
// *produceError naming each refused record and Kafka's reason, which is not
// fatal to the session (the records are consumed again). A transaction once
// begun is finished even when ctx is cancelled for shutdown: cancelling End
// would leave the producer in an unknown state and the work for the next
// owner.
//
// Records for which alone returns true are produced one at a time, each
// flushed alone (one round trip, no linger), so that Kafka's refusal of one
// (too large) cannot fail its neighbours in the same produce batch and is
// known to be its own; alone may be nil.
func produceRecordsInTxn(ctx context.Context, sess *kgo.GroupTransactSession, records []*kgo.Record, alone func(*kgo.Record) bool) (bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), txnTimeout)
	defer cancel()
	if err := sess.Begin(); err != nil {
		return false, fmt.Errorf("%w: begin: %v", errSessionFailed, err)
	}
	var (
		mu     sync.Mutex
		failed []refusedRecord
	)
	for _, r := range records {
		isolated := alone != nil && alone(r)
		if isolated {
			// Nothing before it shares its produce batch...
			if err := sess.Client().Flush(ctx); err != nil {
				return false, err
			}
		}
		sess.Produce(ctx, r, func(r *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				failed = append(failed, refusedRecord{r, err})
				mu.Unlock()
			}
		})
		if isolated {
			// ...and nothing after it: Flush sends it at once, without
			// waiting out the linger.
			if err := sess.Client().Flush(ctx); err != nil {
				return false, err
			}
		}
	}
	if err := sess.Client().Flush(ctx); err != nil {
		return false, err
	}
	mu.Lock()
	perr := &produceError{failed: failed}
	mu.Unlock()
	committed, err := sess.End(ctx, kgo.TransactionEndTry(len(perr.failed) == 0))
	if err != nil {
		return false, fmt.Errorf("%w: end: %v", errSessionFailed, err)
	}
	if len(perr.failed) > 0 {
		// Aborted; the records will be consumed again. Not fatal by itself.
		return false, perr
	}
	return committed, nil
}

// refusedRecord is a record Kafka did not take, and why.
type refusedRecord struct {
	record *kgo.Record
	err    error
}

// produceError is a transaction aborted because Kafka refused some of its
// records.
type produceError struct{ failed []refusedRecord }

func (e *produceError) Error() string {
	f := e.failed[0]
	return fmt.Sprintf("Kafka refused %d record(s) of the transaction; first: %d bytes to %s: %v",
		len(e.failed), recordSize(f.record), f.record.Topic, f.err)
}

// Unwrap exposes the first refusal, for errors.Is.
func (e *produceError) Unwrap() error { return e.failed[0].err }

// deterministic reports whether some record was refused for what it is
// (too large, invalid), so that trying it again unchanged fails again.
func (e *produceError) deterministic() bool {
	for _, f := range e.failed {
		if isRefusedForGood(f.err) {
			return true
		}
	}
	return false
}

func isRefusedForGood(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidRecord) || errors.Is(err, kerr.CorruptMessage)
}

// readIntents reads the given partitions of the intents topic into idx,
// from where idx left off (or the partition's log start, when retention or
// delete-records removed that) up to the high watermark sampled when it is
// called, adding every intent id (tombstones remove it). It uses the record
// key and timestamp only, so a rebuild never parses JSON.
//
// It never proceeds on a timeout: it first waits, per partition, for the
// last stable offset to reach that high watermark (transactions in flight,
// such as the window a batcher that just lost the partition committed a
// moment ago, must be in the index). If a partition's stable offset does
// not get there within wait (a crashed producer's transaction, open until
// the broker aborts it after its transaction timeout), it fails, naming
// the partition, and the caller's session fails with it.
func readIntents(ctx context.Context, base []kgo.Opt, topic string, idx *dedupIndex, partitions []int32, wait time.Duration) (int, error) {
	// read_committed: only states of committed windows count; an aborted
	// window's intents were never batched. Control records are kept because
	// a transactional partition usually ends in a commit marker, and only by
	// seeing it can the reader tell it reached the end.
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, base...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	bounds, err := settledBounds(ctx, adm, topic, partitions, wait)
	if err != nil {
		return 0, err
	}
	start := make(map[int32]kgo.Offset)
	for _, p := range partitions {
		b := bounds[p]
		pi := idx.part(p)
		if pi.next < b.logStart {
			pi.next = b.logStart // emptied or trimmed: nothing before is readable
		}
		if pi.next < b.end {
			start[p] = kgo.NewOffset().At(pi.next)
		}
	}
	if len(start) == 0 {
		return 0, nil
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: start})

	n := 0
	for len(start) > 0 {
		pollCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		fetches := cl.PollFetches(pollCtx)
		cancel()
		if err := ctx.Err(); err != nil {
			return n, err
		}
		if err := fatalFetchErr(fetches); err != nil {
			return n, err
		}
		fetches.EachRecord(func(r *kgo.Record) {
			pi := idx.part(r.Partition)
			pi.next = r.Offset + 1
			if r.Attrs.IsControl() {
				return
			}
			n++
			if r.Value == nil {
				idx.remove(r.Partition, string(r.Key))
			} else {
				idx.add(r.Partition, string(r.Key), r.Timestamp)
			}
		})
		for p := range start {
			if idx.part(p).next >= bounds[p].end {
				delete(start, p)
			}
		}
		if len(start) > 0 && len(fetches.Records()) == 0 {
			// Nothing came for a while: retention may have removed the
			// rest meanwhile, and there is nothing left to wait for.
			starts, err := adm.ListStartOffsets(ctx, topic)
			if err != nil {
				return n, fmt.Errorf("listing start offsets of %s: %w", topic, err)
			}
			for p := range start {
				if o, ok := starts.Lookup(topic, p); ok && o.Err == nil && o.Offset >= bounds[p].end {
					idx.part(p).next = o.Offset
					delete(start, p)
				}
			}
		}
	}
	return n, nil
}

// partitionBounds are where a partition's readable log starts and where a
// reader must get to.
type partitionBounds struct{ logStart, end int64 }

// ErrUnstableOffsets is wrapped when a partition's last stable offset stays
// below its high watermark for longer than a reader may wait.
var ErrUnstableOffsets = errors.New("last stable offset held back by an open transaction")

// settledBounds samples each partition's log start and high watermark, then
// waits until its last stable offset has reached that high watermark: then
// every transaction that wrote below it has ended, and reading up to it
// read_committed sees all that was committed. It fails after wait, and
// never returns bounds it did not wait for. Nil partitions means all of the
// topic's. Every rebuild of state from a transactional topic (the batcher's
// dedup index, the tracker's state store) needs exactly this.
func settledBounds(ctx context.Context, adm *kadm.Client, topic string, partitions []int32, wait time.Duration) (map[int32]partitionBounds, error) {
	high, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("listing end offsets of %s: %w", topic, err)
	}
	if partitions == nil {
		high.Each(func(o kadm.ListedOffset) { partitions = append(partitions, o.Partition) })
	}
	low, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("listing start offsets of %s: %w", topic, err)
	}
	out := make(map[int32]partitionBounds, len(partitions))
	for _, p := range partitions {
		h, ok := high.Lookup(topic, p)
		if !ok || h.Err != nil {
			return nil, fmt.Errorf("%s[%d]: no high watermark: %v", topic, p, h.Err)
		}
		l, ok := low.Lookup(topic, p)
		if !ok || l.Err != nil {
			return nil, fmt.Errorf("%s[%d]: no log start offset: %v", topic, p, l.Err)
		}
		out[p] = partitionBounds{logStart: l.Offset, end: h.Offset}
	}
	deadline := time.Now().Add(wait)
	for {
		stable, err := stableOffsets(ctx, adm, topic)
		if err != nil {
			return nil, err
		}
		var behind []string
		for _, p := range partitions {
			if lso := stable[topic][p]; lso < out[p].end {
				behind = append(behind, fmt.Sprintf("%s[%d] stable at %d, high watermark %d", topic, p, lso, out[p].end))
			}
		}
		if len(behind) == 0 {
			return out, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w for %s: %s (a producer that crashed mid-transaction holds it until the broker aborts it after its transaction timeout)",
				ErrUnstableOffsets, wait, strings.Join(behind, ", "))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stableOffsets returns each partition's last stable offset: the end of
// what a read_committed reader can see now.
func stableOffsets(ctx context.Context, adm *kadm.Client, topics ...string) (map[string]map[int32]int64, error) {
	listed, err := adm.ListCommittedOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("listing stable offsets: %w", err)
	}
	out := map[string]map[int32]int64{}
	var perr error
	listed.Each(func(o kadm.ListedOffset) {
		if o.Err != nil && perr == nil {
			perr = fmt.Errorf("%s[%d]: %w", o.Topic, o.Partition, o.Err)
		}
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]int64{}
		}
		out[o.Topic][o.Partition] = o.Offset
	})
	return out, perr
}

// recordSize is a record's size as a broker measures it against
// max.message.bytes, near enough and never less: the batcher plans chunks and
// the ingress refuses bodies by it.
func recordSize(r *kgo.Record) int {
	n := len(r.Key) + len(r.Value) + 128
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value) + 8
	}
	return n
}
