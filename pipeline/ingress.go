package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
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

// PartIngressProducer is the Health part of the ingress's Kafka producer.
const PartIngressProducer = "ingress/producer"

// AlertWebhookUnmapped is raised for an authentic webhook that is archived
// raw but cannot be typed: Calypso changed a format, or sent a payout event
// without its data. The tracker's polling recovers the payout's state; a
// person should look at the parser.
const AlertWebhookUnmapped events.AlertKind = "WEBHOOK_UNMAPPED"

// SourceIngress is the ce_source of the events the ingress writes; replay
// compares only these with what it re-derives.
const SourceIngress = "payoutd/ingress"

// SourceIngressAlerts is the ce_source of the ingress's alerts, apart from
// SourceIngress because replay derives typed events only.
const SourceIngressAlerts = "payoutd/ingress-alerts"

// MaxRecordBytes is the largest record the ingress's producer sends (its
// batch limit, kept below Kafka's default message.max.bytes of 1 MiB). The
// body cap must leave room under it for the raw record's headers.
const MaxRecordBytes = 1_000_000

// recordOverhead bounds what a raw record adds to its body: key, headers
// (Sign is 128 hex digits), and the record batch framing.
const recordOverhead = 4 << 10

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
	// MaxBody is the largest body read; larger is 413. Webhooks are about
	// 1 KB. Default 256 KiB; at most MaxRecordBytes less 4 KiB of headers.
	MaxBody int64
	// MaxConcurrent bounds the webhook requests handled at once; beyond it
	// a request is answered 503 at once, before its body is read, and
	// Calypso retries it. Default 512.
	MaxConcurrent int
	// DedupWindow is how long an archived webhook's body is remembered, so
	// that a repeat (a Calypso retry after a lost 200, or a replay of a
	// captured request, which the signature alone cannot tell apart) is
	// answered 200 without archiving it again. Default 92h, beyond
	// Calypso's retry span of about 91 hours.
	DedupWindow time.Duration
	// DedupMaxEntries bounds the memory of the dedup window (about 100
	// bytes an entry); the oldest are forgotten first. Default 2,000,000.
	DedupMaxEntries int
	// ReplaceAfter is how long every write may fail before the producer is
	// replaced by a new one. Default 2×AckTimeout.
	ReplaceAfter time.Duration
	// Health receives the producer's readiness as PartIngressProducer.
	Health *Health
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
		c.MaxBody = 256 << 10
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = 512
	}
	if c.DedupWindow <= 0 {
		c.DedupWindow = 92 * time.Hour
	}
	if c.DedupMaxEntries <= 0 {
		c.DedupMaxEntries = 2_000_000
	}
	if c.ReplaceAfter <= 0 {
		c.ReplaceAfter = 2 * c.AckTimeout
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
	BadRequest       atomic.Int64 // 400: unused since every authentic body is archived; kept for the metric
	Unauthorized     atomic.Int64 // 401: missing, unknown or wrong Key/Sign
	MethodNotAllowed atomic.Int64 // 405
	TooLarge         atomic.Int64 // 413
	Unavailable      atomic.Int64 // 503: Kafka did not acknowledge in time, or overloaded
	NotFound         atomic.Int64 // 404: another path

	UnknownTypes     atomic.Int64 // part of OK: archived raw only
	Unmapped         atomic.Int64 // part of OK: authentic but not typed (ErrUnmappedWebhook, or refused by the parser)
	Duplicates       atomic.Int64 // part of OK: already archived within the dedup window; nothing written
	Overloaded       atomic.Int64 // part of Unavailable: beyond MaxConcurrent
	Commits          atomic.Int64 // webhooks whose records Kafka acknowledged (typed, then raw)
	WriteFailures    atomic.Int64 // webhooks whose write failed or timed out
	ProducerRestarts atomic.Int64 // producers replaced after a fatal error or a stall
}

// Ingress receives Calypso's webhooks: POST WebhookPath. It checks the Key
// header before reading anything, the signature once the body is read, and
// then writes the typed event(s) (OutcomeEvents) to the outcomes topic and
// the exact bytes to the raw webhook topic, side by side with an idempotent
// acks=all producer; it answers 200 only once Kafka has acknowledged every
// one of them (invariant 4).
//
// No transaction joins the two: a webhook that fails half-way is answered
// 503 and Calypso resends it; a repeat of an archived body (the dedup
// window) writes its typed records again and never a second raw record, so
// a raw record without its typed events is mended by the next delivery,
// and in any case by replaying the raw topic, from which the typed events
// are derived byte for byte (invariant 6). See README, "Ingress: how a
// webhook becomes durable".
type Ingress struct {
	cfg      IngressConfig
	kafka    []kgo.Opt
	verifier *calypso.WebhookVerifier
	log      *slog.Logger
	slots    chan struct{}
	seen     *seenBodies
	prod     atomic.Pointer[producer]
	// dedupLoaded: the dedup window has been read back from the raw topic.
	dedupLoaded atomic.Bool
	Stats       IngressStats
}

