package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/kafkatest"
	"github.com/payoutd/payoutd/pipeline"
)

// BenchmarkIngress measures signed webhooks per second and their latency
// through HTTP on loopback into Kafka (acks=all), against two ceilings in
// the same run on the same broker: (a) the same records produced straight
// with franz-go, and (b) a bare HTTP handler that only produces the body.
// Each path gets the same load: n webhooks from `senders` concurrent callers.
func BenchmarkIngress(b *testing.B) {
	const n, senders = 20_000, 64
	c := kafkatest.Start(b)
	// Distinct bodies: a repeated body is a duplicate the ingress answers
	// without writing.
	bodies := benchBodies(n)
	// Each path first takes warm bodies unmeasured: connections, metadata
	// and the broker's partitions are warm before the clock starts, the
	// same for every path.
	const warm = 2_000
	warmBodies := make([][]byte, warm)
	for i := range warmBodies {
		warmBodies[i] = webhookBody(n+i+1, calypso.EventPayoutChangeStatus, fmt.Sprint(900000+i), "IN_PROGRESS", "warm-up")
	}
	for b.Loop() {
		raw := c.CreateTopic(b, "calypso.webhooks.raw", 3, nil)
		outcomes := c.CreateTopic(b, "payouts.outcomes", 3, nil)

		// The ingress, behind a real HTTP server.
		health := pipeline.NewHealth()
		in, err := pipeline.NewIngress(pipeline.IngressConfig{
			Topics: events.Topics{WebhooksRaw: raw, Outcomes: outcomes}, Keys: calypso.WebhookKeys{whPubKey: whSecret},
			Logger: slog.New(slog.DiscardHandler), Health: health,
		}, kgo.SeedBrokers(c.Seeds...))
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		// Labelled, as is each path's HTTP traffic, so that a CPU profile
		// (-cpuprofile, then pprof -tagfocus path=ingress) splits by path.
		wg.Go(func() { pprof.Do(ctx, pprof.Labels("path", "ingress"), func(ctx context.Context) { _ = in.Run(ctx) }) })
		for { // until the producer and the dedup window are ready
			if ok, parts := health.Check(); ok && len(parts) == 2 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		measureHTTP(b, "ingress", in, warm, senders, warmBodies, true)
		ingress := measureHTTP(b, "ingress", in, n, senders, bodies, true)
		cancel()
		wg.Wait()

		// (b) A bare handler: read the body, produce it, answer 200.
		cl := c.Client(b, kgo.ProducerLinger(0))
		bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			if err := cl.ProduceSync(r.Context(), &kgo.Record{Topic: raw, Value: body}).FirstErr(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
		})
		measureHTTP(b, "bare", bare, warm, senders, warmBodies, false)
		handler := measureHTTP(b, "bare", bare, n, senders, bodies, false)

		// (a) The ingress's two records per webhook, straight with franz-go.
		pairs := make([][2]*kgo.Record, len(bodies))
		for i, body := range bodies {
			evs, err := pipeline.OutcomeEvents(body)
			if err != nil {
				b.Fatal(err)
			}
			typed, err := events.NewRecord(outcomes, pipeline.SourceIngress, evs[0])
			if err != nil {
				b.Fatal(err)
			}
			pairs[i] = [2]*kgo.Record{{Topic: raw, Key: typed.Key, Value: body}, typed}
		}
		direct := measure(n, senders, func(i int) bool {
			p := pairs[i%len(pairs)]
			r1, r2 := *p[0], *p[1] // a record may be produced once
			return cl.ProduceSync(context.Background(), &r1, &r2).FirstErr() == nil
		})

		b.ReportMetric(ingress.rate, "webhooks/s")
		b.ReportMetric(ingress.p50.Seconds()*1000, "p50-ms")
		b.ReportMetric(ingress.p99.Seconds()*1000, "p99-ms")
		b.ReportMetric(handler.rate, "bare-handler/s")
		b.ReportMetric(handler.p99.Seconds()*1000, "bare-p99-ms")
		b.ReportMetric(direct.rate, "franz-go/s")
		b.ReportMetric(float64(ingress.cpu.Microseconds()), "cpu-us/webhook")
		b.ReportMetric(float64(handler.cpu.Microseconds()), "bare-cpu-us/webhook")
		if brokerPID != "" {
			b.ReportMetric(float64(ingress.brokerCPU.Microseconds()), "broker-cpu-us/webhook")
			b.ReportMetric(float64(handler.brokerCPU.Microseconds()), "bare-broker-cpu-us/webhook")
		}
		b.ReportMetric(ingress.rate/handler.rate, "ratio-bare")
		b.ReportMetric(ingress.rate/direct.rate, "ratio-franz")
	}
}

