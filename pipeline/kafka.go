package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
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

// produceInTxn writes records and the consumed offsets in one transaction.
// Records are flushed and checked before ending, because a transaction must
// not commit when any of its records failed. A transaction once begun is
// finished even when ctx is cancelled for shutdown: cancelling End would
// leave the producer in an unknown state and the work for the next owner.
func produceInTxn(ctx context.Context, sess *kgo.GroupTransactSession, records []*kgo.Record) (bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), txnTimeout)
	defer cancel()
	if err := sess.Begin(); err != nil {
		return false, fmt.Errorf("%w: begin: %v", errSessionFailed, err)
	}
	var (
		mu       sync.Mutex
		firstErr error
	)
	for _, r := range records {
		sess.Produce(ctx, r, func(r *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("producing to %s: %w", r.Topic, err)
				}
				mu.Unlock()
			}
		})
	}
	if err := sess.Client().Flush(ctx); err != nil {
		return false, err
	}
	mu.Lock()
	produceErr := firstErr
	mu.Unlock()
	committed, err := sess.End(ctx, kgo.TransactionEndTry(produceErr == nil))
	if err != nil {
		return false, fmt.Errorf("%w: end: %v", errSessionFailed, err)
	}
	if produceErr != nil {
		// Aborted; the records will be consumed again. Not fatal by itself.
		return false, nil
	}
	return committed, nil
}

// readIntents reads the intents topic from idx.next up to each partition's
// last stable offset, adding every intent id to idx (tombstones remove it).
// It uses the record key and timestamp only, so a rebuild never parses JSON.
func readIntents(ctx context.Context, base []kgo.Opt, topic string, idx *dedupIndex) (int, error) {
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
	ends, err := stableEnds(ctx, kadm.NewClient(cl), topic)
	if err != nil {
		return 0, err
	}
	start := make(map[int32]kgo.Offset)
	for p, end := range ends {
		if idx.next[p] < end {
			start[p] = kgo.NewOffset().At(idx.next[p])
		}
	}
	if len(start) == 0 {
		return 0, nil
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: start})

	n := 0
	for len(start) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return n, err
		}
		if err := fatalFetchErr(fetches); err != nil {
			return n, err
		}
		fetches.EachRecord(func(r *kgo.Record) {
			idx.next[r.Partition] = r.Offset + 1
			if r.Attrs.IsControl() {
				return
			}
			n++
			if r.Value == nil {
				idx.remove(string(r.Key))
			} else {
				idx.add(string(r.Key), r.Timestamp)
			}
		})
		for p := range start {
			if idx.next[p] >= ends[p] {
				delete(start, p)
			}
		}
	}
	return n, nil
}

// stableEnds returns each partition's last stable offset, waiting (up to 15s)
// for transactions in flight to finish: a batcher that just lost a partition
// may have committed its last window a moment before its markers reached
// the intents topic, and the index must include that window.
func stableEnds(ctx context.Context, adm *kadm.Client, topic string) (map[int32]int64, error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		stable, err := stableOffsets(ctx, adm, topic)
		if err != nil {
			return nil, err
		}
		high, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return nil, fmt.Errorf("listing end offsets of %s: %w", topic, err)
		}
		settled := true
		for p, o := range stable[topic] {
			if h, ok := high.Lookup(topic, p); ok && h.Offset > o {
				settled = false
			}
		}
		if settled || time.Now().After(deadline) {
			return stable[topic], nil
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
