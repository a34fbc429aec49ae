package pipeline

import (
	"crypto/sha256"
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

// dedupIndex remembers which intent ids were batched, and when, for a horizon.
// It is rebuilt from the compacted intents topic and is not safe for
// concurrent use: the batcher's loop owns it.
type dedupIndex struct {
	horizon time.Duration
	seen    map[intentKey]uint32 // unix seconds of the intent's latest state
	// next is the offset to read next in each intents partition.
	next map[int32]int64
}

func newDedupIndex(horizon time.Duration) *dedupIndex {
	return &dedupIndex{horizon: horizon, seen: make(map[intentKey]uint32), next: make(map[int32]int64)}
}

func (d *dedupIndex) add(intentID string, at time.Time) { d.addKey(keyOf(intentID), at) }

func (d *dedupIndex) addKey(k intentKey, at time.Time) {
	s := uint32(at.Unix())
	if s > d.seen[k] {
		d.seen[k] = s
	}
}

func (d *dedupIndex) remove(intentID string) { delete(d.seen, keyOf(intentID)) }

// has reports whether intentID was batched within the horizon before now.
func (d *dedupIndex) has(intentID string, now time.Time) bool {
	s, ok := d.seen[keyOf(intentID)]
	return ok && now.Sub(time.Unix(int64(s), 0)) <= d.horizon
}

// prune forgets the ids older than the horizon.
func (d *dedupIndex) prune(now time.Time) {
	oldest := uint32(now.Add(-d.horizon).Unix())
	for k, s := range d.seen {
		if s < oldest {
			delete(d.seen, k)
		}
	}
}

func (d *dedupIndex) len() int { return len(d.seen) }
