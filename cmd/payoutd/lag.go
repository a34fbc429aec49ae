package main

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// lagReader measures consumer lag as a read_committed consumer sees it.
//
// kadm's lag is the end offset minus the committed offset, and on payoutd's
// transactional topics the end offset counts records no read_committed
// consumer ever gets: one commit marker after every transaction, and the
// records and marker of every aborted one. A group that has caught up then
// shows a lag of 1 per partition forever. Where that raw lag is small, the
// reader reads the records behind the committed offset once and counts the
// committed data records; the answer is cached until the offsets move.
type lagReader struct {
	adm  *kadm.Client
	opts []kgo.Opt

	mu    sync.Mutex
	cache map[lagKey]lagValue
}

// verifyBelow is the raw lag below which records are read to correct it;
// above it, the few invisible records are noise next to the real lag.
const verifyBelow = 1000

type lagKey struct {
	group, topic string
	partition    int32
}

type lagValue struct {
	committed, end int64
	lag            int64
}

func newLagReader(adm *kadm.Client, opts []kgo.Opt) *lagReader {
	return &lagReader{adm: adm, opts: opts, cache: map[lagKey]lagValue{}}
}

// Lag returns each group's lag per topic and partition; a partition whose
// lag is unknown is left out.
func (l *lagReader) Lag(ctx context.Context, groups ...string) (map[string]map[string]map[int32]int64, error) {
	lags, err := l.adm.Lag(ctx, groups...)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]map[int32]int64{}
	var verify []lagKey
	raw := map[lagKey]lagValue{}
	for group, gl := range lags {
		for topic, ps := range gl.Lag {
			for p, ml := range ps {
				if ml.Err != nil || ml.Lag < 0 {
					continue
				}
				k := lagKey{group, topic, p}
				v := lagValue{committed: ml.Commit.At, end: ml.End.Offset, lag: ml.Lag}
				raw[k] = v
				if ml.Lag > 0 && ml.Lag < verifyBelow {
					verify = append(verify, k)
				}
			}
		}
	}
	corrected := l.correct(ctx, verify, raw)
	for k, v := range raw {
		if c, ok := corrected[k]; ok {
			v.lag = c
		}
		if out[k.group] == nil {
			out[k.group] = map[string]map[int32]int64{}
		}
		if out[k.group][k.topic] == nil {
			out[k.group][k.topic] = map[int32]int64{}
		}
		out[k.group][k.topic][k.partition] = v.lag
	}
	return out, nil
}

// correct counts the committed data records between each key's committed
// offset and the end, from the cache where the offsets have not moved.
func (l *lagReader) correct(ctx context.Context, keys []lagKey, raw map[lagKey]lagValue) map[lagKey]int64 {
	out := map[lagKey]int64{}
	l.mu.Lock()
	var read []lagKey
	for _, k := range keys {
		if c, ok := l.cache[k]; ok && c.committed == raw[k].committed && c.end == raw[k].end {
			out[k] = c.lag
		} else {
			read = append(read, k)
		}
	}
	l.mu.Unlock()
	if len(read) == 0 {
		return out
	}
	// One reader for every partition to check; groups that share a
	// partition at the same offset share the read.
	type tp struct {
		topic string
		p     int32
	}
	starts := map[tp]int64{}
	for _, k := range read {
		t := tp{k.topic, k.partition}
		if s, ok := starts[t]; !ok || raw[k].committed < s {
			starts[t] = raw[k].committed
		}
	}
	offsets := map[string]map[int32]kgo.Offset{}
	ends := map[tp]int64{}
	for t, s := range starts {
		if offsets[t.topic] == nil {
			offsets[t.topic] = map[int32]kgo.Offset{}
		}
		offsets[t.topic][t.p] = kgo.NewOffset().At(s)
		for _, k := range read {
			if (tp{k.topic, k.partition}) == t {
				ends[t] = max(ends[t], raw[k].end)
			}
		}
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, l.opts...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), kgo.ConsumePartitions(offsets))...)
	if err != nil {
		return out
	}
	defer cl.Close()
	var data []struct {
		t      tp
		offset int64
	}
	// Records of a transaction still open are not readable yet: a fetch
	// waits for them in vain, so the read has its own short deadline.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	pending := len(ends)
	for pending > 0 {
		f := cl.PollFetches(ctx)
		if f.IsClientClosed() || ctx.Err() != nil {
			break
		}
		f.EachRecord(func(r *kgo.Record) {
			t := tp{r.Topic, r.Partition}
			end, open := ends[t]
			if !open || r.Offset >= end {
				return
			}
			if !r.Attrs.IsControl() {
				data = append(data, struct {
					t      tp
					offset int64
				}{t, r.Offset})
			}
			if r.Offset+1 >= end {
				delete(ends, t)
				pending--
			}
		})
	}
	if pending > 0 {
		return out // could not read to the end: leave the raw lag
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range read {
		n := int64(0)
		for _, d := range data {
			if d.t == (tp{k.topic, k.partition}) && d.offset >= raw[k].committed && d.offset < raw[k].end {
				n++
			}
		}
		out[k] = n
		l.cache[k] = lagValue{committed: raw[k].committed, end: raw[k].end, lag: n}
	}
	return out
}
