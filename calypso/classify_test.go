package calypso_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/calypso/sandbox"
)

// oneAttempt makes the client try each call exactly once, as the
// submitter's lanes use it, so each call meets each answer once.
func oneAttempt(c *calypso.Config) { c.Retry.MaxAttempts = 1 }

// stub answers every request with status and body, counting them.
func stub(t *testing.T, status int, body string) (url string, calls *atomic.Int32) {
	t.Helper()
	calls = &atomic.Int32{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		calls.Add(1)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, calls
}

func stubClient(t *testing.T, url string, edit func(*calypso.Config)) *calypso.Client {
	t.Helper()
	cfg := calypso.Config{BaseURL: url, Account: testAccount, APIKey: testKey, APISecret: testSecret, RateLimit: -1,
		Timeout: 5 * time.Second, Retry: calypso.RetryPolicy{MaxAttempts: 1}}
	if edit != nil {
		edit(&cfg)
	}
	c, err := calypso.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var sentinels = []error{calypso.ErrIdempotencyKeyExists, calypso.ErrValidationFailed, calypso.ErrInsufficientBalance,
	calypso.ErrNotFound, calypso.ErrAuth, calypso.ErrRateLimited, calypso.ErrInvalidRequest, calypso.ErrMalformedResponse}

// matches lists the sentinels err matches, by errors.Is.
func matches(err error) []error {
	var out []error
	for _, s := range sentinels {
		if errors.Is(err, s) {
			out = append(out, s)
		}
	}
	return out
}

// Every kind of failure a call can meet, classified: which sentinel it
// matches, whether Calypso may have processed it, and that the error names
// the operation and the code and never the secret.
func TestClientClassifiesErrors(t *testing.T) {
	ctx := context.Background()
	type want struct {
		is      []error // exactly these sentinels
		reached bool    // MayHaveReached
		text    []string
	}
	tests := []struct {
		name string
		run  func(t *testing.T) error
		want want
	}{
		{"016 key reuse", func(t *testing.T) error {
			e := newEnv(t, nil, oneAttempt)
			r := btcRequest("0.1")
			if _, err := e.client.CreateMassPayout(ctx, r); err != nil {
				t.Fatal(err)
			}
			_, err := e.client.CreateMassPayout(ctx, r)
			return err
		}, want{is: []error{calypso.ErrIdempotencyKeyExists}, text: []string{calypso.OpCreateMassPayout, "error 016"}}},

		{"016 validation failed on a reused key", func(t *testing.T) error {
			e := newEnv(t, func(c *sandbox.Config) { c.Faults.ValidationAfterAmbiguous = 1 }, oneAttempt)
			r := btcRequest("0.1")
			if _, err := e.client.CreateMassPayout(ctx, r); err != nil {
				t.Fatal(err)
			}
			_, err := e.client.CreateMassPayout(ctx, r)
			return err
		}, want{is: []error{calypso.ErrValidationFailed}, text: []string{calypso.OpCreateMassPayout, "error 016", "Validation failed"}}},

		{"016 insufficient balance", func(t *testing.T) error {
			e := newEnv(t, nil, oneAttempt)
			_, err := e.client.CreateMassPayout(ctx, btcRequest("11"))
			return err
		}, want{is: []error{calypso.ErrValidationFailed, calypso.ErrInsufficientBalance}, text: []string{"error 016"}}},

		{"004 not found", func(t *testing.T) error {
			_, err := newEnv(t, nil, oneAttempt).client.MassPayout(ctx, "999")
			return err
		}, want{is: []error{calypso.ErrNotFound}, text: []string{calypso.OpGetMassPayout, "error 004"}}},

		{"004 while the read side lags", func(t *testing.T) error {
			e := newEnv(t, func(c *sandbox.Config) { c.Faults.LookupLag = time.Hour }, oneAttempt)
			r := btcRequest("0.1")
			if _, err := e.client.CreateMassPayout(ctx, r); err != nil {
				t.Fatal(err)
			}
			_, err := e.client.MassPayoutByIdempotencyKey(ctx, r.IdempotencyKey)
			return err
		}, want{is: []error{calypso.ErrNotFound}, text: []string{"error 004"}}},

		{"002 unknown key", func(t *testing.T) error {
			e := newEnv(t, nil, func(c *calypso.Config) { c.APIKey = "nope"; oneAttempt(c) })
			_, err := e.client.Account(ctx)
			return err
		}, want{is: []error{calypso.ErrAuth}, text: []string{calypso.OpAccount, "error 002"}}},

		{"003 wrong sign", func(t *testing.T) error {
			e := newEnv(t, nil, func(c *calypso.Config) { c.APISecret = "wrong"; oneAttempt(c) })
			_, err := e.client.Account(ctx)
			return err
		}, want{is: []error{calypso.ErrAuth}, text: []string{"error 003"}}},

		{"HTTP 401 without a code", func(t *testing.T) error {
			url, _ := stub(t, 401, "Unauthorized")
			_, err := stubClient(t, url, nil).Account(ctx)
			return err
		}, want{is: []error{calypso.ErrAuth}, text: []string{"HTTP 401"}}},

		{"the code decides over the status: 401 with 001", func(t *testing.T) error {
			url, _ := stub(t, 401, `{"errorCode":"001","message":"bad field"}`)
			_, err := stubClient(t, url, nil).Account(ctx)
			return err
		}, want{text: []string{"error 001"}}},

		{"429 from the per-account limit", func(t *testing.T) error {
			e := newEnv(t, func(c *sandbox.Config) { c.Faults.AccountRateLimit = map[string]float64{testAccount: 0.001} }, oneAttempt)
			if _, err := e.client.Account(ctx); err != nil {
				t.Fatal(err)
			}
			r := btcRequest("0.1")
			_, err := e.client.CreateMassPayout(ctx, r)
			if n := e.sb.CreateCount(r.IdempotencyKey); n != 0 {
				t.Fatalf("a 429 create was processed %d times", n)
			}
			return err
		}, want{is: []error{calypso.ErrRateLimited}, text: []string{calypso.OpCreateMassPayout, "HTTP 429"}}},

		{"500 with 000", func(t *testing.T) error {
			url, _ := stub(t, 500, `{"errorCode":"000","message":"Internal server error"}`)
			_, err := stubClient(t, url, nil).Account(ctx)
			return err
		}, want{reached: true, text: []string{"error 000"}}},

		{"000 with status 400", func(t *testing.T) error {
			url, _ := stub(t, 400, `{"errorCode":"000","message":"Internal server error"}`)
			_, err := stubClient(t, url, nil).Account(ctx)
			return err
		}, want{reached: true, text: []string{"error 000"}}},

		{"502 from a proxy", func(t *testing.T) error {
			url, _ := stub(t, 502, "<html>bad gateway</html>")
			_, err := stubClient(t, url, nil).Account(ctx)
			return err
		}, want{reached: true, text: []string{"HTTP 502"}}},

		{"011 timestamp refused", func(t *testing.T) error {
			url, _ := stub(t, 400, `{"errorCode":"011","message":"Invalid timestamp parameter"}`)
			_, err := stubClient(t, url, nil).Account(ctx)
			return err
		}, want{text: []string{"error 011"}}},

		{"001 refused", func(t *testing.T) error {
			e := newEnv(t, func(c *sandbox.Config) { c.Faults.RefusedAddresses = []string{"bc1qaddr1"} }, oneAttempt)
			_, err := e.client.CreateMassPayout(ctx, btcRequest("0.1", "0.2"))
			return err
		}, want{text: []string{"error 001", "massAddresses[1].depositAddress: invalid address bc1qaddr1"}}},

		{"undecodable 2xx", func(t *testing.T) error {
			url, _ := stub(t, 200, "{")
			_, err := stubClient(t, url, nil).Account(ctx)
			return err
		}, want{is: []error{calypso.ErrMalformedResponse}, reached: true, text: []string{calypso.OpAccount}}},

		{"response lost after the create reached the server", func(t *testing.T) error {
			e := newEnv(t, nil, oneAttempt)
			e.sb.InjectFault(calypso.PathMassCreate, sandbox.FaultLostResponse)
			r := btcRequest("0.1")
			_, err := e.client.CreateMassPayout(ctx, r)
			if _, ok := e.sb.PayoutByIdempotencyKey(r.IdempotencyKey); !ok {
				t.Fatal("the lost create was not processed by the sandbox")
			}
			return err
		}, want{reached: true, text: []string{calypso.OpCreateMassPayout}}},

		{"timeout after the request was written", func(t *testing.T) error {
			e := newEnv(t, func(c *sandbox.Config) { c.Faults.HangAccounts = map[string]bool{testAccount: true} },
				func(c *calypso.Config) { c.Timeout = 100 * time.Millisecond; oneAttempt(c) })
			_, err := e.client.CreateMassPayout(ctx, btcRequest("0.1"))
			return err
		}, want{reached: true, text: []string{calypso.OpCreateMassPayout}}},

		{"connection refused: never sent", func(t *testing.T) error {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			l.Close()
			_, err = stubClient(t, "http://"+addr, nil).CreateMassPayout(ctx, btcRequest("0.1"))
			return err
		}, want{text: []string{calypso.OpCreateMassPayout}}},

		{"DNS error: never sent", func(t *testing.T) error {
			_, err := stubClient(t, "http://calypso.invalid", nil).CreateMassPayout(ctx, btcRequest("0.1"))
			var dns *net.DNSError
			if !errors.As(err, &dns) {
				t.Fatalf("want a DNS error, got %v", err)
			}
			return err
		}, want{text: []string{calypso.OpCreateMassPayout}}},

		{"context ended before sending", func(t *testing.T) error {
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			url, calls := stub(t, 200, "{}")
			_, err := stubClient(t, url, nil).CreateMassPayout(cctx, btcRequest("0.1"))
			if calls.Load() != 0 {
				t.Fatal("sent after the context ended")
			}
			return err
		}, want{text: []string{calypso.OpCreateMassPayout}}},

		{"refused locally", func(t *testing.T) error {
			_, err := stubClient(t, "http://127.0.0.1:1", nil).CreateMassPayout(ctx, btcRequest("-1"))
			return err
		}, want{is: []error{calypso.ErrInvalidRequest}}},

		// With retries: the first attempt's answer is lost after the create,
		// the retry gets 016 "Validation failed". The call may have reached
		// Calypso although its last answer is a definitive refusal.
		{"validation failed after a lost answer, with retries", func(t *testing.T) error {
			e := newEnv(t, func(c *sandbox.Config) { c.Faults.ValidationAfterAmbiguous = 1 }, nil)
			e.sb.InjectFault(calypso.PathMassCreate, sandbox.FaultLostResponse)
			_, err := e.client.CreateMassPayout(ctx, btcRequest("0.1"))
			return err
		}, want{is: []error{calypso.ErrValidationFailed}, reached: true, text: []string{"error 016", "an earlier one may have reached Calypso"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run(t)
			if err == nil {
				t.Fatal("want an error")
			}
			if got := matches(err); len(got) != len(tt.want.is) || (len(got) > 0 && !sameErrs(got, tt.want.is)) {
				t.Errorf("matches %v, want %v (%v)", got, tt.want.is, err)
			}
			if got := calypso.MayHaveReached(err); got != tt.want.reached {
				t.Errorf("MayHaveReached = %v, want %v (%v)", got, tt.want.reached, err)
			}
			for _, s := range tt.want.text {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
			if strings.Contains(err.Error(), testSecret.Reveal()) {
				t.Errorf("secret in error: %v", err)
			}
		})
	}
}

func sameErrs(a, b []error) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// One attempt per call: a 5xx is returned, not retried.
func TestClientOneAttempt(t *testing.T) {
	url, calls := stub(t, 503, "busy")
	_, err := stubClient(t, url, func(c *calypso.Config) { c.Retry.MaxAttempts = 1 }).Account(context.Background())
	if err == nil || calls.Load() != 1 {
		t.Fatalf("%d attempts, err %v; want exactly one", calls.Load(), err)
	}
	// The default still retries.
	url, calls = stub(t, 503, "busy")
	_, err = stubClient(t, url, func(c *calypso.Config) {
		c.Retry = calypso.RetryPolicy{BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}
	}).Account(context.Background())
	if err == nil || calls.Load() != calypso.DefaultMaxAttempts {
		t.Fatalf("%d attempts by default, want %d", calls.Load(), calypso.DefaultMaxAttempts)
	}
}

type countingLimiter struct{ n atomic.Int32 }

func (l *countingLimiter) Wait(ctx context.Context) error { l.n.Add(1); return ctx.Err() }

// WithLimiter replaces the built-in limiter: one limiter shared by two
// clients sees every attempt of both; nil means none.
func TestClientWithLimiter(t *testing.T) {
	url, calls := stub(t, 200, `{"account":"a","balances":[]}`)
	shared := &countingLimiter{}
	a := stubClient(t, url, nil)
	a, _ = calypso.NewClient(a.Config(), calypso.WithLimiter(shared))
	b, _ := calypso.NewClient(a.Config(), calypso.WithLimiter(shared))
	for _, c := range []*calypso.Client{a, b, a} {
		if _, err := c.Account(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if shared.n.Load() != 3 || calls.Load() != 3 {
		t.Fatalf("limiter saw %d of %d calls", shared.n.Load(), calls.Load())
	}
	// nil: no limiter at all, even with a RateLimit configured.
	cfg := a.Config()
	cfg.RateLimit = 0.001
	c, _ := calypso.NewClient(cfg, calypso.WithLimiter(nil))
	for range 3 {
		if _, err := c.Account(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// The code decides, the status only when the code is absent or unknown.
func TestAPIErrorCodeFirst(t *testing.T) {
	tests := []struct {
		name                string
		err                 *calypso.APIError
		retryable, mayReach bool
		is                  error
	}{
		{"001 on a 500", &calypso.APIError{HTTPStatus: 500, Code: "001"}, false, false, nil},
		{"016 on a 500", &calypso.APIError{HTTPStatus: 500, Code: "016", Message: "IdempotencyKey k already exists"}, false, false, calypso.ErrIdempotencyKeyExists},
		{"016 without a known wording", &calypso.APIError{HTTPStatus: 400, Code: "016", Message: "something new"}, false, false, calypso.ErrValidationFailed},
		{"000 on a 400", &calypso.APIError{HTTPStatus: 400, Code: "000"}, true, true, nil},
		{"002 on a 400", &calypso.APIError{HTTPStatus: 400, Code: "002"}, false, false, calypso.ErrAuth},
		{"unknown code on a 503", &calypso.APIError{HTTPStatus: 503, Code: "099"}, true, true, nil},
		{"unknown code on a 400", &calypso.APIError{HTTPStatus: 400, Code: "099"}, false, false, nil},
		{"429", &calypso.APIError{HTTPStatus: 429}, true, false, calypso.ErrRateLimited},
		{"408", &calypso.APIError{HTTPStatus: 408}, true, true, nil},
		{"403", &calypso.APIError{HTTPStatus: 403}, false, false, nil},
		{"012", &calypso.APIError{HTTPStatus: 400, Code: "012"}, false, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := calypso.Retryable(tt.err); got != tt.retryable {
				t.Errorf("Retryable = %v", got)
			}
			if got := calypso.MayHaveReached(tt.err); got != tt.mayReach {
				t.Errorf("MayHaveReached = %v", got)
			}
			got := matches(tt.err)
			if (tt.is == nil) != (len(got) == 0) || (tt.is != nil && (len(got) != 1 || got[0] != tt.is)) {
				t.Errorf("matches %v, want %v", got, tt.is)
			}
		})
	}
	if calypso.MayHaveReached(nil) {
		t.Error("MayHaveReached(nil)")
	}
}
