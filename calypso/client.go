package calypso

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxResponseBytes bounds how much of a response is read; Calypso's largest
// answer (a 1000-item payout) is far below it.
const maxResponseBytes = 8 << 20

// Client is a Calypso API client. It is safe for concurrent use.
type Client struct {
	cfg     Config
	http    *http.Client
	now     func() time.Time
	log     *slog.Logger
	sleep   func(context.Context, time.Duration) error
	jitter  func(time.Duration) time.Duration
	limiter Limiter
	// limiterSet says WithLimiter chose the limiter, overriding
	// Config.RateLimit.
	limiterSet bool
	observe    Observer
	// skew is the server clock minus ours, learned from the Date header of
	// an 011 answer, so that a re-stamped retry lands inside the ±3 min
	// window even when the local clock is off.
	skew atomic.Int64
}

// Option customises a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (default: a new http.Client with no
// overall timeout; Config.Timeout bounds each attempt instead).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithClock sets the clock used for request timestamps (default time.Now).
func WithClock(now func() time.Time) Option { return func(c *Client) { c.now = now } }

// WithLogger sets the logger (default: discard). One debug line per attempt
// and a warning per retry; never bodies, headers or secrets.
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.log = l } }

// WithSleep replaces the backoff sleep, for tests. It must return ctx.Err()
// when ctx ends first.
func WithSleep(sleep func(ctx context.Context, d time.Duration) error) Option {
	return func(c *Client) { c.sleep = sleep }
}

// WithJitter replaces the jitter function, which maps a capped backoff d to
// the actual wait (default: uniform in [d/2, d]).
func WithJitter(jitter func(d time.Duration) time.Duration) Option {
	return func(c *Client) { c.jitter = jitter }
}

// Limiter paces calls; *rate.Limiter of golang.org/x/time/rate is one. Wait
// blocks until a call may go, or returns an error when ctx ends first.
type Limiter interface {
	Wait(ctx context.Context) error
}

// WithLimiter paces every attempt of this client with l instead of the
// limiter Config.RateLimit would build, e.g. to share one per-account limit
// among several clients or components. nil means no limiter.
func WithLimiter(l Limiter) Option {
	return func(c *Client) { c.limiter, c.limiterSet = l, true }
}

// Observer is told the outcome and duration of every attempt, for metrics:
// outcome is "ok", Calypso's error code ("016"), "http_<status>" for an
// error answer without a code, "transport" or "malformed". Bounded values
// only, so it can label a metric.
type Observer func(op, outcome string, took time.Duration)

// WithObserver sets the attempt observer (default: none).
func WithObserver(o Observer) Option { return func(c *Client) { c.observe = o } }

// outcome classifies an attempt's result for an Observer.
func outcome(err error) string {
	var api *APIError
	var tr *TransportError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &api) && api.Code != "":
		return api.Code
	case errors.As(err, &api):
		return "http_" + strconv.Itoa(api.HTTPStatus)
	case errors.As(err, &tr):
		return "transport"
	case errors.Is(err, ErrMalformedResponse):
		return "malformed"
	}
	return "other"
}

// NewClient validates cfg, applies defaults and returns a client.
func NewClient(cfg Config, opts ...Option) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{
		cfg:    cfg.withDefaults(),
		http:   &http.Client{},
		now:    time.Now,
		log:    slog.New(slog.DiscardHandler),
		sleep:  sleepCtx,
		jitter: halfJitter,
	}
	c.cfg.BaseURL = strings.TrimRight(c.cfg.BaseURL, "/")
	for _, o := range opts {
		o(c)
	}
	if !c.limiterSet {
		if l := newLimiter(c.cfg.RateLimit); l != nil {
			c.limiter = l
		}
	}
	return c, nil
}

// Config returns the effective configuration (defaults applied). The secret
// stays redacted when printed.
func (c *Client) Config() Config { return c.cfg }

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func halfJitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// envelope is the API 2.0 request body.
type envelope struct {
	Account   string          `json:"account,omitempty"`
	Timestamp int64           `json:"timestamp"`
	Payload   json.RawMessage `json:"payload,omitempty"`
}

// errorBody is Calypso's error answer.
type errorBody struct {
	ErrorCode string `json:"errorCode"`
	Message   string `json:"message"`
	TraceID   string `json:"traceId"`
}

