package main

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

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
	v, commit, _ := buildVersion()
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "payoutd", Name: "build_info", Help: "Always 1; the labels say which build is running.",
		ConstLabels: prometheus.Labels{"version": v, "commit": commit, "goversion": runtime.Version()},
	}, func() float64 { return 1 }))
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
	const help = "Batches handled by the submitter, by result (recovered: found by idempotency key; undecided: parked because its payout may exist; " +
		"quarantined: contradicts its payout; replanned: one row refused, the rest planned again; skipped: consumed again after a final outcome)."
	for r, v := range map[string]*atomic.Int64{
		"submitted": &s.Submitted, "recovered": &s.Recovered, "rejected": &s.Rejected, "deferred": &s.Deferred,
		"undecided": &s.Undecided, "quarantined": &s.Quarantined, "replanned": &s.Replanned, "skipped": &s.Skipped,
	} {
		m.counter("submitter_batches_total", help, res(r), v)
	}
	m.counter("calypso_errors_total", "Retryable Calypso failures waited out, by component.", prometheus.Labels{"component": "submitter"}, &s.CalypsoErrs)
	m.counter("transactions_total", "Kafka transactions by component and result.", txn("submitter", "commit"), &s.Commits)
	m.counter("transactions_total", "Kafka transactions by component and result.", txn("submitter", "abort"), &s.Aborts)
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "payoutd", Name: "submitter_deferred_batches",
			Help: "Batches deferred (funds, fees, Calypso unavailable) and waiting for their next try."},
			func() float64 { return float64(sub.Deferred()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "payoutd", Name: "submitter_undecided_batches",
			Help: "Batches parked as undecided: their create may have reached Calypso and no look-up has found or ruled out the payout yet."},
			func() float64 { n, _ := sub.Undecided(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "payoutd", Name: "submitter_oldest_undecided_age_seconds",
			Help: "How long the oldest undecided batch has been undecided (0: none)."},
			func() float64 {
				if _, oldest := sub.Undecided(); !oldest.IsZero() {
					return time.Since(oldest).Seconds()
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "payoutd", Name: "submitter_quarantined_batches",
			Help: "Batches this process quarantined because the payout under their key contradicts them (see the DLQ and BATCH_CONTRADICTED alerts)."},
			func() float64 { return float64(sub.QuarantinedBatches()) }),
		laneCollector{sub: sub, desc: prometheus.NewDesc("payoutd_submitter_lane_state",
			"Each account lane's state: 1 for the state it is in (ok, failing, stopped), 0 for the others.", []string{"account", "state"}, nil)},
	)
}

// laneCollector reports the submitter's lanes as they are at scrape time.
type laneCollector struct {
	sub  *pipeline.Submitter
	desc *prometheus.Desc
}

func (c laneCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c laneCollector) Collect(ch chan<- prometheus.Metric) {
	for _, l := range c.sub.Lanes() {
		for _, st := range []pipeline.LaneState{pipeline.LaneOK, pipeline.LaneFailing, pipeline.LaneStopped} {
			v := 0.0
			if l.State == st {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, l.Account, string(st))
		}
	}
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
	m.counter("ingress_webhooks_untyped_total", "Webhooks archived raw only, by why.", prometheus.Labels{"why": "duplicate"}, &s.Duplicates)
	m.counter("ingress_overloaded_total", "Webhooks answered 503 at once because --ingress-max-concurrent were in progress.", nil, &s.Overloaded)
	m.counter("ingress_kafka_writes_total", "Webhooks written to Kafka (typed, then raw), by result.", prometheus.Labels{"result": "ok"}, &s.Commits)
	m.counter("ingress_kafka_writes_total", "Webhooks written to Kafka (typed, then raw), by result.", prometheus.Labels{"result": "failed"}, &s.WriteFailures)
	m.counter("ingress_producer_restarts_total", "Ingress producers replaced after a fatal error or a stall.", nil, &s.ProducerRestarts)
}

func (m *metrics) tracker(t *pipeline.Tracker) {
	s := &t.Stats
	m.counter("tracker_polls_total", "payout/mass calls for payouts silent too long.", nil, &s.Polls)
	m.counter("tracker_polled_states_total", "Status events published from polls (webhooks that never came).", nil, &s.Polled)
	m.counter("tracker_payouts_resolved_total", "Payouts whose intents were resolved.", nil, &s.Resolved)
	m.counter("tracker_intents_total", "Intents resolved, by outcome.", prometheus.Labels{"outcome": "settled"}, &s.Settled)
	m.counter("tracker_intents_total", "Intents resolved, by outcome.", prometheus.Labels{"outcome": "failed"}, &s.Failed)
	m.counter("tracker_errors_total", "Calypso look-ups that failed and are retried with a growing wait.", nil, &s.Errors)
	m.gauge("tracker_open_payouts", "Open entries in the tracker's state stores (payouts being followed, rejected batches being checked).", nil, &s.Open)
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "payoutd", Name: "tracker_oldest_open_payout_age_seconds",
		Help: "How long ago the oldest payout still open was first heard of (0: none open)."},
		func() float64 {
			if ns := s.OldestOpen.Load(); ns != 0 {
				return time.Since(time.Unix(0, ns)).Seconds()
			}
			return 0
		}))
	m.gauge("tracker_partitions", "Outcomes partitions this tracker instance owns.", nil, &s.Partitions)
	m.counter("tracker_restores_total", "Restores of state stores from the changelog (assignments, aborted transactions).", nil, &s.Restores)
	m.counter("tracker_restored_records_total", "Changelog records read by restores.", nil, &s.Restored)
	m.counter("tracker_lookups_total", "Calypso look-ups besides polls: withdrawal list pages, rejected-batch checks.", nil, &s.Lookups)
	m.counter("tracker_unmatched_payouts_total", "Foreign payouts (statuses without a PayoutSubmitted) given up on.", nil, &s.Unmatched)
	for kind, n := range s.Alerts {
		m.counter("tracker_alerts_total", "Alerts the tracker raised, by kind.", prometheus.Labels{"kind": string(kind)}, n)
	}
	m.counter("transactions_total", "Kafka transactions by component and result.", txn("tracker", "commit"), &s.Commits)
	m.counter("transactions_total", "Kafka transactions by component and result.", txn("tracker", "abort"), &s.Aborts)
}

// lagCollector reports consumer lag of payoutd's consumer groups as a
// read_committed consumer sees it (lagReader: commit markers and aborted
// records do not count), asked at scrape time, bounded by a short timeout so
// a slow cluster cannot stall the scrape.
type lagCollector struct {
	lag    *lagReader
	groups []string
	desc   *prometheus.Desc
}

func newLagCollector(lag *lagReader, groups ...string) *lagCollector {
	return &lagCollector{lag: lag, groups: groups, desc: prometheus.NewDesc("payoutd_consumer_lag",
		"Committed records a group has not consumed yet (0 when caught up).", []string{"group", "topic", "partition"}, nil)}
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	lags, err := c.lag.Lag(ctx, c.groups...)
	if err != nil {
		return
	}
	for group, topics := range lags {
		for topic, ps := range topics {
			for p, n := range ps {
				ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), group, topic, strconv.Itoa(int(p)))
			}
		}
	}
}
