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
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/topicscan"
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

	err = topicscan.Scan(ctx, cfg.Kafka, topics.WebhooksRaw, readFrom, readTo, func(r *kgo.Record) error {
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
	err = topicscan.Scan(ctx, cfg.Kafka, topics.Outcomes, readFrom, readTo, func(r *kgo.Record) error {
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