// NewIngress returns an Ingress; kafka are the client options shared by
// every component (seed brokers, TLS, SASL, logging). It connects to Kafka
// only when Run starts.
func NewIngress(cfg IngressConfig, kafka ...kgo.Opt) (*Ingress, error) {
	cfg.setDefaults()
	if len(cfg.Keys) == 0 {
		return nil, errors.New("ingress: no webhook keys configured")
	}
	if limit := int64(MaxRecordBytes - recordOverhead); cfg.MaxBody > limit {
		return nil, fmt.Errorf("ingress: body cap %d bytes must stay below the producer's record limit (at most %d)", cfg.MaxBody, limit)
	}
	in := &Ingress{
		cfg:      cfg,
		kafka:    kafka,
		verifier: calypso.NewWebhookVerifier(cfg.Keys),
		log:      cfg.Logger.With("component", "ingress"),
		slots:    make(chan struct{}, cfg.MaxConcurrent),
		seen:     newSeenBodies(cfg.DedupWindow, cfg.DedupMaxEntries),
	}
	// Options are checked now, so a bad one is a start-up error rather
	// than a session that fails forever.
	cl, err := kgo.NewClient(in.producerOpts()...)
	if err != nil {
		return nil, fmt.Errorf("ingress: kafka client: %w", err)
	}
	cl.Close()
	return in, nil
}

func (in *Ingress) producerOpts() []kgo.Opt {
	// Idempotent with acks=all (franz-go's defaults, named for the reader),
	// no linger: whatever arrives while a request is in flight is batched
	// anyway.
	return append(append([]kgo.Opt{}, in.kafka...),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0), kgo.ProducerBatchMaxBytes(MaxRecordBytes))
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
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(in.log.Handler(), slog.LevelWarn),
	}
}

// ServeHTTP implements http.Handler.
func (in *Ingress) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	status := in.serve(w, r)
	in.count(status)
	switch status {
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", http.MethodPost)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, http.StatusText(status)+"\n")
}

// serve handles one request and returns its status. The order of the checks
// is the order of their cost: nothing of the body is read for a request
// without a known Key, or beyond the cap, or beyond MaxConcurrent.
func (in *Ingress) serve(w http.ResponseWriter, r *http.Request) int {
	if r.URL.Path != WebhookPath {
		return http.StatusNotFound
	}
	if r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed
	}
	if key := r.Header.Get(calypso.HeaderKey); key == "" || r.Header.Get(calypso.HeaderSign) == "" {
		in.log.Warn("webhook refused before reading", "error", calypso.ErrMissingSignature, "remote", r.RemoteAddr)
		return http.StatusUnauthorized
	} else if _, ok := in.cfg.Keys[key]; !ok {
		in.log.Warn("webhook refused before reading", "error", calypso.ErrUnknownKey, "remote", r.RemoteAddr)
		return http.StatusUnauthorized
	}
	if r.ContentLength > in.cfg.MaxBody {
		return http.StatusRequestEntityTooLarge
	}
	select {
	case in.slots <- struct{}{}:
		defer func() { <-in.slots }()
	default:
		in.Stats.Overloaded.Add(1)
		return http.StatusServiceUnavailable
	}
	body, err := readBody(http.MaxBytesReader(w, r.Body, in.cfg.MaxBody), r.ContentLength)
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
	if !in.dedupLoaded.Load() {
		return http.StatusServiceUnavailable // for seconds after a start; Calypso retries
	}
	sum := sha256.Sum256(body)
	seen := in.seen.lookup(sum, in.cfg.Now())
	if seen == seenComplete {
		in.Stats.Duplicates.Add(1)
		return http.StatusOK
	}
	p := in.prod.Load()
	if p == nil {
		return http.StatusServiceUnavailable
	}
	typed, raw, kind := in.records(r, body, sum)
	if size := recordSize(raw); size > p.limit {
		in.log.Error("authentic webhook too large for the raw topic; refused", "key", string(raw.Key),
			"bytes", size, "limit", p.limit)
		return http.StatusRequestEntityTooLarge
	}
	recs := typed
	if seen == seenArchived {
		// Archived already (read back from the raw topic): its typed
		// records are written again, in case they were what failed.
		in.Stats.Duplicates.Add(1)
	} else {
		recs = append(recs, raw)
	}
	ctx, cancel := context.WithTimeout(r.Context(), in.cfg.AckTimeout)
	defer cancel()
	err = in.write(ctx, p, recs...)
	if err != nil {
		in.Stats.WriteFailures.Add(1)
		if errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) {
			in.log.Error("authentic webhook refused by Kafka as too large", "key", string(raw.Key), "error", err)
			return http.StatusRequestEntityTooLarge
		}
		in.log.Warn("webhook not written; answering 503", "key", string(raw.Key), "error", err)
		return http.StatusServiceUnavailable
	}
	in.Stats.Commits.Add(1)
	switch {
	case seen != seenNot: // counted when first archived
	case kind == webhookUnknownType:
		in.Stats.UnknownTypes.Add(1)
	case kind == webhookUnmapped:
		in.Stats.Unmapped.Add(1)
	}
	in.seen.add(sum, in.cfg.Now(), true)
	return http.StatusOK
}

