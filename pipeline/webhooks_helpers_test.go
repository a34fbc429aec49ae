package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/calypso/sandbox"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
	"github.com/payoutd/payoutd/schemas"
)

const (
	whAccount  = "0xacc0000000000000000000000000000000000001"
	whCurrency = "USDT_TRX"
	whPubKey   = "wh-pub-1"
	whSecret   = calypso.Secret("wh-secret-1")
)

// webhookWorld is a sandbox whose webhooks reach an Ingress over HTTP, a
// Tracker polling that sandbox, and readers on the topics they write.
type webhookWorld struct {
	*env
	sb       *sandbox.Sandbox
	client   *calypso.Client
	ingress  *pipeline.Ingress
	tracker  *pipeline.Tracker
	outcomes *reader
	raw      *reader
	intents  *reader
	producer *kgo.Client // for the records a test writes itself
}

type worldOptions struct {
	sandbox   func(*sandbox.Config)
	ingress   func(*pipeline.IngressConfig)
	kafka     []kgo.Opt // extra options for the ingress only
	pollAfter time.Duration
}

func newWebhookWorld(t *testing.T, o worldOptions) *webhookWorld {
	t.Helper()
	e := newEnv(t, 3)
	w := &webhookWorld{env: e, outcomes: e.follow(e.topics.Outcomes), raw: e.follow(e.topics.WebhooksRaw), intents: e.follow(e.topics.Intents),
		producer: e.cluster.Client(t, kgo.ProducerLinger(0))}

	icfg := pipeline.IngressConfig{
		Topics: e.topics, Keys: calypso.WebhookKeys{whPubKey: whSecret, "wh-pub-old": "wh-secret-old"},
		// Generous: on a loaded broker a commit can take seconds, and these
		// tests are not about timing (the Kafka-down test sets its own).
		AckTimeout: 15 * time.Second, Logger: testLogger(t), Health: pipeline.NewHealth(),
	}
	if o.ingress != nil {
		o.ingress(&icfg)
	}
	in, err := pipeline.NewIngress(icfg, append(append([]kgo.Opt{}, e.seeds...), o.kafka...)...)
	if err != nil {
		t.Fatal(err)
	}
	w.ingress = in
	runComponent(t, in.Run)
	if o.kafka == nil { // with a cut link (the Kafka-down test) it cannot get ready
		waitReady(t, icfg.Health, pipeline.PartIngressDedup, time.Minute)
	}
	hooks := httptest.NewServer(in)
	t.Cleanup(hooks.Close)

	scfg := sandbox.Config{
		Accounts: map[string]sandbox.Account{whAccount: {
			APIKey: "api-pub", APISecret: "api-secret",
			Balances: map[string]calypso.Amount{whCurrency: calypso.MustParseAmount("100000000")},
		}},
		TimeScale: 0.005, // a 2s step is 10ms, a 30s retry gap 150ms
		Webhook:   sandbox.WebhookConfig{URL: hooks.URL + pipeline.WebhookPath, RequestID: "sub-1", PublicKey: whPubKey, Secret: whSecret},
		Logger:    testLogger(t),
	}
	if o.sandbox != nil {
		o.sandbox(&scfg)
	}
	w.sb = sandbox.New(scfg)
	api := httptest.NewServer(w.sb)
	// Stop deliveries before the ingress goes away; cleanups run in reverse.
	t.Cleanup(func() { api.Close(); w.sb.Close() })

	w.client, err = calypso.NewClient(calypso.Config{BaseURL: api.URL, Account: whAccount, APIKey: "api-pub", APISecret: "api-secret", RateLimit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if o.pollAfter > 0 {
		tr, err := pipeline.NewTracker(pipeline.TrackerConfig{
			Topics: e.topics, TransactionalID: e.topics.Outcomes + ".tracker", PollAfter: o.pollAfter,
			Workers: 8, Logger: testLogger(t),
		}, pipeline.Accounts{whAccount: w.client}, e.seeds...)
		if err != nil {
			t.Fatal(err)
		}
		w.tracker = tr
		runComponent(t, tr.Run)
	}
	return w
}

// payout creates a mass payout of n recipients at the sandbox, as the
// submitter would, and publishes its BatchPlanned and PayoutSubmitted.
// forced, when set, is how it must end.
func (w *webhookWorld) payout(t *testing.T, n int, forced calypso.State) (events.BatchPlanned, string) {
	t.Helper()
	b, mp := createPayout(t, w, n, forced)
	w.publish(t, w.topics.Outcomes, submitted(b, string(mp.ID), mp.State))
	return b, string(mp.ID)
}

func (w *webhookWorld) publish(t *testing.T, topic string, evs ...events.Event) {
	t.Helper()
	var recs []*kgo.Record
	for _, e := range evs {
		r, err := events.NewRecord(topic, "payoutd/test", e)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// decoded is one typed record.
type decoded struct {
	meta events.Meta
	ev   events.Event
	rec  *kgo.Record
}

// decodeAll decodes typed records, checking each against its schema.
func decodeAll(t *testing.T, set *schemas.Set, recs []*kgo.Record) []decoded {
	t.Helper()
	out := make([]decoded, 0, len(recs))
	for _, r := range recs {
		m, e, err := events.Decode(r)
		if err != nil {
			t.Fatalf("%s[%d]@%d: %v", r.Topic, r.Partition, r.Offset, err)
		}
		if err := set.Validate(events.SchemaName(m.Type), r.Value); err != nil {
			t.Fatalf("%s %s does not match its schema: %v\n%s", m.Type, m.ID, err, r.Value)
		}
		out = append(out, decoded{m, e, r})
	}
	return out
}

func mustSchemas(t testing.TB) *schemas.Set {
	t.Helper()
	s, err := schemas.Load()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// intentOutcomes returns, per intent, the distinct ce_ids of its
// IntentSettled/IntentFailed events, and the last event of each.
func intentOutcomes(ds []decoded) (map[string]map[string]bool, map[string]events.Event) {
	ids := map[string]map[string]bool{}
	last := map[string]events.Event{}
	for _, d := range ds {
		var intent string
		switch e := d.ev.(type) {
		case events.IntentSettled:
			intent = e.IntentID
		case events.IntentFailed:
			intent = e.IntentID
		default:
			continue
		}
		if ids[intent] == nil {
			ids[intent] = map[string]bool{}
		}
		ids[intent][d.meta.ID] = true
		last[intent] = d.ev
	}
	return ids, last
}

// signed is a webhook request signed with key's secret.
func signed(method, url string, body []byte, key string, secret calypso.Secret) *http.Request {
	r := httptest.NewRequest(method, url, bytes.NewReader(body))
	r.Header.Set(calypso.HeaderKey, key)
	r.Header.Set(calypso.HeaderSign, calypso.SignBody(secret, body))
	return r
}

// webhookBody is a webhook envelope as Calypso sends it.
func webhookBody(id int, eventType, payoutID, state, batchID string) []byte {
	return fmt.Appendf(nil, `{"requestId":"sub-1","id":%d,"createdDate":"2026-01-02T10:00:00.123456","level":"INFO","service":"PAYOUT","eventType":%q,`+
		`"data":{"type":%q,"parentExternalId":%s,"payoutStatus":%q,"hash":"","currency":"USDT_TRX","idempotencyKey":%q,"externalId":"x","createdDate":"2026-01-02T09:59:00.000000"}}`,
		id, eventType, eventType, payoutID, state, batchID)
}

// partition is a network between the ingress and Kafka that a test can cut:
// while down, dials fail and open connections are closed, as when the
// brokers are unreachable. It works the same on kfake and a real cluster.
type partition struct {
	mu    sync.Mutex
	down  bool
	conns []net.Conn
}

func (p *partition) dial(ctx context.Context, network, host string) (net.Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return nil, fmt.Errorf("test partition: %s unreachable", host)
	}
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, host)
	if err == nil {
		p.conns = append(p.conns, c)
	}
	return c, err
}

func (p *partition) set(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.conns = nil
	}
}

// waitUntil polls cond until it holds or fails the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}
