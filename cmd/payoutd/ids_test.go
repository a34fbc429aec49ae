package main

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/internal/kafkatest"
)

// Ids are unique per process (two on one host never share one), stable where
// the platform allows (explicit, StatefulSet ordinal), never a Deployment
// pod's throw-away name alone.
func TestInstanceNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		explicit string
		host     string
		pid      int
		k8s      bool
		want     string
	}{
		{"explicit wins", "eu-1", "box", 42, true, "eu-1"},
		{"StatefulSet ordinal", "", "payoutd-2", 1, true, "payoutd-2"},
		{"Deployment pod", "", "payoutd-5d4f8b7c9-x2k7q", 1, true, "payoutd-5d4f8b7c9-x2k7q-1"},
		{"bare host, first process", "", "box", 4242, false, "box-4242"},
		{"bare host, second process", "", "box", 4243, false, "box-4243"},
		{"ordinal-looking host outside Kubernetes", "", "web-1", 7, false, "web-1-7"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := instanceName(tc.explicit, tc.host, tc.pid, tc.k8s); got != tc.want {
				t.Fatalf("instanceName = %q, want %q", got, tc.want)
			}
		})
	}
}

// A static member id already held by a live member from another address is
// a collision, found at start-up; one held from our own address is our
// predecessor, and a free id is free.
func TestInstanceIDCollisionIsFoundAtStart(t *testing.T) {
	t.Parallel()
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "ids", 1, nil)
	group, id := kafkatest.Name(t, "group"), kafkatest.Name(t, "instance")
	member := c.Client(t, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.InstanceID(id))
	adm := c.Admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			member.PollFetches(ctx)
		}
	}()
	log := slog.New(slog.DiscardHandler)
	for {
		described, err := adm.DescribeGroups(ctx, group)
		if err == nil && len(described[group].Members) == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the static member never joined")
		}
		time.Sleep(100 * time.Millisecond)
	}
	elsewhere := func(string) bool { return false }
	if err := checkInstanceIDs(ctx, adm, log, map[string]string{group: id}, elsewhere, time.Second); !errors.Is(err, errInstanceIDInUse) {
		t.Fatalf("a live member holding our id from another address: %v, want errInstanceIDInUse", err)
	}
	if err := checkInstanceIDs(ctx, adm, log, map[string]string{group: id}, ownAddress, time.Second); err != nil {
		t.Fatalf("our own predecessor's id: %v", err)
	}
	if err := checkInstanceIDs(ctx, adm, log, map[string]string{group: id + "-other"}, elsewhere, time.Second); err != nil {
		t.Fatalf("a free id: %v", err)
	}
}
