package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
)

// restoreTimeout bounds reading a partition set of the batch-state topic. A
// restore that does not finish in time fails the session: the submitter
// never handles a batch without knowing its state.
const restoreTimeout = 30 * time.Second

// batchStates is the submitter's knowledge of its partitions' batches, read
// from the compacted batch-state topic (co-partitioned with the batches
// topic: a batch's state is in the partition of the same number).
type batchStates struct {
	mu sync.Mutex
	by map[int32]map[string]events.BatchState
}

func newBatchStates() *batchStates {
	return &batchStates{by: map[int32]map[string]events.BatchState{}}
}

func (b *batchStates) get(partition int32, batch string) (events.BatchState, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, ok := b.by[partition][batch]
	return st, ok
}

func (b *batchStates) put(partition int32, st events.BatchState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.by[partition]
	if m == nil {
		m = map[string]events.BatchState{}
		b.by[partition] = m
	}
	m[st.BatchID] = st
}

// restore reads partitions of topic from their start offsets to the high
// watermarks sampled now, read_committed, replacing what is known of them.
// An empty or retention-trimmed partition (start = end) is read at once; a
// read that does not reach the end within restoreTimeout is an error.
//
// It returns the batches the partitions hold as quarantined, for the
// operator's count.
func (b *batchStates) restore(ctx context.Context, base []kgo.Opt, topic string, partitions []int32) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, restoreTimeout)
	defer cancel()
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, base...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("listing start offsets of %s: %w", topic, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("listing end offsets of %s: %w", topic, err)
	}
	fresh := map[int32]map[string]events.BatchState{}
	from := map[int32]kgo.Offset{}
	end := map[int32]int64{}
	for _, p := range partitions {
		fresh[p] = map[string]events.BatchState{}
		s, ok1 := starts.Lookup(topic, p)
		e, ok2 := ends.Lookup(topic, p)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%s has no partition %d: is it co-partitioned with the batches topic?", topic, p)
		}
		if s.Offset < e.Offset {
			from[p] = kgo.NewOffset().At(s.Offset)
			end[p] = e.Offset
		}
	}
	if len(from) > 0 {
		cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: from})
	}
	for len(end) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("reading %s to its end: %w", topic, err)
		}
		if err := fatalFetchErr(fetches); err != nil {
			return nil, err
		}
		var decodeErr error
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Offset+1 >= end[r.Partition] {
				delete(end, r.Partition)
			}
			if r.Attrs.IsControl() {
				return
			}
			if r.Value == nil {
				delete(fresh[r.Partition], string(r.Key))
				return
			}
			_, e, err := events.Decode(r)
			if err != nil {
				decodeErr = errors.Join(decodeErr, fmt.Errorf("%s[%d]@%d: %w", topic, r.Partition, r.Offset, err))
				return
			}
			if st, ok := e.(events.BatchState); ok && fresh[r.Partition] != nil {
				fresh[r.Partition][st.BatchID] = st
			}
		})
		if decodeErr != nil {
			// Never guess a batch's state: an unreadable state stops the
			// session rather than let a final batch be created again.
			return nil, decodeErr
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var quarantined []string
	for p, m := range fresh {
		b.by[p] = m
		for id, st := range m {
			if st.State == events.BatchQuarantined {
				quarantined = append(quarantined, id)
			}
		}
	}
	return quarantined, nil
}

// forget drops what is known of a partition no longer owned.
func (b *batchStates) forget(partition int32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.by, partition)
}
