// Package topicscan reads a window of a topic once, read_committed, up to
// where the topic ends when the read starts, handing each record to a
// function and keeping none: the audits and reports that read history
// (replay, status) stream through it instead of loading topics.
package topicscan

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Scan calls fn for every record of topic, read_committed, whose timestamp
// is in [from, to) (a zero from or to leaves that side open), from the first offset at or after from up to each
// partition's last stable offset as of the call. It holds no record after
// fn returns.
func Scan(ctx context.Context, base []kgo.Opt, topic string, from, to time.Time, fn func(*kgo.Record) error) error {
	// Control records are kept because a transactional partition usually
	// ends in a commit marker: only by seeing it can the reader tell it
	// reached the end.
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, base...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := StableEnds(ctx, adm, topic)
	if err != nil {
		return err
	}
	starts := map[int32]kgo.Offset{}
	if from.IsZero() {
		for p := range ends {
			starts[p] = kgo.NewOffset().AtStart()
		}
	} else {
		listed, err := adm.ListOffsetsAfterMilli(ctx, from.UnixMilli(), topic)
		if err != nil {
			return fmt.Errorf("finding offsets of %s at %s: %w", topic, from, err)
		}
		listed.Each(func(o kadm.ListedOffset) {
			if end, ok := ends[o.Partition]; ok && o.Err == nil && o.Offset >= 0 && o.Offset < end {
				starts[o.Partition] = kgo.NewOffset().At(o.Offset)
			} else {
				delete(ends, o.Partition)
			}
		})
	}
	if len(starts) == 0 {
		return nil
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: starts})
	for len(ends) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fetches.Err0(); err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("reading %s: %w", topic, err)
		}
		var ferr error
		fetches.EachRecord(func(r *kgo.Record) {
			end, open := ends[r.Partition]
			if ferr != nil || !open || r.Offset >= end {
				return
			}
			if r.Offset+1 >= end {
				delete(ends, r.Partition)
			}
			if r.Attrs.IsControl() || r.Timestamp.Before(from) || (!to.IsZero() && !r.Timestamp.Before(to)) {
				return
			}
			ferr = fn(r)
		})
		if ferr != nil {
			return ferr
		}
	}
	return nil
}

// StableEnds returns the last stable offset of every partition of topic
// that holds records: where a read_committed reader, keeping control records,
// has seen everything there is now. A partition emptied by retention is left
// out, since a reader waiting for a record there would wait forever.
func StableEnds(ctx context.Context, adm *kadm.Client, topic string) (map[int32]int64, error) {
	listed, err := adm.ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = listed.Error()
	}
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return nil, fmt.Errorf("topic %s does not exist (`payoutd topics` creates payoutd's topics): %w", topic, err)
	}
	if err != nil {
		return nil, fmt.Errorf("listing end offsets of %s: %w", topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("listing start offsets of %s: %w", topic, err)
	}
	ends := map[int32]int64{}
	listed.Each(func(o kadm.ListedOffset) {
		// A partition emptied by retention has start = end: nothing to read,
		// and waiting for a record there would wait forever.
		if s, ok := starts.Lookup(topic, o.Partition); ok && s.Offset >= o.Offset {
			return
		}
		if o.Offset > 0 {
			ends[o.Partition] = o.Offset
		}
	})
	return ends, nil
}