// call performs op with retries. payload may be nil (no payload key);
// withAccount says whether the envelope carries the account.
func (c *Client) call(ctx context.Context, op, path string, withAccount bool, payload, out any) error {
	var raw json.RawMessage
	if payload != nil {
		b, err := json.Marshal(payload)
		if err != nil {
			return fmt.Errorf("calypso: %s: encode payload: %w", op, err)
		}
		raw = b
	}
	var (
		last    error
		reached bool // an attempt before the last may have reached Calypso
	)
	// fail marks the final error when an earlier attempt may have been
	// processed, so that MayHaveReached answers for the whole call.
	fail := func(attempts int, err error) error {
		if reached && !MayHaveReached(err) {
			return &earlierAttemptError{err: err, attempts: attempts}
		}
		return err
	}
	for attempt := 1; ; attempt++ {
		if c.limiter != nil {
			if err := c.limiter.Wait(ctx); err != nil {
				return fail(attempt-1, c.gaveUp(op, attempt-1, err, last))
			}
		}
		start := time.Now()
		err := c.attempt(ctx, op, path, withAccount, raw, out)
		if c.observe != nil {
			c.observe(op, outcome(err), time.Since(start))
		}
		if err == nil {
			return nil
		}
		if last != nil && MayHaveReached(last) {
			reached = true
		}
		last = err
		if ctx.Err() != nil {
			return fail(attempt, c.gaveUp(op, attempt, ctx.Err(), last))
		}
		if !Retryable(err) || attempt >= c.cfg.Retry.MaxAttempts {
			return fail(attempt, err)
		}
		d := c.backoff(attempt)
		var api *APIError
		if errors.As(err, &api) && api.RetryAfter > d {
			d = min(api.RetryAfter, c.cfg.Retry.MaxDelay)
		}
		c.log.LogAttrs(ctx, slog.LevelWarn, "calypso: retrying",
			slog.String("op", op), slog.Int("attempt", attempt), slog.Duration("backoff", d), slog.String("error", err.Error()))
		if serr := c.sleep(ctx, d); serr != nil {
			return fail(attempt, c.gaveUp(op, attempt, serr, last))
		}
	}
}

// gaveUp reports a context that ended during retries, keeping the last
// failure visible.
func (c *Client) gaveUp(op string, attempts int, ctxErr, last error) error {
	if last == nil {
		return fmt.Errorf("calypso: %s: %w", op, ctxErr)
	}
	return fmt.Errorf("calypso: %s: %w after %d attempt(s), last error: %w", op, ctxErr, attempts, last)
}

func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.Retry.BaseDelay
	for i := 1; i < attempt && d < c.cfg.Retry.MaxDelay; i++ {
		d *= 2
	}
	return c.jitter(min(d, c.cfg.Retry.MaxDelay))
}

// attempt sends one signed request with a fresh timestamp.
func (c *Client) attempt(ctx context.Context, op, path string, withAccount bool, payload json.RawMessage, out any) error {
	env := envelope{Timestamp: c.now().Add(time.Duration(c.skew.Load())).UnixMilli(), Payload: payload}
	if withAccount {
		env.Account = c.cfg.Account
	}
	body, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("calypso: %s: encode request: %w", op, err)
	}
	actx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	// sent turns true once request bytes may be on the wire; before that a
	// failure (dial refused, DNS, no connection before the deadline) means
	// Calypso never saw the request.
	var sent atomic.Bool
	actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{
		WroteHeaderField: func(string, []string) { sent.Store(true) },
		WroteHeaders:     func() { sent.Store(true) },
	})
	req, err := http.NewRequestWithContext(actx, http.MethodPost, c.cfg.BaseURL+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("calypso: %s: %w", op, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderKey, c.cfg.APIKey)
	req.Header.Set(HeaderSign, SignBody(c.cfg.APISecret, body))

	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		c.log.LogAttrs(ctx, slog.LevelDebug, "calypso: request failed", slog.String("op", op), slog.Duration("took", time.Since(start)))
		return &TransportError{Op: op, Err: err, Sent: sent.Load()}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return &TransportError{Op: op, Err: fmt.Errorf("read response: %w", err), Sent: true}
	}
	c.log.LogAttrs(ctx, slog.LevelDebug, "calypso: response", slog.String("op", op),
		slog.Int("status", resp.StatusCode), slog.Duration("took", time.Since(start)))

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		apiErr := decodeError(op, resp, data)
		if apiErr.Code == CodeInvalidTimestamp {
			c.learnSkew(ctx, resp.Header.Get("Date"))
		}
		return apiErr
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("calypso: %s: %w: %w", op, ErrMalformedResponse, err)
	}
	return nil
}

func decodeError(op string, resp *http.Response, data []byte) *APIError {
	e := &APIError{Op: op, HTTPStatus: resp.StatusCode}
	var eb errorBody
	if json.Unmarshal(data, &eb) == nil && eb.ErrorCode != "" {
		e.Code, e.Message, e.TraceID = eb.ErrorCode, eb.Message, eb.TraceID
	} else {
		e.Message = truncate(strings.TrimSpace(string(data)), 200)
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if s, err := strconv.Atoi(ra); err == nil && s >= 0 {
			e.RetryAfter = time.Duration(s) * time.Second
		}
	}
	return e
}

func (c *Client) learnSkew(ctx context.Context, date string) {
	if date == "" {
		return
	}
	st, err := http.ParseTime(date)
	if err != nil {
		return
	}
	skew := st.Sub(c.now())
	c.skew.Store(int64(skew))
	c.log.LogAttrs(ctx, slog.LevelWarn, "calypso: clock skew detected from error 011; adjusting timestamps",
		slog.Duration("skew", skew))
}

// limiter spaces requests at least 1/rate apart (a token bucket of one).
type limiter struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

// newLimiter returns nil (no limiter) for a rate of zero or below.
func newLimiter(rate float64) *limiter {
	if rate <= 0 {
		return nil
	}
	return &limiter{interval: time.Duration(float64(time.Second) / rate)}
}

// Wait implements Limiter.
func (l *limiter) Wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	d := l.next.Sub(now)
	l.next = l.next.Add(l.interval)
	l.mu.Unlock()
	if d <= 0 {
		return nil
	}
	return sleepCtx(ctx, d)
}
