package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/kafkatest"
)

// env is one test's Kafka world: the shared broker, and topics of its own.
type env struct {
	t       testing.TB
	cluster *kafkatest.Cluster
	topics  events.Topics
	seeds   []kgo.Opt
}

func newEnv(t testing.TB, partitions int32) *env {
	t.Helper()
	c := kafkatest.Start(t)
	topics := kafkatest.Topics(t)
	adm := c.Admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := topics.Ensure(ctx, adm, 0, partitions, 1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = adm.DeleteTopics(ctx, topics.Requests, topics.DLQ, topics.Batches, topics.Intents, topics.Outcomes, topics.WebhooksRaw,
			topics.BatchStates, topics.TrackerState)
	})
	return &env{t: t, cluster: c, topics: topics, seeds: []kgo.Opt{kgo.SeedBrokers(c.Seeds...)}}
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("PAYOUTD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// intent is a valid request for tests.
func intent(id, account, currency, amount, address string) events.PayoutRequested {
	return events.PayoutRequested{IntentID: id, Account: account, Currency: currency, Amount: events.MustAmount(amount), Address: address}
}

// produceRaw writes records to the requests topic and waits for the acks.
func (e *env) produceRaw(recs ...*kgo.Record) {
	e.t.Helper()
	cl := e.cluster.Client(e.t, kgo.DefaultProduceTopic(e.topics.Requests), kgo.ProducerLinger(5*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) produce(intents ...events.PayoutRequested) {
	e.t.Helper()
	recs := make([]*kgo.Record, len(intents))
	for i, in := range intents {
		b, err := json.Marshal(in)
		if err != nil {
			e.t.Fatal(err)
		}
		recs[i] = &kgo.Record{Key: []byte(in.IntentID), Value: b}
	}
	e.produceRaw(recs...)
}

// reader follows a topic read_committed from the start, in the background,
// collecting every record; tests wait on what it has seen.
type reader struct {
	mu      sync.Mutex
	records []*kgo.Record
	changed chan struct{}
}

func (e *env) follow(topic string) *reader {
	e.t.Helper()
	r := &reader{changed: make(chan struct{}, 1)}
	cl := e.cluster.Client(e.t, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	e.t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			f := cl.PollFetches(ctx)
			if len(f.Records()) == 0 {
				continue
			}
			r.mu.Lock()
			r.records = append(r.records, f.Records()...)
			r.mu.Unlock()
			select {
			case r.changed <- struct{}{}:
			default:
			}
		}
	}()
	return r
}

func (r *reader) snapshot() []*kgo.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*kgo.Record(nil), r.records...)
}

// waitFor waits until cond holds for the records seen, or fails after timeout.
func (r *reader) waitFor(t *testing.T, timeout time.Duration, what string, cond func([]*kgo.Record) bool) []*kgo.Record {
	t.Helper()
	deadline := time.After(timeout)
	for {
		recs := r.snapshot()
		if cond(recs) {
			return recs
		}
		select {
		case <-r.changed:
		case <-time.After(100 * time.Millisecond): // conditions may also depend on time
		case <-deadline:
			t.Fatalf("timed out after %v waiting for %s (have %d records: %s)", timeout, what, len(recs), recordTypes(recs))
		}
	}
}

// batches decodes BatchPlanned records, failing on anything else.
func batches(t *testing.T, recs []*kgo.Record) []events.BatchPlanned {
	t.Helper()
	var out []events.BatchPlanned
	for _, r := range recs {
		_, e, err := events.Decode(r)
		if err != nil {
			t.Fatalf("batches topic record: %v", err)
		}
		out = append(out, e.(events.BatchPlanned))
	}
	return out
}

func itemCount(bs []events.BatchPlanned) int {
	n := 0
	for _, b := range bs {
		n += len(b.Items)
	}
	return n
}

// runComponent runs fn until the test ends or stop is called; stop returns fn's error.
func runComponent(t testing.TB, fn func(context.Context) error) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- fn(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(time.Minute):
				err = fmt.Errorf("component did not stop within a minute")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func dlqReasons(recs []*kgo.Record) map[string]string {
	out := map[string]string{}
	for _, r := range recs {
		for _, h := range r.Headers {
			if h.Key == "payoutd-dlq-reason" {
				out[string(r.Key)] = string(h.Value)
			}
		}
	}
	return out
}

// recordTypes counts records by ce_type (or "other"), for a failure message
// that says what did come.
func recordTypes(recs []*kgo.Record) string {
	n := map[string]int{}
	for _, r := range recs {
		typ := "other"
		for _, h := range r.Headers {
			if h.Key == events.HeaderType {
				typ = strings.TrimPrefix(string(h.Value), "payoutd.")
			}
		}
		n[typ]++
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, n[k])
	}
	return strings.Join(parts, " ")
}
