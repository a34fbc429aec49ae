package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/payoutd/payoutd/pipeline"
)

// opsServer serves what an operator and an orchestrator look at:
//
//	/metrics  Prometheus
//	/healthz  the process is alive (always 200 while it serves)
//	/readyz   200 only when every selected component runs and every part
//	          in Health is ready; ?verbose lists each part and why
//
// /readyz answers from what the components keep in Health (their sessions,
// the submitter's lanes, the ingress's producer, the batcher's catch-up), so
// a probe costs no Kafka round trip and says why, not only whether.
type opsServer struct {
	srv *http.Server
	ln  net.Listener
	// mux is where further read-only pages (the console) are mounted.
	mux *http.ServeMux
}

// readyzReport is /readyz?verbose's body.
type readyzReport struct {
	Ready bool                  `json:"ready"`
	Parts []pipeline.PartHealth `json:"parts"`
}

func newOpsServer(addr string, m *metrics, health *pipeline.Health, running func() (bool, string), log *slog.Logger) (*opsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ops listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ok, parts := health.Check()
		if up, why := running(); !up {
			ok = false
			parts = append([]pipeline.PartHealth{{Part: "process", Ready: false, Reason: why}}, parts...)
		}
		status := http.StatusOK
		if !ok {
			status = http.StatusServiceUnavailable
		}
		if r.URL.Query().Has("verbose") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(readyzReport{Ready: ok, Parts: parts})
			return
		}
		if ok {
			fmt.Fprintln(w, "ready")
			return
		}
		var why []string
		for _, p := range parts {
			if !p.Ready {
				why = append(why, p.Part+": "+p.Reason)
			}
		}
		http.Error(w, "not ready: "+strings.Join(why, "; "), status)
	})
	return &opsServer{ln: ln, mux: mux, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}}, nil
}

func (o *opsServer) url() string { return "http://" + o.ln.Addr().String() }

func (o *opsServer) serve(log *slog.Logger) {
	go func() {
		if err := o.srv.Serve(o.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("ops server stopped", "error", err)
		}
	}()
}

func (o *opsServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = o.srv.Shutdown(ctx)
}
