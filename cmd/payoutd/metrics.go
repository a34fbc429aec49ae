package main

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/payoutd/payoutd/pipeline"
)

// metrics is the process's Prometheus registry. Component counters are read
// from the components' own Stats at scrape time (CounterFunc/GaugeFunc), so
// the pipeline stays free of Prometheus and the numbers cannot drift apart.
type metrics struct {
	reg          *prometheus.Registry
	calypsoCalls *prometheus.HistogramVec
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	calls := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "payoutd", Name: "calypso_call_duration_seconds",
		Help:    "Calypso API attempts by operation and outcome (ok, Calypso's error code, http_<status>, transport, malformed).",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"op", "outcome"})
	reg.MustRegister(calls)
	return &metrics{reg: reg, calypsoCalls: calls}
}

// observeCalypso is the Calypso clients' attempt observer.
func (m *metrics) observeCalypso(op, outcome string, took time.Duration) {
	m.calypsoCalls.WithLabelValues(op, outcome).Observe(took.Seconds())
}

func (m *metrics) counter(name, help string, labels prometheus.Labels, v *atomic.Int64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "payoutd", Name: name, Help: help, ConstLabels: labels,
	}, func() float64 { return float64(v.Load()) }))
}

func (m *metrics) gauge(name, help string, labels prometheus.Labels, v *atomic.Int64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "payoutd", Name: name, Help: help, ConstLabels: labels,
	}, func() float64 { return float64(v.Load()) }))
}

func txn(component, result string) prometheus.Labels {
	return prometheus.Labels{"component": component, "result": result}
}

func (m *metrics) batcher(b *pipeline.Batcher) {
	s := &b.Stats
	m.counter("batcher_requests_total", "Requests consumed and committed by the batcher.", nil, &s.Requests)
	m.counter("batcher_intents_total", "Intents put into planned batches.", nil, &s.Intents)
	m.counter("batcher_batches_total", "Batches planned.", nil, &s.Batches)
	m.counter("batcher_dlq_total", "Requests sent to the DLQ, duplicates included.", nil, &s.DLQ)
	for reason, n := range s.DLQBy {
		m.counter("batcher_dlq_by_reason_total", "Requests sent to the DLQ, by reason (duplicate: the intent was already batched).",
			prometheus.Labels{"reason": string(reason)}, n)
	}
	m.counter("transactions_total", "Kafka transactions by component and result.", txn("batcher", "commit"), &s.Commits)
	m.counter("transactions_total", "Kafka transactions by component and result.", txn("batcher", "abort"), &s.Aborts)
	m.gauge("batcher_window_records", "Records in the batcher's open window.", nil, &s.Buffered)
	m.gauge("batcher_dedup_index_size", "Intent ids in the batcher's dedup index (its owned partitions only).", nil, &s.IndexSize)
	m.gauge("batcher_ready", "1 while the batcher makes progress; 0 while it starts, rebuilds its dedup index, keeps failing its session or cannot commit with records waiting (/readyz says why).", nil, &s.Ready)
	m.gauge("batcher_windows_aborted_in_a_row", "Windows aborted since the batcher's last commit.", nil, &s.AbortsInARow)
	m.gauge("batcher_owned_partitions", "Requests partitions this batcher instance owns.", nil, &s.OwnedPartitions)
}

func (m *metrics) submitter(sub *pipeline.Submitter) {
	s := &sub.Stats
	res := func(r string) prometheus.Labels { return prometheus.Labels{"result": r} }
	const help = "Batches handled by the submitter, by result (recovered: found by idempotency key after a 016)."
	m.counter("submitter_batches_total", help, res("submitted"), &s.Submitted)
	m.counter("submitter_batches_total", help, res("recovered"), &s.Recovered)
	m.counter("submitter_batches_total", help, res("rejected"), &s.Rejected)
	m.counter("submitter_batches_total", help, res("deferred"), &s.Deferred)
	m.counter("calypso_errors_total", "Retryable Calypso failures waited out, by component.", prometheus.Labels{"component": "submitter"}, &s.CalypsoErrs)
	m.counter("transactions_total", "Kafka transactions by component and result.", txn("submitter", "commit"), &s.Commits)
	m.counter("transactions_total", "Kafka transactions by component and result.", txn("submitter", "abort"), &s.Aborts)
}

func (m *metrics) ingress(in *pipeline.Ingress) {
	s := &in.Stats
	const help = "Webhooks answered by the ingress, by HTTP status."
	for status, v := range map[int]*atomic.Int64{
		200: &s.OK, 400: &s.BadRequest, 401: &s.Unauthorized, 404: &s.NotFound,
		405: &s.MethodNotAllowed, 413: &s.TooLarge, 503: &s.Unavailable,
	} {
		m.counter("ingress_webhooks_total", help, prometheus.Labels{"status": strconv.Itoa(status)}, v)
	}
	m.counter("ingress_webhooks_untyped_total", "Webhooks archived raw only, by why.", prometheus.Labels{"why": "unknown_type"}, &s.UnknownTypes)
	m.counter("ingress_webhooks_untyped_total", "Webhooks archived raw only, by why.", prometheus.Labels{"why": "unmapped"}, &s.Unmapped)
	m.counter("transactions_total", "Kafka transactions by component and result.", txn("ingress", "commit"), &s.Commits)
	m.counter("transactions_total", "Kafka transactions by component and result.", txn("ingress", "abort"), &s.Aborts)
}

func (m *metrics) tracker(t *pipeline.Tracker) {
	s := &t.Stats
	m.counter("tracker_polls_total", "payout/mass calls for payouts silent too long.", nil, &s.Polls)
	m.counter("tracker_polled_states_total", "Status events published from polls (webhooks that never came).", nil, &s.Polled)
	m.counter("tracker_payouts_resolved_total", "Payouts whose intents were resolved.", nil, &s.Resolved)
	m.counter("tracker_intents_total", "Intents resolved, by outcome.", prometheus.Labels{"outcome": "settled"}, &s.Settled)
	m.counter("tracker_intents_total", "Intents resolved, by outcome.", prometheus.Labels{"outcome": "failed"}, &s.Failed)
	m.counter("tracker_errors_total", "Payout handlings that failed and are retried.", nil, &s.Errors)
	m.gauge("tracker_open_payouts", "Payouts being tracked.", nil, &s.Open)
}

// lagCollector reports consumer lag of payoutd's consumer groups, asked of
// the cluster at scrape time (kadm), bounded by a short timeout so a slow
// cluster cannot stall the scrape.
type lagCollector struct {
	adm    *kadm.Client
	groups []string
	desc   *prometheus.Desc
}

func newLagCollector(adm *kadm.Client, groups ...string) *lagCollector {
	return &lagCollector{adm: adm, groups: groups, desc: prometheus.NewDesc("payoutd_consumer_lag",
		"Records between a group's committed offset and the partition's end.", []string{"group", "topic", "partition"}, nil)}
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	lags, err := c.adm.Lag(ctx, c.groups...)
	if err != nil {
		return
	}
	for group, l := range lags {
		for topic, ps := range l.Lag {
			for p, ml := range ps {
				if ml.Lag < 0 {
					continue
				}
				ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(ml.Lag), group, topic, strconv.Itoa(int(p)))
			}
		}
	}
}
