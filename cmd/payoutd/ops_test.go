package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/internal/kafkatest"
	"github.com/payoutd/payoutd/pipeline"
)

func getReadyz(t *testing.T, base, query string) (int, string) {
	t.Helper()
	resp, err := http.Get(base + "/readyz" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// /readyz answers from Health: not ready while any part is not, or a
// component stopped, saying which and why; ?verbose lists every part.
func TestReadyzAnswersFromHealth(t *testing.T) {
	t.Parallel()
	h := pipeline.NewHealth()
	running := true
	ops, err := newOpsServer("127.0.0.1:0", newMetrics(), h, func() (bool, string) {
		if running {
			return true, ""
		}
		return false, "tracker is not running"
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ops.serve(slog.New(slog.DiscardHandler))
	t.Cleanup(ops.close)

	h.Ready("batcher")
	h.Ready(pipeline.PartIngressProducer)
	if code, body := getReadyz(t, ops.url(), ""); code != http.StatusOK || strings.TrimSpace(body) != "ready" {
		t.Fatalf("all ready: %d %q", code, body)
	}
	h.NotReady(pipeline.PartIngressProducer, "producer fenced; replacing it")
	code, body := getReadyz(t, ops.url(), "")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "ingress/producer: producer fenced") || strings.Contains(body, "batcher") {
		t.Fatalf("producer fenced: %d %q; want 503 naming ingress/producer and why, and only it", code, body)
	}
	code, body = getReadyz(t, ops.url(), "?verbose")
	var rep readyzReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil || code != http.StatusServiceUnavailable || rep.Ready || len(rep.Parts) != 2 {
		t.Fatalf("verbose: %d %s (%v)", code, body, err)
	}
	for _, p := range rep.Parts {
		if p.Part == "batcher" && !p.Ready || p.Part == pipeline.PartIngressProducer && (p.Ready || p.Reason == "") {
			t.Fatalf("verbose part %+v", p)
		}
	}
	h.Ready(pipeline.PartIngressProducer)
	running = false
	if code, body := getReadyz(t, ops.url(), ""); code != http.StatusServiceUnavailable || !strings.Contains(body, "tracker is not running") {
		t.Fatalf("component stopped: %d %q", code, body)
	}
}

// buildStack gives every selected component the process's one Health, so
// /readyz sees each of them: with Kafka unreachable, every component's part
// is listed not ready (and the probe still answers at once).
func TestStackWiresOneHealthIntoEveryComponent(t *testing.T) {
	t.Parallel()
	cl, err := calypso.NewClient(calypso.Config{BaseURL: "http://127.0.0.1:1", Account: "acc", APIKey: "k", APISecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	tt := kafkatest.Topics(t)
	st, err := buildStack(stackConfig{
		components: allComponents, topics: tt, log: log, metrics: newMetrics(),
		kafka:    []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, // nothing listens there
		accounts: pipeline.Accounts{"acc": cl},
		batcher:  pipeline.BatcherConfig{Group: "g-b", TransactionalID: "t-b"}, submitter: pipeline.SubmitterConfig{Group: "g-s", TransactionalID: "t-s"},
		tracker: pipeline.TrackerConfig{TransactionalID: "t-t"}, ingress: pipeline.IngressConfig{Keys: calypso.WebhookKeys{"wk": "ws"}},
		ingressAddr: "127.0.0.1:0",
	})
	if err != nil {
		t.Fatal(err)
	}
	ops, err := newOpsServer("127.0.0.1:0", newMetrics(), st.health, st.ready, log)
	if err != nil {
		t.Fatal(err)
	}
	ops.serve(log)
	t.Cleanup(ops.close)
	st.start()
	t.Cleanup(func() { _ = st.stop(10 * time.Second) })

	want := []string{"batcher", "submitter", "tracker", pipeline.PartIngressProducer, pipeline.PartIngressDedup}
	deadline := time.Now().Add(30 * time.Second)
	for {
		t0 := time.Now()
		code, body := getReadyz(t, ops.url(), "?verbose")
		if took := time.Since(t0); took > time.Second {
			t.Fatalf("/readyz took %s: it must not wait for Kafka", took)
		}
		var rep readyzReport
		_ = json.Unmarshal([]byte(body), &rep)
		listed := map[string]bool{}
		for _, p := range rep.Parts {
			if !p.Ready && p.Reason != "" {
				listed[p.Part] = true
			}
		}
		all := code == http.StatusServiceUnavailable
		for _, w := range want {
			all = all && listed[w]
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz?verbose after 30s: %d %s; want %v listed not ready", code, body, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
