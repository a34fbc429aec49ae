// Package kafkatest gives every Kafka test in payoutd its broker, from one place.
//
// The broker is chosen once per test binary, in this order:
//
//  1. KAFKA_BROKERS set (comma-separated seeds): that cluster. CI starts a real
//     Apache Kafka and sets it.
//  2. A Docker engine answers: a real Apache Kafka in a container started by
//     testcontainers-go, from the image docker-compose uses ([Image]).
//  3. Otherwise: an in-process kfake cluster, so `go test ./...` passes on a
//     machine with nothing installed.
//
// With PAYOUTD_REQUIRE_APACHE_KAFKA=1 (CI sets it) a test fails unless the
// broker it got is Apache Kafka, so CI can never fall back to kfake silently.
//
// Tests share the cluster and stay apart by topic and group names: [Name]
// makes them unique per test.
package kafkatest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
)

// Image is the Apache Kafka image used by testcontainers and docker-compose.
const Image = "apache/kafka:4.4.0"

// Kind says what is behind a Cluster's seeds.
type Kind string

const (
	// Apache is a real Apache Kafka broker (KRaft).
	Apache Kind = "apache-kafka"
	// Kfake is franz-go's in-process fake.
	Kfake Kind = "kfake"
)

// Cluster is a Kafka cluster shared by the tests of one test binary.
type Cluster struct {
	Seeds []string
	// Kind is detected from the broker itself, not from how it was started:
	// an Apache KRaft broker reports process.roles among its configs, kfake does not.
	Kind Kind
	// Version is franz-go's guess from the ApiVersions response, e.g. "v4.1"
	// (for kfake it is rough: only Kind is reliable).
	Version string
	// Origin says how the cluster was found: "KAFKA_BROKERS", "testcontainers" or "in-process".
	Origin string
}

var shared struct {
	once sync.Once
	c    *Cluster
	err  error
}

// Start returns the shared cluster, starting it on first use, and logs its kind.
func Start(t testing.TB) *Cluster {
	t.Helper()
	shared.once.Do(func() { shared.c, shared.err = start() })
	if shared.err != nil {
		t.Fatalf("kafkatest: no broker: %v", shared.err)
	}
	c := shared.c
	t.Logf("kafkatest: broker %s %s via %s at %s", c.Kind, c.Version, c.Origin, strings.Join(c.Seeds, ","))
	if os.Getenv("PAYOUTD_REQUIRE_APACHE_KAFKA") == "1" && c.Kind != Apache {
		t.Fatalf("kafkatest: PAYOUTD_REQUIRE_APACHE_KAFKA=1 but the broker is %s", c.Kind)
	}
	return c
}

func start() (*Cluster, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var c Cluster
	switch seeds := os.Getenv("KAFKA_BROKERS"); {
	case seeds != "":
		c.Seeds, c.Origin = strings.Split(seeds, ","), "KAFKA_BROKERS"
	case dockerAnswers(ctx):
		s, err := startContainer(ctx)
		if err != nil {
			return nil, err
		}
		c.Seeds, c.Origin = s, "testcontainers"
	default:
		fake, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return nil, fmt.Errorf("starting kfake: %w", err)
		}
		// Lives as long as the test binary: every test of the package shares it.
		c.Seeds, c.Origin = fake.ListenAddrs(), "in-process"
	}
	if err := c.detect(ctx); err != nil {
		return nil, err
	}
	return &c, nil
}

// detect asks the broker what it is.
func (c *Cluster) detect(ctx context.Context) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Seeds...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	// A broker that was just started may need a moment before it answers.
	var broker kadm.BrokerApiVersions
	for {
		versions, err := adm.ApiVersions(ctx)
		if err == nil && len(versions) > 0 {
			broker = versions.Sorted()[0]
			if err = broker.Err; err == nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("broker at %v does not answer: %v", c.Seeds, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	c.Version = broker.VersionGuess()

	// Only a per-broker describe returns static configs such as process.roles.
	configs, err := adm.DescribeBrokerConfigs(ctx, broker.NodeID)
	if err != nil {
		return fmt.Errorf("describing broker configs: %w", err)
	}
	c.Kind = Kfake
	for _, rc := range configs {
		for _, cfg := range rc.Configs {
			if cfg.Key == "process.roles" {
				c.Kind = Apache
			}
		}
	}
	return nil
}

// Client returns a client on the cluster, closed when the test ends.
func (c *Cluster) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Seeds...)}, opts...)...)
	if err != nil {
		t.Fatalf("kafkatest: new client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// Admin returns an admin client on the cluster, closed when the test ends.
func (c *Cluster) Admin(t testing.TB) *kadm.Client {
	t.Helper()
	return kadm.NewClient(c.Client(t))
}

// CreateTopic creates a topic with a name unique to this test run and returns it.
// The topic is deleted when the test ends.
func (c *Cluster) CreateTopic(t testing.TB, base string, partitions int32, configs map[string]*string) string {
	t.Helper()
	name := Name(t, base)
	adm := c.Admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, partitions, 1, configs, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("kafkatest: creating topic %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = c.Admin(t).DeleteTopics(ctx, name)
	})
	return name
}

var unsafeChars = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

// Name returns base made unique to this test and run: safe for topic, group
// and transactional ids, so parallel tests and reruns on one broker never meet.
func Name(t testing.TB, base string) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	test := unsafeChars.ReplaceAllString(t.Name(), "_")
	if len(test) > 120 {
		test = test[:120]
	}
	return fmt.Sprintf("%s.%s.%s", base, test, hex.EncodeToString(b[:]))
}

// Topics returns payoutd's topic set with every name made unique by Name.
// It creates nothing: tests create them with events.Topics.Ensure, the way
// payoutd does.
func Topics(t testing.TB) events.Topics {
	t.Helper()
	d := events.DefaultTopics()
	return events.Topics{
		Requests: Name(t, d.Requests), DLQ: Name(t, d.DLQ), Batches: Name(t, d.Batches),
		Intents: Name(t, d.Intents), Outcomes: Name(t, d.Outcomes), WebhooksRaw: Name(t, d.WebhooksRaw),
		BatchStates: Name(t, d.BatchStates), TrackerState: Name(t, d.TrackerState),
	}
}

// WaitTopicConfig waits until the broker reports value for a topic config. A
// KRaft broker applies an altered config asynchronously, so a test that
// alters one and then checks what payoutd reads must wait for it first.
func (c *Cluster) WaitTopicConfig(t testing.TB, topic, key, value string) {
	t.Helper()
	adm := c.Admin(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		rc, err := adm.DescribeTopicConfigs(ctx, topic)
		cancel()
		got := ""
		if err == nil {
			if cfg, err := rc.On(topic, nil); err == nil {
				for _, kv := range cfg.Configs {
					if kv.Key == key {
						got = kv.MaybeValue()
					}
				}
			}
		}
		if got == value {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("kafkatest: %s %s is %q after 30s, want %q (err %v)", topic, key, got, value, err)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition with a deadline
	}
}
