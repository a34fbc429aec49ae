package pipeline_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
)

// watchedBody is a request body that records whether anyone read it.
type watchedBody struct {
	r    io.Reader
	read atomic.Bool
}

func (b *watchedBody) Read(p []byte) (int, error) { b.read.Store(true); return b.r.Read(p) }

// A request without a known Key, or announcing a body over the cap, is
// refused before a byte of its body is read: unauthenticated uploads cost
// no memory.
func TestIngressRefusesBeforeReadingTheBody(t *testing.T) {
	t.Parallel()
	in, err := pipeline.NewIngress(pipeline.IngressConfig{Keys: calypso.WebhookKeys{whPubKey: whSecret}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	url := "http://ingress" + pipeline.WebhookPath
	body := bytes.Repeat([]byte("x"), 1<<20)
	cases := []struct {
		name      string
		key, sign string
		length    int64
		want      int
	}{
		{"no Key", "", "ab", 1 << 20, http.StatusUnauthorized},
		{"no Sign", whPubKey, "", 1 << 20, http.StatusUnauthorized},
		{"unknown Key", "wh-pub-unknown", strings.Repeat("ab", 64), 1 << 20, http.StatusUnauthorized},
		{"known Key, 1 MiB announced", whPubKey, strings.Repeat("ab", 64), 1 << 20, http.StatusRequestEntityTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := &watchedBody{r: bytes.NewReader(body)}
			r := httptest.NewRequest(http.MethodPost, url, b)
			r.ContentLength = c.length
			if c.key != "" {
				r.Header.Set(calypso.HeaderKey, c.key)
			}
			if c.sign != "" {
				r.Header.Set(calypso.HeaderSign, c.sign)
			}
			rec := httptest.NewRecorder()
			in.ServeHTTP(rec, r)
			if rec.Code != c.want || b.read.Load() {
				t.Fatalf("status %d, body read %v; want %d and the body unread", rec.Code, b.read.Load(), c.want)
			}
		})
	}
}

// The body cap is 256 KiB by default, configurable, and never at or above
// the producer's record limit.
func TestIngressBodyCap(t *testing.T) {
	t.Parallel()
	in, err := pipeline.NewIngress(pipeline.IngressConfig{Keys: calypso.WebhookKeys{whPubKey: whSecret}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	big := append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("x"), 300<<10)...), `"}`...)
	r := signed(http.MethodPost, "http://ingress"+pipeline.WebhookPath, big, whPubKey, whSecret)
	r.ContentLength = -1 // unknown: the cap must hold while reading, too
	rec := httptest.NewRecorder()
	in.ServeHTTP(rec, r)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("300 KiB authentic body: %d, want 413 (default cap 256 KiB)", rec.Code)
	}
	if _, err := pipeline.NewIngress(pipeline.IngressConfig{Keys: calypso.WebhookKeys{whPubKey: whSecret}, MaxBody: pipeline.MaxRecordBytes}); err == nil {
		t.Fatal("a body cap at the producer's record limit was accepted")
	}
}

// Beyond MaxConcurrent requests in progress, the next is answered 503 at
// once, with Retry-After, without reading its body.
func TestIngressBoundsConcurrentRequests(t *testing.T) {
	t.Parallel()
	in, err := pipeline.NewIngress(pipeline.IngressConfig{Keys: calypso.WebhookKeys{whPubKey: whSecret}, MaxConcurrent: 2, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	url := "http://ingress" + pipeline.WebhookPath
	started := make(chan struct{}, 2)
	var pipes []*io.PipeWriter
	var wg sync.WaitGroup
	for range 2 {
		pr, pw := io.Pipe()
		pipes = append(pipes, pw)
		r := httptest.NewRequest(http.MethodPost, url, readNotifier{pr, started})
		r.Header.Set(calypso.HeaderKey, whPubKey)
		r.Header.Set(calypso.HeaderSign, strings.Repeat("ab", 64))
		wg.Go(func() { in.ServeHTTP(httptest.NewRecorder(), r) })
	}
	for range 2 {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("the two slow requests never started reading")
		}
	}
	b := &watchedBody{r: bytes.NewReader([]byte("{}"))}
	r := httptest.NewRequest(http.MethodPost, url, b)
	r.Header.Set(calypso.HeaderKey, whPubKey)
	r.Header.Set(calypso.HeaderSign, calypso.SignBody(whSecret, []byte("{}")))
	rec := httptest.NewRecorder()
	t0 := time.Now()
	in.ServeHTTP(rec, r)
	if took := time.Since(t0); rec.Code != http.StatusServiceUnavailable || took > time.Second || b.read.Load() || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("third request: %d after %s, body read %v, Retry-After %q; want 503 at once, unread, with Retry-After",
			rec.Code, took, b.read.Load(), rec.Header().Get("Retry-After"))
	}
	for _, pw := range pipes {
		_ = pw.CloseWithError(errors.New("client gone"))
	}
	wg.Wait()
	if in.Stats.Overloaded.Load() != 1 {
		t.Fatalf("%d overloaded counted, want 1", in.Stats.Overloaded.Load())
	}
}