// write produces records and waits for all their acknowledgements, or for
// ctx. A record Kafka refuses as too large fails the batch it travelled in,
// which may hold other webhooks' records; those are tried once more, alone
// in their own request as far as the client allows, so one bad webhook does
// not take its neighbours with it.
func (in *Ingress) write(ctx context.Context, p *producer, recs ...*kgo.Record) error {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		err = p.produce(ctx, recs)
		if err == nil || !(errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge)) {
			return err
		}
		for i, r := range recs {
			if recordSize(r) > p.limit {
				return err // ours: it will never fit
			}
			c := *r // a record may be produced once
			recs[i] = &c
		}
	}
	return err
}

// readBody reads a body whose declared length (size, -1 if unknown) is
// within the cap into one buffer of that size (and a byte to see the end
// in), where io.ReadAll would start at 512 bytes and grow.
func readBody(r io.Reader, size int64) ([]byte, error) {
	if size <= 0 {
		return io.ReadAll(r)
	}
	b := make([]byte, 0, size+1)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		switch {
		case err == io.EOF:
			return b, nil
		case err != nil:
			return b, err
		case len(b) == cap(b): // longer than declared: let it grow
			b = append(b, 0)[:len(b)]
		}
	}
}

// webhookKind says how an authentic body was archived, for the counts.
type webhookKind int

const (
	webhookTyped       webhookKind = iota // raw and typed
	webhookUnknownType                    // raw only: an event type payoutd does not know
	webhookUnmapped                       // raw and an alert: the parser or the mapping refused it
)

// records builds the typed (and alert) records and the raw record of an
// authentic body. The body's bytes are archived whatever they hold: an
// authentic webhook the parser refuses is archived, alerted and answered
// 200, because refusing it would only make Calypso block the subscription.
//
// sum is the body's SHA-256, computed once for the dedup window; the alert
// of an unmapped webhook names the body by it rather than hashing again.
func (in *Ingress) records(r *http.Request, body []byte, sum [sha256.Size]byte) ([]*kgo.Record, *kgo.Record, webhookKind) {
	now := in.cfg.Now()
	digest := func() string { return hex.EncodeToString(sum[:8]) }
	raw := func(key string) *kgo.Record {
		// The key and header values share one allocation, each capped.
		pubKey, sign := r.Header.Get(calypso.HeaderKey), r.Header.Get(calypso.HeaderSign)
		buf := make([]byte, 0, len(key)+len(time.RFC3339Nano)+len(pubKey)+len(sign)+len(r.RemoteAddr))
		from := 0
		next := func() []byte { b := buf[from:len(buf):len(buf)]; from = len(buf); return b }
		buf = append(buf, key...)
		rKey := next()
		buf = now.UTC().AppendFormat(buf, time.RFC3339Nano)
		hAt := next()
		buf = append(buf, pubKey...)
		hKey := next()
		buf = append(buf, sign...)
		hSign := next()
		buf = append(buf, r.RemoteAddr...)
		hAddr := next()
		return &kgo.Record{
			Topic: in.cfg.Topics.WebhooksRaw,
			Key:   rKey,
			Value: body,
			Headers: []kgo.RecordHeader{
				{Key: HeaderReceivedAt, Value: hAt},
				{Key: calypso.HeaderKey, Value: hKey},
				{Key: calypso.HeaderSign, Value: hSign},
				{Key: HeaderRemoteAddr, Value: hAddr},
			},
		}
	}
	wh, err := calypso.ParseWebhook(body)
	if err != nil {
		id, payout := looseIDs(body)
		return in.unmapped(id, "", payout, digest(), err, now), raw(orDefault(payout, id, "sha256:"+digest())), webhookUnmapped
	}
	key := orDefault(wh.PayoutID(), string(wh.ID))
	evs, err := outcomeEvents(wh)
	switch {
	case err != nil:
		return in.unmapped(string(wh.ID), wh.EventType, wh.PayoutID(), digest(), err, now), raw(key), webhookUnmapped
	case len(evs) == 0:
		in.log.Info("unknown webhook type archived", "event", string(wh.ID), "type", wh.EventType)
		return nil, raw(key), webhookUnknownType
	}
	var typed []*kgo.Record
	for _, e := range evs {
		// Valid by construction: OutcomeEvents refuses what the schemas would.
		rec, err := events.NewRecord(in.cfg.Topics.Outcomes, SourceIngress, e)
		if err != nil {
			return in.unmapped(string(wh.ID), wh.EventType, wh.PayoutID(), digest(), err, now), raw(key), webhookUnmapped
		}
		typed = append(typed, rec)
	}
	return typed, raw(key), webhookTyped
}

