package events_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/kafkatest"
)

func deleteTopics(t *testing.T, adm *kadm.Client, topics events.Topics) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = adm.DeleteTopics(ctx, topics.Requests, topics.DLQ, topics.Batches, topics.Intents, topics.Outcomes, topics.WebhooksRaw)
	})
}

func TestEnsureTopicsCreatesMissingAndReportsDrift(t *testing.T) {
	t.Parallel()
	cluster := kafkatest.Start(t)
	adm := cluster.Admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topics := kafkatest.Topics(t)
	deleteTopics(t, adm, topics)

	rep, err := topics.Ensure(ctx, adm, 0, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Created) != 8 || len(rep.Existed) != 0 || len(rep.Drift) != 0 {
		t.Fatalf("first run: %+v", rep)
	}
	configs, err := adm.DescribeTopicConfigs(ctx, topics.Intents)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := configs.On(topics.Intents, nil)
	got := map[string]string{}
	for _, kv := range c.Configs {
		got[kv.Key] = kv.MaybeValue()
	}
	if got["cleanup.policy"] != "compact,delete" || got["retention.ms"] != "604800000" {
		t.Fatalf("intents topic created with %v", got)
	}

	// An operator shortens the outcome topic's retention by hand.
	short := "3600000"
	if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: &short}}, topics.Outcomes); err != nil {
		t.Fatal(err)
	}
	cluster.WaitTopicConfig(t, topics.Outcomes, "retention.ms", short)
	rep, err = topics.Ensure(ctx, adm, 0, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Created) != 0 || len(rep.Existed) != 8 {
		t.Fatalf("second run: %+v", rep)
	}
	if len(rep.Drift) != 1 || rep.Drift[0].Topic != topics.Outcomes || rep.Drift[0].Setting != "retention.ms" ||
		rep.Drift[0].Got != short || rep.Drift[0].Want != "63072000000" {
		t.Fatalf("drift: %v", rep.Drift)
	}
}

func TestEnsureTopicsReportsIntentsNotCoPartitioned(t *testing.T) {
	t.Parallel()
	cluster := kafkatest.Start(t)
	adm := cluster.Admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topics := kafkatest.Topics(t)
	deleteTopics(t, adm, topics)

	if _, err := adm.CreateTopic(ctx, 3, 1, nil, topics.Requests); err != nil {
		t.Fatal(err)
	}
	rep, err := topics.Ensure(ctx, adm, 0, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(rep.Existed, topics.Requests) || len(rep.Created) != 7 {
		t.Fatalf("report: %+v", rep)
	}
	var found bool
	for _, d := range rep.Drift {
		if d.Topic == topics.Intents && d.Setting == "partitions" && d.Got == "1" && strings.HasPrefix(d.Want, "3") {
			found = true
		}
	}
	if !found {
		t.Fatalf("partition mismatch of requests and intents not reported: %v", rep.Drift)
	}
}

// Issue 11, scenario 14: the dedup horizon is part of the upstream
// contract; a requests topic that keeps records longer than it is drift,
// and says why.
func TestEnsureTopicsReportsRequestsRetentionBeyondTheHorizon(t *testing.T) {
	t.Parallel()
	cluster := kafkatest.Start(t)
	adm := cluster.Admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topics := kafkatest.Topics(t)
	deleteTopics(t, adm, topics)

	// Created with the default horizon: requests keep 7 days.
	if _, err := topics.Ensure(ctx, adm, 0, 1, 1); err != nil {
		t.Fatal(err)
	}
	// A broker publishes new topics asynchronously: wait until each is described.
	for _, name := range []string{topics.Requests, topics.DLQ, topics.Batches, topics.Intents, topics.Outcomes,
		topics.WebhooksRaw, topics.BatchStates, topics.TrackerState} {
		cluster.WaitTopicConfig(t, name, "max.message.bytes", strconv.Itoa(events.MaxMessageBytes))
	}
	// Then the horizon is shortened to 3 days.
	rep, err := topics.Ensure(ctx, adm, 3*24*time.Hour, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, d := range rep.Drift {
		if d.Topic == topics.Requests && d.Setting == "retention.ms" && d.Got == "604800000" && strings.Contains(d.Want, "dedup horizon") {
			found = true
		}
	}
	if !found {
		t.Fatalf("requests retention beyond the horizon not reported: %v", rep.Drift)
	}
	// A fresh set created with a short horizon keeps requests no longer.
	short := kafkatest.Topics(t)
	deleteTopics(t, adm, short)
	rep, err = short.Ensure(ctx, adm, 24*time.Hour, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range rep.Drift {
		if d.Topic == short.Requests {
			t.Fatalf("drift on a requests topic just created: %v", d)
		}
	}
	// Created with one day's retention (the wait fails the test otherwise).
	cluster.WaitTopicConfig(t, short.Requests, "retention.ms", "86400000")
}

// A check before start-up changes nothing: a missing topic is named, not
// created, and the topics that exist are still checked for drift.
func TestDescribeNamesMissingTopicsAndCreatesNothing(t *testing.T) {
	t.Parallel()
	cluster := kafkatest.Start(t)
	adm := cluster.Admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topics := kafkatest.Topics(t)
	deleteTopics(t, adm, topics)
	if _, err := topics.Ensure(ctx, adm, 0, 2, 1); err != nil {
		t.Fatal(err)
	}
	typo := topics
	typo.Requests = topics.Requests + "-typo"
	// A broker publishes new topics asynchronously: wait until the seven
	// created ones are listed.
	var rep events.TopicReport
	for {
		var err error
		if rep, err = typo.Describe(ctx, adm, 0); err != nil {
			t.Fatal(err)
		}
		if len(rep.Missing) <= 1 || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !slices.Equal(rep.Missing, []string{typo.Requests}) || len(rep.Existed) != 7 || len(rep.Drift) != 0 {
		t.Fatalf("report: %+v", rep)
	}
	details, err := adm.ListTopics(ctx, typo.Requests)
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := details[typo.Requests]; ok && d.Err == nil {
		t.Fatalf("Describe created %s", typo.Requests)
	}
}
