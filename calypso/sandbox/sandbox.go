package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/payoutd/payoutd/calypso"
)

// timestampWindow is Calypso's tolerance for the request timestamp.
const timestampWindow = 180000 // ms

// maxBody bounds request bodies.
const maxBody = 16 << 20

// Sandbox is a Calypso stand-in. Create it with New, stop it with Close.
type Sandbox struct {
	cfg  Config
	mux  *http.ServeMux
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu     sync.Mutex // guards everything below
	closed bool
	rng    *rand.Rand // payout processing and webhook faults
	// apiRng draws the faults of API requests, apart from rng so that
	// payouts processing in the background do not shift a request's draw:
	// one seed, one sequence of request faults.
	apiRng    *rand.Rand
	accounts  map[string]*account // by account id
	byKey     map[string]*account // by API key
	payouts   map[string]*payout
	order     []*payout
	byIdem    map[string]*payout
	items     map[string]*item // by withdrawal id
	nextID    int64
	nextWID   int64
	requests  map[string]map[string]int
	creates   map[string]int
	forced    map[string]calypso.State
	injected  map[string][]Fault
	webhooks  []*webhookRecord
	nextEvent int64
	outbox    []*delivery
	nextSeq   uint64
	wake      chan struct{}
	// buckets are the AccountRateLimit token buckets, by account id.
	buckets map[string]*bucket
	// faultsChanged is closed and replaced whenever SetFaults runs, to wake
	// the requests hanging on HangAccounts.
	faultsChanged chan struct{}
	// inFlight counts API requests being handled (hung ones included).
	inFlight atomic.Int64
}

type account struct {
	id       string
	name     string
	key      string
	secret   calypso.Secret
	balances map[string]calypso.Amount
}

// New returns a running sandbox.
func New(cfg Config) *Sandbox {
	cfg = cfg.withDefaults()
	ctx, stop := context.WithCancel(context.Background())
	s := &Sandbox{
		cfg:      cfg,
		ctx:      ctx,
		stop:     stop,
		rng:      newRand(cfg.Faults.Seed, rngStream),
		apiRng:   newRand(cfg.Faults.Seed, apiRngStream),
		accounts: map[string]*account{},
		byKey:    map[string]*account{},
		payouts:  map[string]*payout{},
		byIdem:   map[string]*payout{},
		items:    map[string]*item{},
		nextID:   100000,
		nextWID:  500000,
		requests: map[string]map[string]int{},
		creates:  map[string]int{},
		forced:   map[string]calypso.State{},
		injected: map[string][]Fault{},
		wake:     make(chan struct{}, 1),
		buckets:  map[string]*bucket{},

		faultsChanged: make(chan struct{}),
	}
	for id, a := range cfg.Accounts {
		acc := &account{id: id, name: a.Name, key: a.APIKey, secret: a.APISecret, balances: map[string]calypso.Amount{}}
		for cur, amt := range a.Balances {
			acc.balances[cur] = amt
		}
		s.accounts[id] = acc
		s.byKey[a.APIKey] = acc
	}
	s.mux = http.NewServeMux()
	s.routes()
	s.wg.Add(1)
	go s.deliverLoop()
	return s
}

// Close stops the sandbox's goroutines (payout processing and webhook
// delivery) and waits for them. Payouts freeze in their current state.
func (s *Sandbox) Close() {
	s.mu.Lock()
	s.closed = true // no new payout goroutines after this
	s.mu.Unlock()
	s.stop()
	s.wg.Wait()
}

// ServeHTTP implements http.Handler.
func (s *Sandbox) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// ListenAndServe serves the sandbox on addr until ctx ends, then shuts the
// server down and closes the sandbox.
func (s *Sandbox) ListenAndServe(ctx context.Context, addr string) error {
	srv := &http.Server{Addr: addr, Handler: s, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		s.Close()
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		s.Close()
		return err
	}
}