type readNotifier struct {
	r       io.Reader
	started chan<- struct{}
}

func (n readNotifier) Read(p []byte) (int, error) {
	select {
	case n.started <- struct{}{}:
	default:
	}
	return n.r.Read(p)
}

// startIngress runs an ingress on e's topics until the test ends.
func startIngress(t *testing.T, e *env, mod func(*pipeline.IngressConfig), kafka ...kgo.Opt) (*pipeline.Ingress, *pipeline.Health, func() error) {
	t.Helper()
	h := pipeline.NewHealth()
	cfg := pipeline.IngressConfig{Topics: e.topics, Keys: calypso.WebhookKeys{whPubKey: whSecret}, AckTimeout: 15 * time.Second,
		Health: h, Logger: testLogger(t)}
	if mod != nil {
		mod(&cfg)
	}
	in, err := pipeline.NewIngress(cfg, append(append([]kgo.Opt{}, e.seeds...), kafka...)...)
	if err != nil {
		t.Fatal(err)
	}
	stop := runComponent(t, in.Run)
	waitReady(t, h, pipeline.PartIngressProducer, 60*time.Second)
	waitReady(t, h, pipeline.PartIngressDedup, 60*time.Second)
	return in, h, stop
}

func waitReady(t *testing.T, h *pipeline.Health, part string, timeout time.Duration) {
	t.Helper()
	waitUntil(t, timeout, part+" ready", func() bool { return partReady(h, part) })
}

func partReady(h *pipeline.Health, part string) bool {
	_, parts := h.Check()
	for _, p := range parts {
		if p.Part == part {
			return p.Ready
		}
	}
	return false
}

func post(in http.Handler, body []byte) int {
	rec := httptest.NewRecorder()
	in.ServeHTTP(rec, signed(http.MethodPost, "http://ingress"+pipeline.WebhookPath, body, whPubKey, whSecret))
	return rec.Code
}

// One authentic webhook too large for the archive topic is refused alone:
// the webhooks sent with it are all archived and answered 200.
func TestIngressTooLargeWebhookSparesItsNeighbours(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	adm := e.cluster.Admin(t)
	limit := "8192"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: &limit}}, e.topics.WebhooksRaw); err != nil {
		t.Fatal(err)
	}
	e.cluster.WaitTopicConfig(t, e.topics.WebhooksRaw, "max.message.bytes", limit)
	raw := e.follow(e.topics.WebhooksRaw)
	in, _, _ := startIngress(t, e, nil)

	batch := uuid.NewString()
	bigBody := webhookBody(99, calypso.EventPayoutChangeStatus, "950099", "IN_PROGRESS", batch)
	// Random padding: the producer compresses, and the limit counts what
	// the broker receives.
	pad := make([]byte, 16<<10)
	_, _ = rand.Read(pad)
	bigBody = append(bigBody[:len(bigBody)-1], fmt.Appendf(nil, `,"pad":%q}`, base64.StdEncoding.EncodeToString(pad))...)
	const n = 20
	codes := make([]int, n+1)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			codes[i] = post(in, webhookBody(i+1, calypso.EventPayoutChangeStatus, fmt.Sprint(950000+i), "IN_PROGRESS", batch))
		})
	}
	wg.Go(func() { codes[n] = post(in, bigBody) })
	wg.Wait()
	for i, c := range codes[:n] {
		if c != http.StatusOK {
			t.Fatalf("neighbour %d answered %d; codes %v", i, c, codes)
		}
	}
	if codes[n] != http.StatusRequestEntityTooLarge {
		t.Fatalf("the too-large webhook answered %d, want 413", codes[n])
	}
	raw.waitFor(t, 30*time.Second, "every neighbour archived", func(r []*kgo.Record) bool { return len(rawIDs(t, r)) == n })
}

// An authentic webhook the strict parser refuses is archived byte for byte,
// answered 200, counted as unmapped and alerted; nothing typed is made up.
func TestIngressArchivesAuthenticWebhooksTheParserRefuses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	raw, outcomes := e.follow(e.topics.WebhooksRaw), e.follow(e.topics.Outcomes)
	in, _, _ := startIngress(t, e, nil)
	bodies := map[string][]byte{
		"odd createdDate": []byte(`{"requestId":"sub-1","id":7001,"createdDate":"2026/01/02 10:00","eventType":"PAYOUT_CHANGE_STATUS","data":{"parentExternalId":960001,"payoutStatus":"COMPLETED"}}`),
		"data null":       []byte(`{"requestId":"sub-1","id":7002,"createdDate":"2026-01-02T10:00:00","eventType":"PAYOUT_CHANGE_STATUS","data":null}`),
		"not JSON":        []byte(`<xml/>`),
	}
	for name, b := range bodies {
		t.Run(name, func(t *testing.T) {
			if c := post(in, b); c != http.StatusOK {
				t.Fatalf("status %d, want 200", c)
			}
		})
	}
	got := raw.waitFor(t, 30*time.Second, "three archived webhooks", func(r []*kgo.Record) bool { return len(r) >= 3 })
	archived := map[string]bool{}
	for _, r := range got {
		archived[string(r.Value)] = true
	}
	for name, b := range bodies {
		if !archived[string(b)] {
			t.Fatalf("%s not archived byte for byte", name)
		}
	}
	alerts := outcomes.waitFor(t, 30*time.Second, "an alert per refused webhook", func(r []*kgo.Record) bool { return len(r) >= 3 })
	set := mustSchemas(t)
	for _, d := range decodeAll(t, set, alerts) {
		a, ok := d.ev.(events.Alert)
		if !ok || a.Kind != pipeline.AlertWebhookUnmapped || d.meta.Source != pipeline.SourceIngressAlerts {
			t.Fatalf("outcomes got %s from %s, want only %s alerts", d.meta.Type, d.meta.Source, pipeline.AlertWebhookUnmapped)
		}
	}
	if n := in.Stats.Unmapped.Load(); n != 3 {
		t.Fatalf("%d unmapped counted, want 3", n)
	}
}

