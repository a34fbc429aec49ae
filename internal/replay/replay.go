// Package replay is the audit of invariant 6: the typed outcome events the
// ingress wrote are a pure function of the archived webhook bytes. It
// re-derives the events of every raw webhook in a time window, exactly as the
// ingress does, and compares them with the ingress's events on the outcomes
// topic by ce_id and body.
//
// It reads Kafka only and never holds a Calypso client, so an audit can never
// create a payout. It streams: each record is read once and forgotten; what
// it keeps is a 16-byte digest per distinct event body, so memory grows with
// the number of distinct events in the window, not with their size.
package replay

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
	"github.com/payoutd/payoutd/schemas"
)

// DefaultEdgeSlack is how far beyond the window both topics are read. The
// ingress writes a webhook's raw record and its typed events moments apart,
// so an event near an edge may have its partner just outside the window.
const DefaultEdgeSlack = time.Minute

// Config says what to audit.
type Config struct {
	// Kafka is the client configuration (seeds, TLS, SASL).
	Kafka []kgo.Opt
	// Topics names the raw webhook and outcome topics.
	Topics events.Topics
	// From and To bound the window by record timestamp, [From, To). A zero
	// From is the beginning of the topics; a zero To is now.
	From, To time.Time
	// EdgeSlack is read beyond each edge to pair events whose partner lies
	// just outside the window (default DefaultEdgeSlack). Events found only
	// in the slack are reported as unpaired at the edges, not as
	// differences.
	EdgeSlack time.Duration
	// OutTopic is the topic re-derived records are addressed to (they carry
	// it in Record.Topic); empty is fine when only Emit reads them.
	OutTopic string
	// Emit, if set, receives each re-derived event record of the window as
	// it is derived, for writing to a file or topic.
	Emit func(*kgo.Record) error
}

// Report is what an audit found.
type Report struct {
	Webhooks int // raw records in the window
	Untyped  int // archived raw only (unknown type or unmappable), as the ingress did
	Derived  int // events re-derived from the window's webhooks
	Compared int // ingress events on the outcomes topic in the window
	Matched  int // distinct ce_ids that agree
	// EdgeUnpaired counts events within EdgeSlack of an edge whose partner
	// lies outside the window: not a difference, said so the numbers add up.
	EdgeUnpaired int
	Missing      []Difference // re-derived, not on the outcomes topic
	Extra        []Difference // on the outcomes topic, not re-derived
	Different    []Difference // same ce_id, other bodies
}

// Differences counts every difference found.
func (r Report) Differences() int { return len(r.Missing) + len(r.Extra) + len(r.Different) }

// Difference names one event that does not agree: its ce_id, type and key
// (the payout id), and the digests of the bodies on each side, which tell
// bodies apart without printing them.
type Difference struct {
	ID, Type, Key string
	Replay, Topic []string // body digests, hex, sorted
}

func (d Difference) String() string {
	s := fmt.Sprintf("%s %s key %s", d.ID, d.Type, d.Key)
	if len(d.Replay) > 0 {
		s += fmt.Sprintf(" replay-bodies %v", d.Replay)
	}
	if len(d.Topic) > 0 {
		s += fmt.Sprintf(" topic-bodies %v", d.Topic)
	}
	return s
}

type digest [16]byte

// side is one side's view of one ce_id.
type side struct {
	bodies   map[digest]struct{}
	inWindow bool // at least one record inside [From, To)
}

type seen struct {
	typ, key string
	replay   side
	topic    side
}

