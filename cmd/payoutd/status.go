package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/payoutd/payoutd/internal/status"
)

// statusCmd answers "where is this payment" (with a query) and "what is
// stuck, what failed" (without), from the topics.
type statusCmd struct {
	Query  string        `arg:"" optional:"" placeholder:"ID" help:"An intent id, batch id, payout id or recipient address to follow; none: what is stuck and what failed."`
	JSON   bool          `name:"json" env:"PAYOUTD_STATUS_JSON" help:"One JSON document instead of text."`
	Since  time.Duration `name:"since" env:"PAYOUTD_STATUS_SINCE" default:"168h" help:"How far back to read the topics (0: everything they hold)."`
	Groups []string      `name:"groups" env:"PAYOUTD_STATUS_GROUPS" default:"payoutd-batcher,payoutd-submitter,payoutd-tracker" help:"Consumer groups whose lag the summary shows."`

	kafkaFlags `embed:""`
	topicFlags `embed:""`
	logFlags   `embed:""`
}

func (c *statusCmd) validate(p *problems) {
	c.kafkaFlags.validate(p)
	c.topicFlags.validate(p)
	c.logFlags.validate(p)
	if c.Since < 0 {
		p.add("--since", "must not be negative, got %s", c.Since)
	}
}

func (c *statusCmd) run(ctx context.Context, out io.Writer) error {
	opts, err := c.kafkaFlags.clientOpts(c.logFlags.logger())
	if err != nil {
		return err
	}
	adm, err := newAdmin(opts)
	if err != nil {
		return err
	}
	defer adm.Close()
	if err := pingKafka(ctx, adm, 10*time.Second); err != nil {
		return err
	}
	cfg := status.Config{Kafka: opts, Topics: c.topicFlags.topics()}
	if c.Since > 0 {
		cfg.Since = time.Now().Add(-c.Since)
	}
	if c.Query != "" {
		tl, err := status.Follow(ctx, cfg, c.Query)
		if err != nil {
			return err
		}
		if c.JSON {
			return json.NewEncoder(out).Encode(tl)
		}
		printTimeline(out, tl)
		if tl.Kind == "" {
			return &failure{code: exitFailed, msg: fmt.Sprintf("nothing found for %q within --since %s", c.Query, c.Since)}
		}
		return nil
	}
	sum, err := status.Summarize(ctx, cfg)
	if err != nil {
		return err
	}
	lag := groupLag(ctx, newLagReader(adm, opts), c.Groups)
	if c.JSON {
		return json.NewEncoder(out).Encode(struct {
			status.Summary
			Lag map[string]int64 `json:"lag"`
		}{sum, lag})
	}
	printSummary(out, sum, lag)
	return nil
}

// groupLag is each group's total lag as a read_committed consumer sees it;
// a group that does not exist or cannot be read is left out.
func groupLag(ctx context.Context, lr *lagReader, groups []string) map[string]int64 {
	out := map[string]int64{}
	lags, err := lr.Lag(ctx, nonEmpty(groups)...)
	if err != nil {
		return out
	}
	for g, topics := range lags {
		for _, ps := range topics {
			for _, n := range ps {
				out[g] += n
			}
		}
	}
	return out
}

func printTimeline(out io.Writer, tl status.Timeline) {
	if tl.Kind == "" {
		fmt.Fprintf(out, "%s: nothing found\n", tl.Query)
		return
	}
	outcome := tl.Outcome
	if outcome == "" {
		outcome = "under way"
	}
	fmt.Fprintf(out, "%s (%s): %s\n", tl.Query, tl.Kind, outcome)
	for _, l := range []struct {
		name string
		ids  []string
	}{{"intents", tl.Intents}, {"batches", tl.Batches}, {"payouts", tl.Payouts}} {
		if len(l.ids) > 0 {
			fmt.Fprintf(out, "  %-8s %s\n", l.name, strings.Join(l.ids, ", "))
		}
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "\nTIME\tSTEP\tSTATE\tIDS\tDETAIL\tWHERE")
	for _, s := range tl.Steps {
		var ids []string
		for _, id := range []struct{ k, v string }{{"intent", s.IntentID}, {"batch", s.BatchID}, {"payout", s.PayoutID}} {
			if id.v != "" {
				ids = append(ids, id.k+"="+id.v)
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s[%d]@%d\n", s.At.UTC().Format("2006-01-02T15:04:05.000Z"), s.What, s.State,
			strings.Join(ids, " "), s.Detail, s.Topic, s.Partition, s.Offset)
	}
	w.Flush()
}

func printSummary(out io.Writer, sum status.Summary, lag map[string]int64) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	defer w.Flush()
	fmt.Fprintf(w, "payoutd status at %s\n\n", sum.At.UTC().Format(time.RFC3339))

	fmt.Fprintf(w, "OPEN PAYOUTS: %d", len(sum.OpenPayouts))
	for _, st := range sortedKeys(sum.OpenByState) {
		fmt.Fprintf(w, "  %s=%d", st, sum.OpenByState[st])
	}
	fmt.Fprintln(w)
	if len(sum.OpenPayouts) > 0 {
		fmt.Fprintln(w, "PAYOUT\tBATCH\tACCOUNT\tCURRENCY\tSTATE\tAGE")
		for i, p := range sum.OpenPayouts {
			if i == listedRows {
				fmt.Fprintf(w, "… %d more (oldest shown; --json lists all)\n", len(sum.OpenPayouts)-listedRows)
				break
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", p.PayoutID, p.BatchID, p.Account, p.Currency, p.State, p.Age.Truncate(time.Second))
		}
	}

	fmt.Fprintf(w, "\nWAITING BATCHES: %d (deferred, undecided, quarantined)\n", len(sum.Batches))
	if len(sum.Batches) > 0 {
		fmt.Fprintln(w, "BATCH\tSTATE\tSINCE\tNEXT TRY\tREASON")
		for _, b := range sum.Batches {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", b.BatchID, b.State, b.Since.UTC().Format(time.RFC3339), b.NextTry, b.Reason)
		}
	}

	total := 0
	for _, n := range sum.DLQ {
		total += n
	}
	fmt.Fprintf(w, "\nREJECTED REQUESTS (DLQ): %d", total)
	for _, r := range sortedKeys(sum.DLQ) {
		fmt.Fprintf(w, "  %s=%d", r, sum.DLQ[r])
	}
	fmt.Fprintln(w)
	for _, s := range sum.Rejected {
		fmt.Fprintf(w, "%s\tintent=%s\t%s\n", s.At.UTC().Format(time.RFC3339), s.IntentID, s.Detail)
	}

	fmt.Fprintf(w, "\nALERTS: %d (newest first)\n", len(sum.Alerts))
	for _, s := range sum.Alerts {
		fmt.Fprintf(w, "%s\t%s\tbatch=%s payout=%s\n", s.At.UTC().Format(time.RFC3339), s.Detail, s.BatchID, s.PayoutID)
	}

	fmt.Fprintln(w, "\nLAG (records not yet consumed)")
	groups := make([]string, 0, len(lag))
	for g := range lag {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	for _, g := range groups {
		fmt.Fprintf(w, "%s\t%d\n", g, lag[g])
	}
}

// listedRows bounds the open payouts the text view prints.
const listedRows = 50
