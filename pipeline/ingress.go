package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
)

// WebhookPath is where the ingress takes Calypso's webhooks.
const WebhookPath = "/webhooks/calypso"

// Headers of a record on the raw webhook topic, besides Calypso's own Key
// and Sign (kept so the signature can be checked again during an audit).
const (
	HeaderReceivedAt = "payoutd-received-at" // RFC 3339, nanoseconds, UTC
	HeaderRemoteAddr = "payoutd-remote-addr"
)

// IngressConfig configures an Ingress. Zero values take the defaults named.
type IngressConfig struct {
	// Topics names the topics; empty names are the defaults.
	Topics events.Topics
	// Keys are the webhook subscriptions' public keys and secrets. Several
	// may be set while keys rotate. Required.
	Keys calypso.WebhookKeys
	// AckTimeout bounds how long a webhook waits for Kafka to acknowledge
	// its records; past it the answer is 503 and Calypso retries later.
	// Default 5s, well below the delivery timeout a webhook sender allows.
	AckTimeout time.Duration
	// MaxBody is the largest body read; larger is 413. Default 1 MiB.
	MaxBody int64
	// MaxGroup bounds how many webhooks share one Kafka transaction.
	// Default 500.
	MaxGroup int
	// TransactionalID must be unique per running instance and is best kept
	// stable across its restarts, so a restarted instance aborts its
	// predecessor's open transaction at once instead of read_committed
	// consumers waiting out the transaction timeout. Default
	// "payoutd-ingress-" + a random suffix.
	TransactionalID string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now stamps the received-at header. Default time.Now.
	Now func() time.Time
}

func (c *IngressConfig) setDefaults() {
	c.Topics = c.Topics.WithDefaults()
	if c.AckTimeout <= 0 {
		c.AckTimeout = 5 * time.Second
	}
	if c.MaxBody <= 0 {
		c.MaxBody = 1 << 20
	}
	if c.MaxGroup <= 0 {
		c.MaxGroup = 500
	}
	if c.TransactionalID == "" {
		c.TransactionalID = "payoutd-ingress-" + uuid.NewString()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// IngressStats counts what an Ingress answered and wrote; safe to read while
// it runs.
type IngressStats struct {
	OK               atomic.Int64 // 200: archived (and typed, when known)
	BadRequest       atomic.Int64 // 400: not a webhook envelope
	Unauthorized     atomic.Int64 // 401: missing, unknown or wrong Key/Sign
	MethodNotAllowed atomic.Int64 // 405
	TooLarge         atomic.Int64 // 413
	Unavailable      atomic.Int64 // 503: Kafka did not acknowledge in time
	NotFound         atomic.Int64 // 404: another path

	UnknownTypes atomic.Int64 // part of OK: archived raw only
	Unmapped     atomic.Int64 // part of OK: known type, archived raw only (ErrUnmappedWebhook)
	Commits      atomic.Int64 // Kafka transactions committed
	Aborts       atomic.Int64 // groups answered 503
}

// Ingress receives Calypso's webhooks: POST WebhookPath. It checks the
// signature, then writes the exact bytes to the raw webhook topic and the
// typed event (OutcomeEvents) to the outcomes topic, and answers 200 only
// once Kafka has acknowledged both.
//
// Both records go in one Kafka transaction, so a webhook is published whole
// or not at all: a consumer reading read_committed never sees the raw record
// without its typed event, nor the reverse. To keep many webhooks in flight
// without one Kafka round trip each, transactions are group commits: one
// goroutine (Run) commits whatever arrived while the previous transaction
// was committing, up to MaxGroup webhooks, and answers each of them after
// the commit; a failed group is answered 503 as a whole and Calypso resends
// it. A 503 after a commit whose outcome was unknown may lead to the
// webhook being published twice; both copies carry the same ce_id.
type Ingress struct {
	cfg      IngressConfig
	kafka    []kgo.Opt
	verifier *calypso.WebhookVerifier
	log      *slog.Logger
	queue    chan *pending
	Stats    IngressStats
}

// pending is one webhook waiting for its group's commit.
type pending struct {
	records []*kgo.Record
	done    chan error // buffered: the committer never blocks on a gone handler
}

// NewIngress returns an Ingress; kafka are the client options shared by
// every component (seed brokers, TLS, SASL, logging). It connects to Kafka
// only when Run starts.
func NewIngress(cfg IngressConfig, kafka ...kgo.Opt) (*Ingress, error) {
	cfg.setDefaults()
	if len(cfg.Keys) == 0 {
		return nil, errors.New("ingress: no webhook keys configured")
	}
	return &Ingress{
		cfg:      cfg,
		kafka:    kafka,
		verifier: calypso.NewWebhookVerifier(cfg.Keys),
		log:      cfg.Logger.With("component", "ingress"),
		queue:    make(chan *pending, 4*cfg.MaxGroup),
	}, nil
}

// Server returns an http.Server for the ingress on addr, with every timeout
// set: a slow or stalled client cannot hold a connection, and the write
// timeout leaves room for the Kafka acknowledgement.
func (in *Ingress) Server(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           in,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      in.cfg.AckTimeout + 15*time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(in.log.Handler(), slog.LevelWarn),
	}
}

// ServeHTTP implements http.Handler.
func (in *Ingress) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	status := in.serve(w, r)
	in.count(status)
	if status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodPost)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, http.StatusText(status)+"\n")
}

