package main

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/console"
	"github.com/payoutd/payoutd/internal/status"
	"github.com/payoutd/payoutd/pipeline"
)

// consolePath is where the ops server mounts the operator console.
const consolePath = "/console/"

// consoleSpec is what the console of a running process reads.
type consoleSpec struct {
	kafka  []kgo.Opt
	adm    *kadm.Client
	topics events.Topics
	groups []string
	health *pipeline.Health
	// since bounds the history each answer reads (default 7 days).
	since time.Duration
	log   *slog.Logger
}

// mountConsole serves the read-only console under consolePath on mux.
func mountConsole(mux *http.ServeMux, spec consoleSpec) error {
	if spec.since <= 0 {
		spec.since = 7 * 24 * time.Hour
	}
	lr := newLagReader(spec.adm, spec.kafka)
	c, err := console.New(console.Config{
		Source: windowed{status.Config{Kafka: spec.kafka, Topics: spec.topics}, spec.since},
		Health: spec.health,
		Lag:    func(ctx context.Context) map[string]int64 { return groupLag(ctx, lr, spec.groups) },
		Logger: spec.log,
	})
	if err != nil {
		return err
	}
	mux.Handle(consolePath, http.StripPrefix(consolePath[:len(consolePath)-1], c))
	return nil
}

// windowed reads the last `since` of history for each answer.
type windowed struct {
	cfg   status.Config
	since time.Duration
}

func (w windowed) config() status.Config {
	c := w.cfg
	c.Since = time.Now().Add(-w.since)
	return c
}

func (w windowed) Summarize(ctx context.Context) (status.Summary, error) {
	return status.Summarize(ctx, w.config())
}

func (w windowed) Follow(ctx context.Context, q string) (status.Timeline, error) {
	return status.Follow(ctx, w.config(), q)
}
