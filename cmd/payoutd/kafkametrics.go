package main

import (
	"net"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kafkaMetrics is franz-go's client telemetry (the same hooks kprom uses),
// aggregated over every client of the process. kprom itself is made for one
// client per Metrics and panics when a second client registers, while each
// payoutd component opens several clients from one shared option list
// (a session's client, the dedup-index reader, a replacement session).
type kafkaMetrics struct {
	connects    *prometheus.CounterVec
	disconnects *prometheus.CounterVec
	writeBytes  *prometheus.CounterVec
	readBytes   *prometheus.CounterVec
	throttle    *prometheus.HistogramVec
	latency     *prometheus.HistogramVec
	produced    *prometheus.CounterVec
	producedB   *prometheus.CounterVec
	fetched     *prometheus.CounterVec
	fetchedB    *prometheus.CounterVec
}

var (
	_ kgo.HookBrokerConnect       = (*kafkaMetrics)(nil)
	_ kgo.HookBrokerDisconnect    = (*kafkaMetrics)(nil)
	_ kgo.HookBrokerWrite         = (*kafkaMetrics)(nil)
	_ kgo.HookBrokerRead          = (*kafkaMetrics)(nil)
	_ kgo.HookBrokerThrottle      = (*kafkaMetrics)(nil)
	_ kgo.HookBrokerE2E           = (*kafkaMetrics)(nil)
	_ kgo.HookProduceBatchWritten = (*kafkaMetrics)(nil)
	_ kgo.HookFetchBatchRead      = (*kafkaMetrics)(nil)
)

func newKafkaMetrics(reg prometheus.Registerer) *kafkaMetrics {
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "payoutd", Subsystem: "kafka", Name: name, Help: help}, labels)
		reg.MustRegister(c)
		return c
	}
	hv := func(name, help string, labels ...string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "payoutd", Subsystem: "kafka", Name: name, Help: help,
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, labels)
		reg.MustRegister(h)
		return h
	}
	return &kafkaMetrics{
		connects:    cv("connects_total", "Broker connection attempts, by node and result.", "node_id", "result"),
		disconnects: cv("disconnects_total", "Broker disconnections, by node.", "node_id"),
		writeBytes:  cv("write_bytes_total", "Bytes written to brokers.", "node_id"),
		readBytes:   cv("read_bytes_total", "Bytes read from brokers.", "node_id"),
		throttle:    hv("throttle_seconds", "Throttles imposed by brokers.", "node_id"),
		latency:     hv("request_duration_seconds", "Request round trips (write to response read), by node.", "node_id"),
		produced:    cv("produce_records_total", "Records produced, by topic.", "topic"),
		producedB:   cv("produce_bytes_total", "Uncompressed bytes produced, by topic.", "topic"),
		fetched:     cv("fetch_records_total", "Records fetched, by topic.", "topic"),
		fetchedB:    cv("fetch_bytes_total", "Uncompressed bytes fetched, by topic.", "topic"),
	}
}

func node(m kgo.BrokerMetadata) string { return strconv.Itoa(int(m.NodeID)) }

func (k *kafkaMetrics) OnBrokerConnect(m kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	res := "ok"
	if err != nil {
		res = "error"
	}
	k.connects.WithLabelValues(node(m), res).Inc()
}

func (k *kafkaMetrics) OnBrokerDisconnect(m kgo.BrokerMetadata, _ net.Conn) {
	k.disconnects.WithLabelValues(node(m)).Inc()
}

func (k *kafkaMetrics) OnBrokerWrite(m kgo.BrokerMetadata, _ int16, n int, _, _ time.Duration, _ error) {
	k.writeBytes.WithLabelValues(node(m)).Add(float64(n))
}

func (k *kafkaMetrics) OnBrokerRead(m kgo.BrokerMetadata, _ int16, n int, _, _ time.Duration, _ error) {
	k.readBytes.WithLabelValues(node(m)).Add(float64(n))
}

func (k *kafkaMetrics) OnBrokerThrottle(m kgo.BrokerMetadata, d time.Duration, _ bool) {
	k.throttle.WithLabelValues(node(m)).Observe(d.Seconds())
}

func (k *kafkaMetrics) OnBrokerE2E(m kgo.BrokerMetadata, _ int16, e kgo.BrokerE2E) {
	if e.Err() == nil {
		k.latency.WithLabelValues(node(m)).Observe(e.DurationE2E().Seconds())
	}
}

func (k *kafkaMetrics) OnProduceBatchWritten(_ kgo.BrokerMetadata, topic string, _ int32, m kgo.ProduceBatchMetrics) {
	k.produced.WithLabelValues(topic).Add(float64(m.NumRecords))
	k.producedB.WithLabelValues(topic).Add(float64(m.UncompressedBytes))
}

func (k *kafkaMetrics) OnFetchBatchRead(_ kgo.BrokerMetadata, topic string, _ int32, m kgo.FetchBatchMetrics) {
	k.fetched.WithLabelValues(topic).Add(float64(m.NumRecords))
	k.fetchedB.WithLabelValues(topic).Add(float64(m.UncompressedBytes))
}
