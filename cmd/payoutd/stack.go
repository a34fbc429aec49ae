package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/payoutd/payoutd/pipeline"
)

// component is one pipeline stage: it runs until its context ends.
type component struct {
	name    string
	run     func(context.Context) error
	running atomic.Bool
}

// stack is the components one process runs, and the ingress's HTTP server.
// It owns their start and their orderly stop.
type stack struct {
	log        *slog.Logger
	components []*component
	batcher    *pipeline.Batcher
	submitter  *pipeline.Submitter
	ingress    *pipeline.Ingress
	tracker    *pipeline.Tracker
	// health is what the components report about their progress (a
	// session restarting, a stopped submitter lane, quarantined batches);
	// /readyz answers from it.
	health     *pipeline.Health
	ingressSrv *http.Server
	ingressLn  net.Listener

	cancel context.CancelFunc
	wg     sync.WaitGroup
	exited chan error // first component to end before stop, with its error
}

func (s *stack) add(name string, run func(context.Context) error) {
	s.components = append(s.components, &component{name: name, run: run})
}

// listenIngress binds the ingress's address now, so that a busy port is a
// start-up error and the actual address (for ":0") is known.
func (s *stack) listenIngress(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("ingress listen %s: %w", addr, err)
	}
	s.ingressLn = ln
	s.ingressSrv = s.ingress.Server(addr)
	return nil
}

// start runs every component in its own goroutine, on a context of its own:
// a signal does not stop components directly, stop does, in order.
func (s *stack) start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.exited = make(chan error, len(s.components)+1)
	for _, c := range s.components {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			c.running.Store(true)
			err := c.run(ctx)
			c.running.Store(false)
			if ctx.Err() == nil {
				if err == nil {
					err = errors.New("stopped by itself")
				}
				s.exited <- fmt.Errorf("%s: %w", c.name, err)
			} else if err != nil {
				s.log.Error("component stopped with an error", "component", c.name, "error", err)
			}
		}()
	}
	if s.ingressSrv != nil {
		go func() {
			if err := s.ingressSrv.Serve(s.ingressLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.exited <- fmt.Errorf("ingress server: %w", err)
			}
		}()
	}
}

// ready reports whether every component is running and reports itself able
// to make progress.
func (s *stack) ready() (bool, string) {
	for _, c := range s.components {
		if !c.running.Load() {
			return false, c.name + " is not running"
		}
	}
	if ok, parts := s.health.Check(); !ok {
		var why []string
		for _, p := range parts {
			if !p.Ready {
				why = append(why, p.Part+": "+p.Reason)
			}
		}
		return false, strings.Join(why, "; ")
	}
	return true, ""
}

// stop shuts down within timeout, in the order that loses nothing: first
// the webhook server stops taking requests and lets those in flight finish
// (their Kafka commits still run), then the components: the batcher closes
// its open window, transactions end, clients close.
func (s *stack) stop(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var errs []error
	if s.ingressSrv != nil {
		if err := s.ingressSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("ingress server shutdown: %w", err))
		}
	}
	s.cancel()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		var still []string
		for _, c := range s.components {
			if c.running.Load() {
				still = append(still, c.name)
			}
		}
		errs = append(errs, fmt.Errorf("components %v did not stop within %s", still, timeout))
	}
	return errors.Join(errs...)
}

// buildStack creates the selected components with their metrics. The
// ingress's port is bound here, so a busy port fails the start.
func buildStack(c stackConfig) (*stack, error) {
	// One Health for the process: every component reports into it and
	// /readyz answers from it.
	health := c.health
	if health == nil {
		health = pipeline.NewHealth()
	}
	s := &stack{log: c.log, health: health}
	has := func(name string) bool {
		for _, x := range c.components {
			if x == name {
				return true
			}
		}
		return false
	}
	if has("batcher") {
		cfg := c.batcher
		cfg.Topics, cfg.Logger, cfg.Health, cfg.Tracer = c.topics, c.log, s.health, tracerOf(c.tracing)
		b, err := pipeline.NewBatcher(cfg, c.kafka...)
		if err != nil {
			return nil, fmt.Errorf("batcher: %w", err)
		}
		s.batcher = b
		s.add("batcher", b.Run)
		c.metrics.batcher(b)
	}
	if has("submitter") {
		cfg := c.submitter
		cfg.Topics, cfg.Logger, cfg.Health, cfg.Tracer = c.topics, c.log, s.health, tracerOf(c.tracing)
		accounts := c.submitterAccounts
		if accounts == nil {
			accounts = c.accounts
		}
		sub, err := pipeline.NewSubmitter(cfg, accounts, c.kafka...)
		if err != nil {
			return nil, fmt.Errorf("submitter: %w", err)
		}
		s.submitter = sub
		s.add("submitter", sub.Run)
		c.metrics.submitter(sub)
	}
	if has("tracker") {
		cfg := c.tracker
		cfg.Topics, cfg.Logger, cfg.Health, cfg.Tracer = c.topics, c.log, s.health, tracerOf(c.tracing)
		t, err := pipeline.NewTracker(cfg, c.accounts, c.kafka...)
		if err != nil {
			return nil, fmt.Errorf("tracker: %w", err)
		}
		s.tracker = t
		s.add("tracker", t.Run)
		c.metrics.tracker(t)
	}
	if has("ingress") {
		cfg := c.ingress
		cfg.Topics, cfg.Logger, cfg.Health = c.topics, c.log, s.health
		in, err := pipeline.NewIngress(cfg, c.kafka...)
		if err != nil {
			return nil, fmt.Errorf("ingress: %w", err)
		}
		s.ingress = in
		s.add("ingress", in.Run)
		c.metrics.ingress(in)
		if err := s.listenIngress(c.ingressAddr); err != nil {
			return nil, err
		}
		s.ingressSrv.Handler = c.tracing.Handler(s.ingressSrv.Handler, "calypso webhook")
	}
	return s, nil
}
