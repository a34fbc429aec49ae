package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/payoutd/payoutd/internal/kafkatest"
)

func TestTopicsCreatesThenReportsDrift(t *testing.T) {
	t.Parallel()
	c := kafkatest.Start(t)
	tt := newTestTopics(t)
	tt.cleanup(t, c)
	args := append([]string{"topics", brokersFlag(c), "--partitions=2", "--replication-factor=1", "--strict"}, tt.flags()...)

	r := payoutd(t, 60*time.Second, nil, args...)
	if r.code != 0 || strings.Count(r.stdout, "created") != 8 || !strings.Contains(r.stdout, "no drift") {
		t.Fatalf("first run:\n%s", r)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	short := "3600000"
	if _, err := c.Admin(t).AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: &short}}, tt.Outcomes); err != nil {
		t.Fatal(err)
	}
	c.WaitTopicConfig(t, tt.Outcomes, "retention.ms", short)
	r = payoutd(t, 60*time.Second, nil, args...)
	if r.code != exitFailed || strings.Count(r.stdout, "exists") != 8 ||
		!strings.Contains(r.stdout, "drift    "+tt.Outcomes+": retention.ms is \"3600000\"") {
		t.Fatalf("second run, after retention changed:\n%s", r)
	}
}