// A repeat of an archived webhook (Calypso signs only the body, so a
// captured request replays as is) is answered 200 without a second raw
// record, also by a restarted ingress.
func TestIngressDropsRepeatsWithinTheDedupWindow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	raw := e.follow(e.topics.WebhooksRaw)
	in, _, stop := startIngress(t, e, nil)
	batch := uuid.NewString()
	first := webhookBody(1, calypso.EventPayoutChangeStatus, "970001", "IN_PROGRESS", batch)
	second := webhookBody(2, calypso.EventPayoutChangeStatus, "970001", "COMPLETED", batch)
	for i, b := range [][]byte{first, first, second} {
		if c := post(in, b); c != http.StatusOK {
			t.Fatalf("post %d: %d", i, c)
		}
	}
	if in.Stats.Duplicates.Load() != 1 {
		t.Fatalf("%d duplicates counted, want 1", in.Stats.Duplicates.Load())
	}
	raw.waitFor(t, 30*time.Second, "two archived", func(r []*kgo.Record) bool { return len(r) >= 2 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// A new instance learns the window from the raw topic.
	again, _, _ := startIngress(t, e, nil)
	waitUntil(t, 30*time.Second, "the restarted ingress answers the replay as a duplicate", func() bool {
		return post(again, first) == http.StatusOK && again.Stats.Duplicates.Load() == 1
	})
	// A fence: a new webhook archived after the replay proves nothing of the
	// replay was archived before it.
	third := webhookBody(3, calypso.EventPayoutChangeStatus, "970002", "COMPLETED", batch)
	if c := post(again, third); c != http.StatusOK {
		t.Fatalf("third webhook: %d", c)
	}
	got := raw.waitFor(t, 30*time.Second, "three archived", func(r []*kgo.Record) bool { return len(r) >= 3 })
	if len(got) != 3 {
		t.Fatalf("%d raw records, want 3 (no repeat archived)", len(got))
	}
}

// A webhook whose raw record reached Kafka but whose typed records did not
// (written side by side, one may fail) is mended by its next delivery: the
// typed event is written, the raw record is not written again.
func TestIngressRepeatOfAnArchivedOnlyWebhookWritesItsTypedEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	raw, outcomes := e.follow(e.topics.WebhooksRaw), e.follow(e.topics.Outcomes)
	body := webhookBody(1, calypso.EventPayoutChangeStatus, "971001", "COMPLETED", uuid.NewString())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := e.cluster.Client(t)
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: e.topics.WebhooksRaw, Key: []byte("971001"), Value: body}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	in, _, _ := startIngress(t, e, nil)
	if c := post(in, body); c != http.StatusOK {
		t.Fatalf("redelivery: %d", c)
	}
	typed := outcomes.waitFor(t, 30*time.Second, "the typed event", func(r []*kgo.Record) bool { return len(r) >= 1 })
	if m, _, err := events.Decode(typed[0]); err != nil || m.Type != events.TypePayoutStatusChanged {
		t.Fatalf("typed record %v: %v", m.Type, err)
	}
	if c := post(in, body); c != http.StatusOK || in.Stats.Duplicates.Load() != 2 {
		t.Fatalf("second redelivery: %d, %d duplicates", c, in.Stats.Duplicates.Load())
	}
	// Fence: a new webhook archived after both proves nothing else was.
	if c := post(in, webhookBody(2, calypso.EventPayoutChangeStatus, "971002", "COMPLETED", "b")); c != http.StatusOK {
		t.Fatalf("fence webhook: %d", c)
	}
	got := raw.waitFor(t, 30*time.Second, "the fence archived", func(r []*kgo.Record) bool { return len(r) >= 2 })
	typed = outcomes.waitFor(t, 30*time.Second, "the fence typed", func(r []*kgo.Record) bool { return len(r) >= 2 })
	if len(got) != 2 || len(typed) != 2 {
		t.Fatalf("%d raw and %d typed records, want 2 and 2 (no raw repeat, one typed rewrite)", len(got), len(typed))
	}
}
