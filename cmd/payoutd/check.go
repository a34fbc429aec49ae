package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
)

// checkTimeout bounds each reach of `run --check` (Kafka, one Calypso
// account), so an unreachable service is a FAIL line, not a hang.
const checkTimeout = 15 * time.Second

// neededTopics are the topics the selected components read or write: a
// missing one means that component consumes or writes nothing.
func (r *runCmd) neededTopics() []string {
	t := r.topicFlags.topics().WithDefaults()
	uses := map[string][]string{
		"batcher":   {t.Requests, t.DLQ, t.Batches, t.Intents},
		"submitter": {t.Batches, t.BatchStates, t.DLQ, t.Intents, t.Outcomes},
		"ingress":   {t.WebhooksRaw, t.Outcomes},
		"tracker":   {t.Outcomes, t.TrackerState, t.Intents},
	}
	var out []string
	for _, c := range r.Components {
		for _, n := range uses[c] {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}

// missingOf returns the names of needed that rep says do not exist.
func missingOf(rep events.TopicReport, needed []string) []string {
	var out []string
	for _, n := range rep.Missing {
		if slices.Contains(needed, n) {
			out = append(out, n)
		}
	}
	return out
}

// check is `run --check`: it changes nothing and prints one line per check,
// "ok" or "FAIL" with the reason. The configuration is already valid when it
// runs (an invalid one exits 2 before). A failed check exits 1.
func (r *runCmd) check(ctx context.Context, out io.Writer) error {
	failed := 0
	line := func(err error, what string, args ...any) {
		msg := fmt.Sprintf(what, args...)
		if err != nil {
			failed++
			fmt.Fprintf(out, "FAIL  %s: %v\n", msg, err)
			return
		}
		fmt.Fprintf(out, "ok    %s\n", msg)
	}
	line(nil, "configuration: valid")

	log := slog.New(slog.DiscardHandler)
	kopts, err := r.kafkaFlags.clientOpts(log)
	if err != nil {
		return err
	}
	adm, err := newAdmin(kopts)
	if err != nil {
		return err
	}
	defer adm.Close()
	brokers := strings.Join(nonEmpty(r.Brokers), ",")
	if err := pingKafka(ctx, adm, checkTimeout); err != nil {
		if refusedByKafka(err) {
			err = fmt.Errorf("%w: %w", errKafkaRefused, err)
		}
		line(err, "kafka at %s", brokers)
	} else {
		line(nil, "kafka at %s: reachable", brokers)
		r.checkTopics(ctx, adm, line)
	}
	r.checkCalypso(ctx, line)
	if r.has("ingress") {
		line(nil, "webhook keys: %d key pair(s) for the ingress", len(r.keys))
	}
	if failed > 0 {
		return &failure{code: exitFailed, msg: fmt.Sprintf("%d check(s) failed", failed)}
	}
	return nil
}

func (r *runCmd) checkTopics(ctx context.Context, adm *kadm.Client, line func(error, string, ...any)) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	rep, err := r.topicFlags.topics().Describe(ctx, adm, r.DedupHorizon)
	if err != nil {
		line(err, "topics")
		return
	}
	missing := missingOf(rep, r.neededTopics())
	for _, n := range r.neededTopics() {
		if slices.Contains(missing, n) {
			line(errors.New("does not exist; create it with `payoutd topics` (or fix the --topic-* name)"), "topic %s", n)
		} else {
			line(nil, "topic %s: exists", n)
		}
	}
	for _, d := range rep.Drift {
		line(errors.New(d.String()), "topic %s: drift from the catalog (`payoutd topics` reports it; it never changes an existing topic)", d.Topic)
	}
}

// checkCalypso reads each configured account (read-only), with one attempt
// bounded by checkTimeout.
func (r *runCmd) checkCalypso(ctx context.Context, line func(error, string, ...any)) {
	if r.CalypsoURL == "" {
		return
	}
	for _, a := range r.accounts {
		cl, err := calypso.NewClient(calypso.Config{
			BaseURL: r.CalypsoURL, Account: a.ID, APIKey: a.Key, APISecret: a.Secret,
			Timeout: min(r.CalypsoTimeout, checkTimeout), Retry: calypso.RetryPolicy{MaxAttempts: 1},
		}, calypso.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			line(err, "calypso account %s", a.ID)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, checkTimeout)
		info, err := cl.Account(cctx)
		cancel()
		if err != nil {
			line(err, "calypso account %s at %s", a.ID, r.CalypsoURL)
			continue
		}
		line(nil, "calypso account %s at %s: readable (%d balance(s))", a.ID, r.CalypsoURL, len(info.Balances))
	}
}

// watchTopics is run's start-up check of Kafka and its topics, repeated
// until both are fine: until then it logs, plainly and at growing
// intervals, that Kafka does not answer or which topic is missing, and
// holds readiness ("kafka" part) not ready with that reason. The components
// start anyway and wait for Kafka on their own.
func (r *runCmd) watchTopics(ctx context.Context, adm *kadm.Client, log *slog.Logger, health *pipeline.Health) {
	const part = "kafka"
	brokers := strings.Join(nonEmpty(r.Brokers), ",")
	needed := r.neededTopics()
	wait := 2 * time.Second
	for {
		reason := ""
		cctx, cancel := context.WithTimeout(ctx, checkTimeout)
		rep, err := r.topicFlags.topics().Describe(cctx, adm, r.DedupHorizon)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			reason = "kafka does not answer at " + brokers
			log.Warn("kafka does not answer; retrying", "brokers", brokers, "retry_in", wait, "error", err)
		default:
			for _, n := range missingOf(rep, needed) {
				log.Error("topic does not exist: nothing is consumed from or written to it; create it with `payoutd topics` or fix its --topic-* name",
					"topic", n)
				reason += "topic " + n + " does not exist (create it with `payoutd topics`); "
			}
			reason = strings.TrimSuffix(reason, "; ")
		}
		if reason == "" {
			health.Ready(part)
			return
		}
		health.NotReady(part, reason)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}