func (s *Sandbox) routes() {
	s.mux.HandleFunc("POST "+calypso.PathAccount, s.api(calypso.PathAccount, s.handleAccount))
	s.mux.HandleFunc("POST "+calypso.PathExtendedFee, s.api(calypso.PathExtendedFee, s.handleExtendedFee))
	s.mux.HandleFunc("POST "+calypso.PathMassCreate, s.api(calypso.PathMassCreate, s.handleCreate))
	s.mux.HandleFunc("POST "+calypso.PathMass, s.api(calypso.PathMass, s.handleGetMass))
	s.mux.HandleFunc("POST "+calypso.PathWithdrawal, s.api(calypso.PathWithdrawal, s.handleWithdrawal))
	s.withdrawalRoutes()
	s.introspectionRoutes()
	s.faultRoutes()
}

func (s *Sandbox) now() time.Time { return s.cfg.Now() }

func (s *Sandbox) scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * s.cfg.TimeScale)
}

// apiError is an error answer.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + " " + e.message }

func errBadRequest(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, calypso.CodeBadRequest, fmt.Sprintf(format, args...)}
}

// request is what a handler gets: the authenticated account and the raw
// payload (nil when absent).
type request struct {
	acc     *account
	account string // envelope account, may be empty
	payload json.RawMessage
}

type handler func(req *request) (any, *apiError)

// api wraps a handler with fault injection, authentication, envelope
// parsing and bookkeeping.
func (s *Sandbox) api(path string, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.inFlight.Add(1)
		defer s.inFlight.Add(-1)
		w.Header().Set("Date", s.now().UTC().Format(http.TimeFormat))
		// Read the body first: once it is consumed the server notices a
		// client that hangs up, which ends a slow response early.
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
		if err != nil {
			s.count(path, "error:"+calypso.CodeBadRequest)
			writeJSON(w, http.StatusBadRequest, map[string]string{"errorCode": calypso.CodeBadRequest, "message": "cannot read body"})
			return
		}
		if !s.accountFaults(path, w, r) {
			return
		}
		fault, slowDelay := s.drawFault(path)
		switch fault {
		case Fault5xx:
			s.count(path, "fault:5xx")
			if s.coin() {
				writeJSON(w, http.StatusInternalServerError, map[string]string{"errorCode": calypso.CodeInternal, "message": "Internal server error"})
			} else {
				w.Header().Set("Content-Type", "text/html")
				w.WriteHeader(http.StatusBadGateway)
				_, _ = io.WriteString(w, "<html><body>502 Bad Gateway</body></html>")
			}
			return
		case Fault429:
			s.count(path, "fault:429")
			w.Header().Set("Retry-After", "1")
			http.Error(w, "Too Many Requests", http.StatusTooManyRequests)
			return
		case FaultReset:
			s.count(path, "fault:reset")
			resetConn(w)
			return
		case FaultSlow:
			s.count(path, "fault:slow")
			t := time.NewTimer(slowDelay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			case <-s.ctx.Done():
				t.Stop()
				return
			}
		}

		resp, aerr := s.process(path, r, body, h)
		if fault == FaultLostResponse {
			s.count(path, "fault:lost-response")
			resetConn(w)
			return
		}
		if aerr != nil {
			s.count(path, "error:"+aerr.code)
			s.cfg.Logger.Debug("sandbox: request refused", "path", path, "code", aerr.code, "message", aerr.message)
			writeJSON(w, aerr.status, map[string]string{"errorCode": aerr.code, "message": aerr.message})
			return
		}
		s.count(path, "ok")
		writeJSON(w, http.StatusOK, resp)
	}
}