type load struct {
	rate     float64
	p50, p99 time.Duration
	// cpu is this process's CPU time (user + system) per call: the HTTP
	// client and server, the handler, franz-go; not the broker's.
	cpu time.Duration
	// brokerCPU is the broker's CPU time per call, when
	// PAYOUTD_BENCH_BROKER_PID names a broker process on this machine
	// (it counts whatever else that broker serves meanwhile).
	brokerCPU time.Duration
}

var brokerPID = os.Getenv("PAYOUTD_BENCH_BROKER_PID")

// brokerCPU reads the user + system time of process brokerPID from
// /proc (clock ticks of 10 ms); 0 when unset or unreadable.
func brokerCPU() time.Duration {
	if brokerPID == "" {
		return 0
	}
	stat, err := os.ReadFile("/proc/" + brokerPID + "/stat")
	if err != nil {
		return 0
	}
	// The fields after the command's closing parenthesis; utime and
	// stime are the 12th and 13th of them.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measureHTTP serves h on loopback and POSTs n signed webhooks to it; the
// goroutines of both sides carry the profiler label path=name.
func measureHTTP(b *testing.B, name string, h http.Handler, n, senders int, bodies [][]byte, wantOK bool) (res load) {
	b.Helper()
	pprof.Do(context.Background(), pprof.Labels("path", name), func(context.Context) {
		res = measureHTTPLabelled(b, h, n, senders, bodies, wantOK)
	})
	return res
}

func measureHTTPLabelled(b *testing.B, h http.Handler, n, senders int, bodies [][]byte, wantOK bool) load {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	url := "http://" + l.Addr().String() + pipeline.WebhookPath
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: senders}}
	signs := make([]string, len(bodies))
	for i, body := range bodies {
		signs[i] = calypso.SignBody(whSecret, body)
	}
	return measure(n, senders, func(i int) bool {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(bodies[i%len(bodies)]))
		req.Header.Set(calypso.HeaderKey, whPubKey)
		req.Header.Set(calypso.HeaderSign, signs[i%len(bodies)])
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK || !wantOK
	})
}

// measure runs call(i) for i in [0,n) from senders goroutines and reports
// the rate and latency percentiles; a failed call fails nothing but counts.
func measure(n, senders int, call func(i int) bool) load {
	lat := make([]time.Duration, n)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	start, cpu, bcpu := time.Now(), processCPU(), brokerCPU()
	for range senders {
		wg.Go(func() {
			for i := range next {
				t := time.Now()
				if !call(i) {
					lat[i] = time.Hour // a failure shows in p99 instead of hiding
					continue
				}
				lat[i] = time.Since(t)
			}
		})
	}
	wg.Wait()
	elapsed, cpu, bcpu := time.Since(start), processCPU()-cpu, brokerCPU()-bcpu
	slices.Sort(lat)
	return load{rate: float64(n) / elapsed.Seconds(), p50: lat[n/2], p99: lat[n*99/100],
		cpu: cpu / time.Duration(n), brokerCPU: bcpu / time.Duration(n)}
}