// unmapped logs and alerts an authentic webhook that is archived untyped.
// digest (of the body) tells two such webhooks apart in the alert's ce_id.
func (in *Ingress) unmapped(id, typ, payout, digest string, cause error, now time.Time) []*kgo.Record {
	in.log.Error("authentic webhook archived but not typed; polling will find its state",
		"event", id, "type", typ, "payout", payout, "error", cause)
	rec, err := events.NewRecord(in.cfg.Topics.Outcomes, SourceIngressAlerts, events.Alert{
		Kind: AlertWebhookUnmapped, PayoutID: payout, Subject: "sha256:" + digest, RaisedAt: now.UTC(),
		Message: fmt.Sprintf("webhook %q (type %q) is archived raw but could not be typed: %v", id, typ, cause),
	})
	if err != nil {
		in.log.Error("alert not built", "error", err)
		return nil
	}
	return []*kgo.Record{rec}
}

// looseIDs digs the event id and payout id out of a body the strict parser
// refused, for the raw record's key and the alert; "" where absent.
func looseIDs(body []byte) (id, payout string) {
	var env struct {
		ID   json.RawMessage `json:"id"`
		Data struct {
			Parent json.RawMessage `json:"parentExternalId"`
		} `json:"data"`
	}
	_ = json.Unmarshal(body, &env)
	text := func(m json.RawMessage) string {
		var s string
		if json.Unmarshal(m, &s) == nil {
			return s
		}
		var n json.Number
		if json.Unmarshal(m, &n) == nil {
			return n.String()
		}
		return ""
	}
	return text(env.ID), text(env.Data.Parent)
}

func orDefault(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

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

// Run keeps a producer for the webhooks and the dedup window until ctx is
// done. Stop the HTTP server first (http.Server.Shutdown), so no handler is
// left waiting.
//
// The producer lives in sessions, as the other components' transactional
// clients do: one that reports a fatal error, or whose every write has
// failed for ReplaceAfter (a broker stall can leave a client in a state it
// does not leave by itself), is closed and replaced by a new one, and
// PartIngressProducer is not ready meanwhile.
func (in *Ingress) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	followCtx, stop := context.WithCancel(ctx)
	defer stop()
	wg.Go(func() { in.followArchive(followCtx) })
	return runSessions(ctx, in.log, in.cfg.Health, PartIngressProducer, in.producerSession)
}

// errProducerStalled ends a producer session whose writes all fail.
var errProducerStalled = errors.New("every write failed for too long")

