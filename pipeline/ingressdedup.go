package pipeline

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// seenBodies remembers the SHA-256 of webhook bodies archived within a
// window. Calypso signs only the body, so a captured request replays as the
// same body; so does Calypso's own retry of a webhook whose 200 it missed.
// Either is answered 200 without a second raw record.
//
// A body is known either complete (this instance had Kafka acknowledge its
// typed and raw records) or archived only (its raw record was read from
// the topic: its typed records may have failed, as the two are written
// side by side, so a repeat of it rewrites them, never the raw record).
type seenBodies struct {
	window time.Duration
	max    int

	mu    sync.Mutex
	at    map[[sha256.Size]byte]seenBody
	order []seenEntry // in arrival order; entries superseded in at are skipped
	head  int
}

type seenBody struct {
	at       time.Time
	complete bool
}

type seenEntry struct {
	sum [sha256.Size]byte
	at  time.Time
}

// seenState is what the window knows of a body.
type seenState int

const (
	seenNot      seenState = iota // not archived within the window
	seenArchived                  // its raw record is in Kafka; its typed records may not be
	seenComplete                  // raw and typed acknowledged
)

func newSeenBodies(window time.Duration, maxEntries int) *seenBodies {
	return &seenBodies{window: window, max: maxEntries, at: make(map[[sha256.Size]byte]seenBody)}
}

func (s *seenBodies) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.at)
}

// lookup says what is known of sum within the window before now.
func (s *seenBodies) lookup(sum [sha256.Size]byte, now time.Time) seenState {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.at[sum]
	switch {
	case !ok || now.Sub(b.at) >= s.window:
		return seenNot
	case b.complete:
		return seenComplete
	}
	return seenArchived
}

// add records sum as archived at (complete: with its typed records); the
// oldest entries go when the window has passed them or the bound is
// reached.
func (s *seenBodies) add(sum [sha256.Size]byte, at time.Time, complete bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.at[sum]; ok {
		// Keep the first archiving time: the window runs from it.
		if complete && !old.complete {
			old.complete = true
			s.at[sum] = old
		}
		return
	}
	s.at[sum] = seenBody{at: at, complete: complete}
	s.order = append(s.order, seenEntry{sum, at})
	horizon := at.Add(-s.window)
	for s.head < len(s.order) {
		e := s.order[s.head]
		if cur, ok := s.at[e.sum]; ok && cur.at.Equal(e.at) {
			if len(s.at) <= s.max && !e.at.Before(horizon) {
				break
			}
			delete(s.at, e.sum)
		}
		s.head++
	}
	if s.head > len(s.order)/2 && s.head > 1024 {
		s.order = append(s.order[:0:0], s.order[s.head:]...)
		s.head = 0
	}
}

// PartIngressDedup is the Health part of the ingress's dedup window: not
// ready until the window has been read back from the raw topic.
const PartIngressDedup = "ingress/dedup"

// followArchive fills the dedup window from the raw topic: first the
// records of the last DedupWindow, up to the end the topic had at start
// (until then the ingress answers 503 and PartIngressDedup is not ready, so
// the window survives restarts without a gap), then whatever any ingress
// instance archives (so a repeat sent to another instance is recognised
// too, once its archive record has been read). Raw records are written
// beside their typed events, so a body learnt here counts as archived, not
// complete: a repeat of it rewrites its typed records (same ce_ids), never
// its raw one. It runs until ctx ends; a failure is logged and the reading
// starts over.
func (in *Ingress) followArchive(ctx context.Context) {
	in.cfg.Health.NotReady(PartIngressDedup, "reading the dedup window back from the raw topic")
	for {
		err := in.readArchive(ctx)
		if ctx.Err() != nil {
			return
		}
		in.log.Warn("dedup window: reading the raw topic failed; starting over", "topic", in.cfg.Topics.WebhooksRaw, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (in *Ingress) readArchive(ctx context.Context) error {
	topic := in.cfg.Topics.WebhooksRaw
	// read_committed: the transactional ingress of earlier versions left
	// aborted records, whose webhooks were answered 503 and must not count.
	// Control records are kept so the reader sees it reached a partition's
	// stable end even when the last record is a commit marker.
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, in.kafka...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords(),
		// Fewer, fuller fetches under load: a repeat sent to another
		// instance is recognised within half a second.
		kgo.FetchMinBytes(64<<10), kgo.FetchMaxWait(500*time.Millisecond))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	starts, err := adm.ListOffsetsAfterMilli(ctx, in.cfg.Now().Add(-in.cfg.DedupWindow).UnixMilli(), topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("listing offsets of %s: %w", topic, err)
	}
	ends, err := stableOffsets(ctx, adm, topic)
	if err != nil {
		return err
	}
	from := map[int32]kgo.Offset{}
	pending := map[int32]int64{} // partitions not yet read to their end at start
	starts.Each(func(o kadm.ListedOffset) {
		from[o.Partition] = kgo.NewOffset().At(o.Offset)
		if end := ends[topic][o.Partition]; o.Offset < end {
			pending[o.Partition] = end
		}
	})
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: from})
	loaded := func() {
		if in.dedupLoaded.CompareAndSwap(false, true) {
			in.log.Info("dedup window read back from the raw topic", "webhooks", in.seen.len(), "window", in.cfg.DedupWindow)
		}
		in.cfg.Health.Ready(PartIngressDedup)
	}
	if len(pending) == 0 {
		loaded()
	}
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err := fatalFetchErr(fetches); err != nil {
			return err
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				in.seen.add(sha256.Sum256(r.Value), r.Timestamp, false)
			}
			if end, ok := pending[r.Partition]; ok && r.Offset+1 >= end {
				delete(pending, r.Partition)
				if len(pending) == 0 {
					loaded()
				}
			}
		})
	}
}
