package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
	"github.com/payoutd/payoutd/schemas"
)

// replayCmd is the audit of invariant 6: the typed outcome events are a pure
// function of the archived webhook bytes. It reads only Kafka; it has no
// Calypso configuration, so it cannot call Calypso.
type replayCmd struct {
	From     string `name:"from" help:"Replay webhooks archived at or after this time (RFC 3339, by record timestamp; default: the beginning)."`
	To       string `name:"to" help:"Replay webhooks archived before this time (RFC 3339; default: now)."`
	OutTopic string `name:"out-topic" help:"Also write the re-derived events to this topic (never the live outcomes topic)."`
	OutFile  string `name:"out-file" help:"Also write the re-derived events to this file, one JSON object per line ('-': stdout)."`
	Quiet    bool   `name:"quiet" help:"Print the summary only, not each difference."`

	kafkaFlags `embed:""`
	topicFlags `embed:""`
	logFlags   `embed:""`

	from, to time.Time
}

func (c *replayCmd) validate(p *problems) {
	c.kafkaFlags.validate(p)
	c.topicFlags.validate(p)
	c.logFlags.validate(p)
	parse := func(flag, v string) time.Time {
		if v == "" {
			return time.Time{}
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			p.add(flag, "%q is not an RFC 3339 time such as 2025-01-31T00:00:00Z", v)
		}
		return t
	}
	c.from, c.to = parse("--from", c.From), parse("--to", c.To)
	if !c.from.IsZero() && !c.to.IsZero() && !c.to.After(c.from) {
		p.add("--to", "must be after --from")
	}
	if c.OutTopic != "" && c.OutTopic == c.topicFlags.topics().Outcomes {
		p.add("--out-topic", "must not be the live outcomes topic %q: consumers would see every event twice", c.OutTopic)
	}
}

// replayReport is what an audit found.
type replayReport struct {
	Webhooks  int // raw records in range
	Untyped   int // archived raw only (unknown type or unmappable), as the ingress did
	Derived   int // events re-derived
	Compared  int // ingress events on the outcomes topic in range
	Matched   int
	Missing   []string // re-derived, not on the outcomes topic
	Extra     []string // on the outcomes topic, not re-derived
	Different []string // same ce_id, other bytes
}

func (r replayReport) differences() int { return len(r.Missing) + len(r.Extra) + len(r.Different) }

func (c *replayCmd) run(ctx context.Context, out io.Writer) error {
	log := c.logFlags.logger()
	opts, err := c.kafkaFlags.clientOpts(log)
	if err != nil {
		return err
	}
	to := c.to
	if to.IsZero() {
		to = time.Now()
	}
	topics := c.topicFlags.topics()
	raw, err := readRange(ctx, opts, topics.WebhooksRaw, c.from, to)
	if err != nil {
		return err
	}
	outcomes, err := readRange(ctx, opts, topics.Outcomes, c.from, to)
	if err != nil {
		return err
	}
	derived, rep, err := rederive(raw, c.OutTopic)
	if err != nil {
		return err
	}
	compare(derived, outcomes, &rep)

	if err := c.write(ctx, opts, derived); err != nil {
		return err
	}
	if !c.Quiet {
		for _, d := range rep.Missing {
			fmt.Fprintf(out, "missing    %s\n", d)
		}
		for _, d := range rep.Extra {
			fmt.Fprintf(out, "extra      %s\n", d)
		}
		for _, d := range rep.Different {
			fmt.Fprintf(out, "different  %s\n", d)
		}
	}
	fmt.Fprintf(out, "replayed %d webhook(s) (%d archived untyped) → %d event(s); %d ingress event(s) on %s; %d matched; %d difference(s): %d missing, %d extra, %d different\n",
		rep.Webhooks, rep.Untyped, rep.Derived, rep.Compared, topics.Outcomes, rep.Matched, rep.differences(),
		len(rep.Missing), len(rep.Extra), len(rep.Different))
	if rep.differences() > 0 {
		return &failure{code: exitFailed, msg: "the outcome topic differs from what its webhooks say"}
	}
	return nil
}

// rederive maps every raw webhook to its typed events exactly as the
// ingress does: OutcomeEvents, then the schema check (an event that fails
// it was archived raw only).
func rederive(raw []*kgo.Record, outTopic string) ([]*kgo.Record, replayReport, error) {
	var rep replayReport
	set, err := schemas.Load()
	if err != nil {
		return nil, rep, err
	}
	var out []*kgo.Record
	for _, r := range raw {
		rep.Webhooks++
		evs, err := pipeline.OutcomeEvents(r.Value)
		if err != nil || len(evs) == 0 {
			rep.Untyped++
			continue
		}
		var recs []*kgo.Record
		for _, e := range evs {
			rec, err := events.NewRecord(outTopic, "payoutd/replay", e)
			if err == nil {
				err = set.Validate(events.SchemaName(e.Type()), rec.Value)
			}
			if err != nil {
				recs = nil
				break
			}
			rec.Timestamp = r.Timestamp
			recs = append(recs, rec)
		}
		if recs == nil {
			rep.Untyped++
			continue
		}
		out = append(out, recs...)
	}
	rep.Derived = len(out)
	return out, rep, nil
}