// process authenticates and parses the request, then runs h.
func (s *Sandbox) process(path string, r *http.Request, body []byte, h handler) (any, *apiError) {
	s.mu.Lock()
	acc := s.byKey[r.Header.Get(calypso.HeaderKey)]
	s.mu.Unlock()
	if acc == nil || r.Header.Get(calypso.HeaderKey) == "" {
		return nil, &apiError{http.StatusUnauthorized, calypso.CodeInvalidAPIKey, "Invalid api key"}
	}
	if err := calypso.NewWebhookVerifier(calypso.WebhookKeys{acc.key: acc.secret}).Verify(acc.key, r.Header.Get(calypso.HeaderSign), body); err != nil {
		return nil, &apiError{http.StatusUnauthorized, calypso.CodeWrongSign, "Wrong sign"}
	}
	var env struct {
		Account   *string         `json:"account"`
		Timestamp *json.Number    `json:"timestamp"`
		Payload   json.RawMessage `json:"payload"`
	}
	if err := strictDecode(body, &env); err != nil {
		return nil, errBadRequest("invalid request body: %v", err)
	}
	if env.Timestamp == nil {
		return nil, &apiError{http.StatusBadRequest, calypso.CodeInvalidTimestamp, "Invalid timestamp parameter"}
	}
	ts, err := strconv.ParseInt(env.Timestamp.String(), 10, 64)
	if d := s.now().UnixMilli() - ts; err != nil || d > timestampWindow || d < -timestampWindow {
		return nil, &apiError{http.StatusBadRequest, calypso.CodeInvalidTimestamp, "Invalid timestamp parameter"}
	}
	req := &request{acc: acc, payload: env.Payload}
	if env.Account != nil {
		req.account = *env.Account
		if req.account != acc.id {
			return nil, errBadRequest("account %q does not belong to the api key", req.account)
		}
	} else if path != calypso.PathExtendedFee {
		// Only the tariff call is documented without an account.
		return nil, errBadRequest("account is required")
	}
	if bytes.Equal(bytes.TrimSpace(req.payload), []byte("null")) {
		req.payload = nil
	}
	return h(req)
}

// strictDecode decodes one JSON value into v, refusing unknown fields and
// trailing data, so the client's request shape is pinned by tests.
func strictDecode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after JSON value")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

// number is a JSON number read exactly; strings are refused, since Calypso's
// examples always send numbers.
type number struct{ calypso.Amount }

func (n *number) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] == '"' || bytes.Equal(b, []byte("null")) {
		return fmt.Errorf("amount must be a JSON number, got %.40s", b)
	}
	return n.Amount.UnmarshalJSON(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"errorCode":"000","message":"Internal server error"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// resetConn drops the connection without an answer: an RST when the
// connection can be hijacked, otherwise an aborted response.
func resetConn(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

func (s *Sandbox) count(path, outcome string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.requests[path]
	if m == nil {
		m = map[string]int{}
		s.requests[path] = m
	}
	m[outcome]++
}

// drawFault takes a queued fault for path, or draws one at random. It also
// returns how long a slow response stalls.
func (s *Sandbox) drawFault(path string) (Fault, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.cfg.Faults
	for _, k := range []string{path, ""} {
		if q := s.injected[k]; len(q) > 0 {
			s.injected[k] = q[1:]
			return q[0], f.SlowDelay
		}
	}
	switch {
	case s.apiChance(f.ConnReset):
		return FaultReset, f.SlowDelay
	case s.apiChance(f.API5xx):
		return Fault5xx, f.SlowDelay
	case s.apiChance(f.API429):
		return Fault429, f.SlowDelay
	case s.apiChance(f.SlowResponse):
		return FaultSlow, f.SlowDelay
	case s.apiChance(f.LostResponse):
		return FaultLostResponse, f.SlowDelay
	}
	return "", f.SlowDelay
}

// chance draws with probability p; s.mu must be held.
func (s *Sandbox) chance(p float64) bool { return p > 0 && s.rng.Float64() < p }

// apiChance draws a request fault with probability p; s.mu must be held.
func (s *Sandbox) apiChance(p float64) bool { return p > 0 && s.apiRng.Float64() < p }

// Streams of the two generators drawn from one seed.
const (
	rngStream    = 0x9e3779b97f4a7c15
	apiRngStream = 0x5851f42d4c957f2d
)

func newRand(seed int64, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), stream))
}

func (s *Sandbox) coin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apiRng.IntN(2) == 0
}

// InjectFault queues faults for the next requests to path (one fault per
// request, in order); path "" applies to any API path. Queued faults come
// before the random ones of Config.Faults.
func (s *Sandbox) InjectFault(path string, faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.injected[path] = append(s.injected[path], faults...)
}

// logAttrs is a helper so every log line carries the payout id.
func payoutAttr(id string) slog.Attr { return slog.String("payout", id) }