// serve handles one request and returns its status.
func (in *Ingress) serve(w http.ResponseWriter, r *http.Request) int {
	if r.URL.Path != WebhookPath {
		return http.StatusNotFound
	}
	if r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, in.cfg.MaxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return http.StatusRequestEntityTooLarge
		}
		return http.StatusBadRequest
	}
	if err := in.verifier.VerifyRequest(r, body); err != nil {
		in.log.Warn("webhook refused", "error", err, "remote", r.RemoteAddr)
		return http.StatusUnauthorized
	}
	records, err := in.records(r, body)
	if err != nil {
		in.log.Warn("webhook is not a webhook envelope", "error", err, "remote", r.RemoteAddr)
		return http.StatusBadRequest
	}

	p := &pending{records: records, done: make(chan error, 1)}
	timer := time.NewTimer(in.cfg.AckTimeout)
	defer timer.Stop()
	select {
	case in.queue <- p:
	case <-timer.C:
		return http.StatusServiceUnavailable
	case <-r.Context().Done():
		return http.StatusServiceUnavailable
	}
	select {
	case err := <-p.done:
		if err != nil {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	case <-timer.C:
		return http.StatusServiceUnavailable
	case <-r.Context().Done():
		return http.StatusServiceUnavailable
	}
}

// records builds the raw record and the typed ones of an authentic body.
func (in *Ingress) records(r *http.Request, body []byte) ([]*kgo.Record, error) {
	wh, err := calypso.ParseWebhook(body)
	if err != nil {
		return nil, err
	}
	evs, err := outcomeEvents(wh)
	key := wh.PayoutID()
	if key == "" {
		key = string(wh.ID)
	}
	raw := &kgo.Record{
		Topic: in.cfg.Topics.WebhooksRaw,
		Key:   []byte(key),
		Value: body,
		Headers: []kgo.RecordHeader{
			{Key: HeaderReceivedAt, Value: []byte(in.cfg.Now().UTC().Format(time.RFC3339Nano))},
			{Key: calypso.HeaderKey, Value: []byte(r.Header.Get(calypso.HeaderKey))},
			{Key: calypso.HeaderSign, Value: []byte(r.Header.Get(calypso.HeaderSign))},
			{Key: HeaderRemoteAddr, Value: []byte(r.RemoteAddr)},
		},
	}
	out := []*kgo.Record{raw}
	logUnmapped := func(err error) {
		in.Stats.Unmapped.Add(1)
		in.log.Error("webhook archived but not typed; polling will find its state",
			"event", string(wh.ID), "type", wh.EventType, "payout", key, "error", err)
	}
	switch {
	case err != nil:
		logUnmapped(err)
		return out, nil
	case len(evs) == 0:
		in.Stats.UnknownTypes.Add(1)
		in.log.Info("unknown webhook type archived", "event", string(wh.ID), "type", wh.EventType)
		return out, nil
	}
	for _, e := range evs {
		// Valid by construction: OutcomeEvents refuses what the schemas would.
		rec, err := events.NewRecord(in.cfg.Topics.Outcomes, SourceIngress, e)
		if err != nil {
			logUnmapped(err)
			return out[:1], nil
		}
		out = append(out, rec)
	}
	return out, nil
}