// compare matches by ce_id and compares value bytes. An id may legitimately
// occur several times (a redelivered webhook is archived twice); what must
// agree is the set of distinct bodies under each id.
func compare(derived, outcomes []*kgo.Record, rep *replayReport) {
	want := bodiesByID(derived, "")
	// Only the ingress's events come from webhooks; the submitter's and
	// tracker's on the same topic do not.
	got := bodiesByID(outcomes, pipeline.SourceIngress)
	for _, bodies := range got {
		rep.Compared += len(bodies)
	}
	for _, id := range sortedKeys(want) {
		g, ok := got[id]
		switch {
		case !ok:
			rep.Missing = append(rep.Missing, describe(id, want[id]))
		case !sameSet(want[id], g):
			rep.Different = append(rep.Different, fmt.Sprintf("%s: replay %s, topic %s", id, bodies(want[id]), bodies(g)))
		default:
			rep.Matched++
		}
	}
	for _, id := range sortedKeys(got) {
		if _, ok := want[id]; !ok {
			rep.Extra = append(rep.Extra, describe(id, got[id]))
		}
	}
}

// bodiesByID groups records' values by ce_id; source, when set, keeps only
// records written by it.
func bodiesByID(recs []*kgo.Record, source string) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, r := range recs {
		m, err := events.ReadMeta(r)
		if err != nil || (source != "" && m.Source != source) {
			continue
		}
		if out[m.ID] == nil {
			out[m.ID] = map[string]bool{}
		}
		out[m.ID][string(r.Value)] = true
	}
	return out
}

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func bodies(m map[string]bool) string {
	bs := sortedKeys(m)
	b, _ := json.Marshal(bs)
	return string(b)
}

func describe(id string, m map[string]bool) string { return id + " " + bodies(m) }

// write sends the re-derived events to --out-topic and/or --out-file.
func (c *replayCmd) write(ctx context.Context, opts []kgo.Opt, derived []*kgo.Record) error {
	if c.OutFile != "" {
		w := io.Writer(os.Stdout)
		if c.OutFile != "-" {
			f, err := os.Create(c.OutFile)
			if err != nil {
				return err
			}
			defer f.Close()
			w = f
		}
		bw := bufio.NewWriter(w)
		enc := json.NewEncoder(bw)
		for _, r := range derived {
			jr := toJSONRecord(r)
			jr.Partition, jr.Offset = 0, 0
			if err := enc.Encode(jr); err != nil {
				return err
			}
		}
		if err := bw.Flush(); err != nil {
			return err
		}
	}
	if c.OutTopic == "" || len(derived) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append(opts, kgo.ProducerLinger(5*time.Millisecond))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	return cl.ProduceSync(ctx, derived...).FirstErr()
}

// readRange reads a topic, read_committed, from the first offset at or
// after from to the last stable offset as of now, keeping records whose
// timestamp is in [from, to).
func readRange(ctx context.Context, base []kgo.Opt, topic string, from, to time.Time) ([]*kgo.Record, error) {
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, base...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := stableEnds(ctx, adm, topic)
	if err != nil {
		return nil, err
	}
	starts := map[int32]kgo.Offset{}
	if from.IsZero() {
		for p := range ends {
			starts[p] = kgo.NewOffset().AtStart()
		}
	} else {
		listed, err := adm.ListOffsetsAfterMilli(ctx, from.UnixMilli(), topic)
		if err != nil {
			return nil, fmt.Errorf("finding offsets of %s at %s: %w", topic, from, err)
		}
		listed.Each(func(o kadm.ListedOffset) {
			if end, ok := ends[o.Partition]; ok && o.Err == nil && o.Offset < end {
				starts[o.Partition] = kgo.NewOffset().At(o.Offset)
			} else {
				delete(ends, o.Partition)
			}
		})
	}
	if len(starts) == 0 {
		return nil, nil
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: starts})
	var out []*kgo.Record
	for len(ends) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := fetches.Err0(); err != nil && !errors.Is(err, context.Canceled) {
			return nil, fmt.Errorf("reading %s: %w", topic, err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			end, open := ends[r.Partition]
			if !open || r.Offset >= end {
				return
			}
			if r.Offset+1 >= end {
				delete(ends, r.Partition)
			}
			if r.Attrs.IsControl() || r.Timestamp.Before(from) || !r.Timestamp.Before(to) {
				return
			}
			out = append(out, r)
		})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Timestamp.Before(out[j].Timestamp) })
	return out, nil
}