func (in *Ingress) producerSession(ctx context.Context) error {
	cl, err := kgo.NewClient(in.producerOpts()...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	for {
		pctx, cancel := context.WithTimeout(ctx, in.cfg.AckTimeout)
		err := cl.Ping(pctx)
		cancel()
		if err == nil {
			break
		}
		in.cfg.Health.NotReady(PartIngressProducer, "kafka does not answer: "+err.Error())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	p := &producer{cl: cl, limit: in.recordLimit(ctx, cl), fatal: make(chan error, 1), now: in.cfg.Now}
	in.prod.Store(p)
	defer in.prod.CompareAndSwap(p, nil)
	in.cfg.Health.Ready(PartIngressProducer)
	in.log.Info("ingress producer ready", "record_limit", p.limit)

	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-p.fatal:
			in.Stats.ProducerRestarts.Add(1)
			return fmt.Errorf("ingress producer unusable: %w", err)
		case <-tick.C:
		}
		since, last := p.failing()
		switch {
		case since.IsZero():
			in.cfg.Health.Ready(PartIngressProducer)
		case in.cfg.Now().Sub(since) >= in.cfg.ReplaceAfter:
			in.Stats.ProducerRestarts.Add(1)
			return fmt.Errorf("%w (%s): %v", errProducerStalled, in.cfg.ReplaceAfter, last)
		case in.cfg.Now().Sub(since) >= in.cfg.AckTimeout:
			in.cfg.Health.NotReady(PartIngressProducer, fmt.Sprintf("every write failed since %s: %v", since.UTC().Format(time.RFC3339), last))
		}
	}
}

// recordLimit is the largest raw record the archive topic takes: its
// max.message.bytes if the cluster says, within the producer's own limit.
func (in *Ingress) recordLimit(ctx context.Context, cl *kgo.Client) int {
	limit := MaxRecordBytes
	ctx, cancel := context.WithTimeout(ctx, in.cfg.AckTimeout)
	defer cancel()
	rcs, err := kadm.NewClient(cl).DescribeTopicConfigs(ctx, in.cfg.Topics.WebhooksRaw)
	if err != nil {
		in.log.Warn("cannot read the raw topic's max.message.bytes; using the producer's limit", "error", err)
		return limit
	}
	for _, rc := range rcs {
		for _, c := range rc.Configs {
			if c.Key == "max.message.bytes" && c.Value != nil {
				if n, err := strconv.Atoi(*c.Value); err == nil && n-64 < limit {
					limit = n - 64 // the batch header a broker counts too
				}
			}
		}
	}
	if int64(limit) < in.cfg.MaxBody+recordOverhead {
		in.log.Warn("the raw topic's max.message.bytes is below the ingress body cap; larger webhooks get 413",
			"topic", in.cfg.Topics.WebhooksRaw, "record_limit", limit, "max_body", in.cfg.MaxBody)
	}
	return limit
}

// producer is one session's Kafka client and what its writes report.
type producer struct {
	cl    *kgo.Client
	limit int
	fatal chan error
	now   func() time.Time

	mu    sync.Mutex
	since time.Time // first failure since the last success; zero: healthy
	last  error
}

// produce writes recs and waits for every acknowledgement or for ctx; the
// acknowledgements still count for the producer's health when they come
// after ctx.
func (p *producer) produce(ctx context.Context, recs []*kgo.Record) error {
	if len(recs) == 0 {
		return nil
	}
	results := make(chan error, len(recs))
	for _, r := range recs {
		p.cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			p.report(err)
			results <- err
		})
	}
	var first error
	for range recs {
		select {
		case err := <-results:
			if err != nil && first == nil {
				first = err
			}
		case <-ctx.Done():
			// Kafka did not answer within the ack timeout: a stalled
			// broker shows here, long before the client gives up.
			p.report(ctx.Err())
			return ctx.Err()
		}
	}
	return first
}

func (p *producer) report(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case err == nil:
		p.since, p.last = time.Time{}, nil
	case errors.Is(err, context.Canceled) && p.since.IsZero():
		// A caller that went away says nothing about Kafka.
	default:
		if p.since.IsZero() {
			p.since = p.now()
		}
		p.last = err
		if fatalProducerErr(err) {
			select {
			case p.fatal <- err:
			default:
			}
		}
	}
}

func (p *producer) failing() (time.Time, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.since, p.last
}

// fatalProducerErr says whether a produce error leaves the client unable to
// write again: a fenced or otherwise invalid producer identity, refused
// authorisation, or a closed client.
func fatalProducerErr(err error) bool {
	for _, fatal := range []error{
		kerr.ProducerFenced, kerr.InvalidProducerEpoch, kerr.InvalidProducerIDMapping,
		kerr.OutOfOrderSequenceNumber, kerr.UnknownProducerID, kerr.InvalidTxnState,
		kerr.ClusterAuthorizationFailed, kerr.TopicAuthorizationFailed, kerr.TransactionalIDAuthorizationFailed,
		kgo.ErrClientClosed,
	} {
		if errors.Is(err, fatal) {
			return true
		}
	}
	return false
}