// Run audits the window and reports what it found. An error means the audit
// could not be completed, not that it found differences.
func Run(ctx context.Context, cfg Config) (Report, error) {
	var rep Report
	if cfg.To.IsZero() {
		cfg.To = time.Now()
	}
	if cfg.EdgeSlack <= 0 {
		cfg.EdgeSlack = DefaultEdgeSlack
	}
	topics := cfg.Topics.WithDefaults()
	set, err := schemas.Load()
	if err != nil {
		return rep, err
	}
	readFrom := cfg.From
	if !readFrom.IsZero() {
		readFrom = readFrom.Add(-cfg.EdgeSlack)
	}
	readTo := cfg.To.Add(cfg.EdgeSlack)
	inWindow := func(ts time.Time) bool { return !ts.Before(cfg.From) && ts.Before(cfg.To) }

	byID := map[string]*seen{}
	entry := func(id, typ, key string) *seen {
		s := byID[id]
		if s == nil {
			s = &seen{typ: typ, key: key}
			byID[id] = s
		}
		return s
	}

	err = Scan(ctx, cfg.Kafka, topics.WebhooksRaw, readFrom, readTo, func(r *kgo.Record) error {
		in := inWindow(r.Timestamp)
		recs := derive(set, r, cfg.OutTopic)
		if in {
			rep.Webhooks++
			if recs == nil {
				rep.Untyped++
			}
		}
		for _, rec := range recs {
			m, _ := events.ReadMeta(rec)
			s := entry(m.ID, string(m.Type), string(rec.Key))
			add(&s.replay, rec.Value, in)
			if !in {
				continue
			}
			rep.Derived++
			if cfg.Emit != nil {
				if err := cfg.Emit(rec); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	err = Scan(ctx, cfg.Kafka, topics.Outcomes, readFrom, readTo, func(r *kgo.Record) error {
		m, err := events.ReadMeta(r)
		// Only the ingress's events come from webhooks; the submitter's and
		// tracker's on the same topic do not.
		if err != nil || m.Source != pipeline.SourceIngress {
			return nil
		}
		in := inWindow(r.Timestamp)
		if in {
			rep.Compared++
		}
		s := entry(m.ID, string(m.Type), string(r.Key))
		add(&s.topic, r.Value, in)
		return nil
	})
	if err != nil {
		return rep, err
	}
	compare(byID, &rep)
	return rep, nil
}

func add(s *side, body []byte, inWindow bool) {
	if s.bodies == nil {
		s.bodies = map[digest]struct{}{}
	}
	sum := sha256.Sum256(body)
	s.bodies[digest(sum[:16])] = struct{}{}
	s.inWindow = s.inWindow || inWindow
}

// derive maps one raw webhook to its typed event records exactly as the
// ingress does: OutcomeEvents, then the schema check (an event that fails
// it was archived raw only). Nil means archived untyped.
func derive(set *schemas.Set, raw *kgo.Record, outTopic string) []*kgo.Record {
	evs, err := pipeline.OutcomeEvents(raw.Value)
	if err != nil || len(evs) == 0 {
		return nil
	}
	recs := make([]*kgo.Record, 0, len(evs))
	for _, e := range evs {
		rec, err := events.NewRecord(outTopic, "payoutd/replay", e)
		if err == nil {
			err = set.Validate(events.SchemaName(e.Type()), rec.Value)
		}
		if err != nil {
			return nil
		}
		rec.Timestamp = raw.Timestamp
		recs = append(recs, rec)
	}
	return recs
}

// compare decides each ce_id. An id may legitimately occur several times (a
// redelivered webhook is archived twice); what must agree is the set of
// distinct bodies under it. An id seen only in the slack beyond an edge is
// not judged.
func compare(byID map[string]*seen, rep *Report) {
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		s := byID[id]
		if !s.replay.inWindow && !s.topic.inWindow {
			continue // both sides, if any, beyond the edges
		}
		d := Difference{ID: id, Type: s.typ, Key: s.key, Replay: hexes(s.replay.bodies), Topic: hexes(s.topic.bodies)}
		switch {
		case len(s.topic.bodies) == 0:
			rep.Missing = append(rep.Missing, d)
		case len(s.replay.bodies) == 0:
			rep.Extra = append(rep.Extra, d)
		case !sameSet(s.replay.bodies, s.topic.bodies):
			rep.Different = append(rep.Different, d)
		case !s.replay.inWindow || !s.topic.inWindow:
			rep.EdgeUnpaired++ // agrees, with its partner beyond an edge
			rep.Matched++
		default:
			rep.Matched++
		}
	}
}

func sameSet(a, b map[digest]struct{}) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

func hexes(m map[digest]struct{}) []string {
	out := make([]string, 0, len(m))
	for d := range m {
		out = append(out, fmt.Sprintf("%x", d[:6]))
	}
	sort.Strings(out)
	return out
}

// Scan calls fn for every record of topic, read_committed, whose timestamp
// is in [from, to), from the first offset at or after from up to each
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
	ends, err := stableEnds(ctx, adm, topic)
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
			if r.Attrs.IsControl() || r.Timestamp.Before(from) || !r.Timestamp.Before(to) {
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

// stableEnds returns the last stable offset of every non-empty partition
// of topic: where a read_committed reader has seen everything there is now.
func stableEnds(ctx context.Context, adm *kadm.Client, topic string) (map[int32]int64, error) {
	listed, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("listing end offsets of %s: %w", topic, err)
	}
	if err := listed.Error(); err != nil {
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
