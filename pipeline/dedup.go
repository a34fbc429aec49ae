package pipeline

import (
	"crypto/sha256"
	"math"
	"time"
)

// intentKey is the first 128 bits of SHA-256 of an intent id: a fixed-size
// map key (about 40 bytes an entry instead of a string's 60+), and unlike a
// fast non-cryptographic hash no upstream can craft two ids that collide and
// get a real intent dropped as a duplicate.
type intentKey [16]byte

func keyOf(intentID string) intentKey {
	sum := sha256.Sum256([]byte(intentID))
	return intentKey(sum[:16])
}

// dedupIndex remembers which intent ids were batched, and when, for a
// horizon, per partition: an instance holds only the partitions it owns
// (an intent's requests and states share a partition number, since both
// topics are keyed by intent id with Kafka's default partitioner and have
// as many partitions), so memory per instance falls as instances are added.
// It is rebuilt from the compacted intents topic and is not safe for
// concurrent use: the batcher's loop owns it.
type dedupIndex struct {
	horizon time.Duration
	parts   map[int32]*partitionIndex
}

type partitionIndex struct {
	seen map[intentKey]uint32 // unix seconds of the intent's latest state
	// next is the offset to read next in the intents partition.
	next int64
}

func newDedupIndex(horizon time.Duration) *dedupIndex {
	return &dedupIndex{horizon: horizon, parts: make(map[int32]*partitionIndex)}
}

func (d *dedupIndex) part(p int32) *partitionIndex {
	pi := d.parts[p]
	if pi == nil {
		pi = &partitionIndex{seen: make(map[intentKey]uint32)}
		d.parts[p] = pi
	}
	return pi
}

func (d *dedupIndex) add(p int32, intentID string, at time.Time) { d.addKey(p, keyOf(intentID), at) }

func (d *dedupIndex) addKey(p int32, k intentKey, at time.Time) {
	s := unixSeconds(at)
	pi := d.part(p)
	if s > pi.seen[k] {
		pi.seen[k] = s
	}
}

func (d *dedupIndex) remove(p int32, intentID string) {
	if pi := d.parts[p]; pi != nil {
		delete(pi.seen, keyOf(intentID))
	}
}

// drop forgets partition p: it was revoked, and whoever owns it next
// rebuilds it from the intents topic.
func (d *dedupIndex) drop(p int32) { delete(d.parts, p) }

// has reports whether intentID was batched within the horizon before now.
func (d *dedupIndex) has(p int32, intentID string, now time.Time) bool {
	pi := d.parts[p]
	if pi == nil {
		return false
	}
	s, ok := pi.seen[keyOf(intentID)]
	return ok && s >= d.cutoff(now)
}

// cutoff is the oldest second still within the horizon, computed without
// wrapping: a horizon reaching before 1970 keeps everything.
func (d *dedupIndex) cutoff(now time.Time) uint32 {
	c := now.Unix() - int64(d.horizon/time.Second)
	if c < 0 {
		return 0
	}
	return uint32(min(c, math.MaxUint32))
}

// prune forgets the ids older than the horizon.
func (d *dedupIndex) prune(now time.Time) {
	oldest := d.cutoff(now)
	for _, pi := range d.parts {
		for k, s := range pi.seen {
			if s < oldest {
				delete(pi.seen, k)
			}
		}
	}
}

func (d *dedupIndex) len() int {
	n := 0
	for _, pi := range d.parts {
		n += len(pi.seen)
	}
	return n
}

// unixSeconds is t in unix seconds, held within uint32 (1970 to 2106).
func unixSeconds(t time.Time) uint32 {
	return uint32(max(0, min(t.Unix(), math.MaxUint32)))
}