// SourceIngress is the ce_source of the events the ingress writes; replay
// compares only these with what it re-derives.
const SourceIngress = "payoutd/ingress"

func (in *Ingress) count(status int) {
	switch status {
	case http.StatusOK:
		in.Stats.OK.Add(1)
	case http.StatusBadRequest:
		in.Stats.BadRequest.Add(1)
	case http.StatusUnauthorized:
		in.Stats.Unauthorized.Add(1)
	case http.StatusMethodNotAllowed:
		in.Stats.MethodNotAllowed.Add(1)
	case http.StatusRequestEntityTooLarge:
		in.Stats.TooLarge.Add(1)
	case http.StatusServiceUnavailable:
		in.Stats.Unavailable.Add(1)
	case http.StatusNotFound:
		in.Stats.NotFound.Add(1)
	}
}

// Run commits queued webhooks to Kafka until ctx is done. Stop the HTTP
// server first (http.Server.Shutdown), so no handler is left waiting; one
// that is gets 503 when its AckTimeout passes.
func (in *Ingress) Run(ctx context.Context) error {
	var cl *kgo.Client
	defer func() {
		if cl != nil {
			cl.Close()
		}
	}()
	for {
		var group []*pending
		select {
		case <-ctx.Done():
			return nil
		case p := <-in.queue:
			group = append(group, p)
		}
	drain:
		for len(group) < in.cfg.MaxGroup {
			select {
			case p := <-in.queue:
				group = append(group, p)
			default:
				break drain
			}
		}
		if cl == nil {
			var err error
			// No linger: a group is already whatever arrived meanwhile.
			opts := append(append([]kgo.Opt{kgo.ProducerLinger(0)}, in.kafka...), kgo.TransactionalID(in.cfg.TransactionalID))
			cl, err = kgo.NewClient(opts...)
			if err != nil {
				return fmt.Errorf("ingress: kafka client: %w", err)
			}
		}
		err := in.commit(ctx, cl, group)
		if err != nil {
			in.Stats.Aborts.Add(1)
			in.log.Warn("webhook group not committed; answering 503", "webhooks", len(group), "error", err)
			if !in.abort(ctx, cl) {
				// The producer's state is unknown: start over with a new
				// one, whose initialisation fences and aborts anything of
				// this one still open at the broker.
				cl.Close()
				cl = nil
			}
		} else {
			in.Stats.Commits.Add(1)
		}
		for _, p := range group {
			p.done <- err
		}
	}
}

// commit writes a group in one transaction within AckTimeout.
func (in *Ingress) commit(ctx context.Context, cl *kgo.Client, group []*pending) error {
	ctx, cancel := context.WithTimeout(ctx, in.cfg.AckTimeout)
	defer cancel()
	if err := cl.BeginTransaction(); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	var recs []*kgo.Record
	for _, p := range group {
		recs = append(recs, p.records...)
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("producing: %w", err)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// abort ends a failed transaction; false means the client must be replaced.
func (in *Ingress) abort(ctx context.Context, cl *kgo.Client) bool {
	ctx, cancel := context.WithTimeout(ctx, in.cfg.AckTimeout)
	defer cancel()
	if err := cl.AbortBufferedRecords(ctx); err != nil {
		return false
	}
	return cl.EndTransaction(ctx, kgo.TryAbort) == nil
}
