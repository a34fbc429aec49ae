package calypso_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/calypso/sandbox"
)

const (
	testAccount = "0xc195df92dd9db2a8f28e597981f113d6e7582f8b"
	testKey     = "c529e14832b34b74972365cf7bf02430"
	testSecret  = calypso.Secret("b823a6b9ea72408583cef9ec8d67fa52")
)

var amt = calypso.MustParseAmount

type env struct {
	sb     *sandbox.Sandbox
	srv    *httptest.Server
	cfg    calypso.Config
	client *calypso.Client
	logs   *bytes.Buffer
}

// newEnv starts a sandbox and a client pointed at it. The edit functions
// may adjust either configuration before use.
func newEnv(t *testing.T, editSandbox func(*sandbox.Config), editClient func(*calypso.Config), opts ...calypso.Option) *env {
	t.Helper()
	scfg := sandbox.Config{
		Accounts: map[string]sandbox.Account{testAccount: {
			Name: "test", APIKey: testKey, APISecret: testSecret,
			Balances: map[string]calypso.Amount{"BTC": amt("10"), "ETH": amt("1000"), "USDT": amt("100000000000000000000")},
		}},
		Tariff: map[string]sandbox.Fee{
			"BTC":  {Fixed: amt("0.0001"), Percent: amt("0.5")},
			"USDT": {Fixed: amt("1"), Percent: amt("0.1")},
		},
		TimeScale: 0.001,
	}
	if editSandbox != nil {
		editSandbox(&scfg)
	}
	sb := sandbox.New(scfg)
	srv := httptest.NewServer(sb)
	t.Cleanup(func() { sb.Close(); srv.Close() }) // sb first: it ends hanging requests srv.Close waits for
	ccfg := calypso.Config{
		BaseURL: srv.URL, Account: testAccount, APIKey: testKey, APISecret: testSecret,
		RateLimit: -1, Timeout: 5 * time.Second,
		Retry: calypso.RetryPolicy{MaxAttempts: 4, BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond},
	}
	if editClient != nil {
		editClient(&ccfg)
	}
	logs := &bytes.Buffer{}
	opts = append([]calypso.Option{calypso.WithLogger(slog.New(slog.NewTextHandler(&syncWriter{w: logs}, &slog.HandlerOptions{Level: slog.LevelDebug})))}, opts...)
	c, err := calypso.NewClient(ccfg, opts...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return &env{sb: sb, srv: srv, cfg: ccfg, client: c, logs: logs}
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func btcRequest(items ...string) calypso.MassPayoutRequest {
	r := calypso.MassPayoutRequest{Currency: "BTC", Name: "batch", Comment: "test", IdempotencyKey: uuid.NewString(), ExternalID: "batch-1"}
	for i, a := range items {
		r.Items = append(r.Items, calypso.MassPayoutItem{DepositAddress: fmt.Sprintf("bc1qaddr%d", i), Amount: amt(a), Comment: fmt.Sprintf("intent-%d", i)})
	}
	return r
}

func TestClientOperations(t *testing.T) {
	e := newEnv(t, nil, nil)
	ctx := context.Background()

	acc, err := e.client.Account(ctx)
	if err != nil {
		t.Fatalf("Account: %v", err)
	}
	if bal, ok := acc.Balance("BTC"); acc.Account != testAccount || !ok || !bal.Equal(amt("10")) {
		t.Fatalf("Account = %+v", acc)
	}

	quotes, err := e.client.ExtendedFee(ctx, []calypso.FeeQuery{
		{BaseAmount: amt("1"), Currency: "BTC", OpType: calypso.OpTypeWithdrawal},
		{BaseAmount: amt("0.5"), Currency: "BTC", OpType: calypso.OpTypeWithdrawal, FeeType: calypso.FeeFix},
	})
	if err != nil {
		t.Fatalf("ExtendedFee: %v", err)
	}
	// 0.0001 fixed + 0.5% of 1.
	if q := quotes[0]; !q.FeeSender.Fee.Equal(amt("0.0051")) || !q.FeeSender.Amount.Equal(amt("1.0051")) || !q.FeeReceiver.Amount.Equal(amt("0.9949")) {
		t.Fatalf("quote 0 = %+v", q)
	}
	if q := quotes[1]; !q.FeeReceiver.Fee.Equal(amt("0.0001")) || !q.FeeReceiver.FixedFee.Equal(amt("0.0001")) {
		t.Fatalf("quote 1 = %+v", q)
	}

	req := btcRequest("1", "0.5")
	exec := time.Now().Add(time.Hour)
	req.ExecutionDate = &exec
	created, err := e.client.CreateMassPayout(ctx, req)
	if err != nil {
		t.Fatalf("CreateMassPayout: %v", err)
	}
	if created.ID == "" || created.State != calypso.StateCreationInProgress || created.IdempotencyKey != req.IdempotencyKey ||
		!created.TotalWithdrawalAmount.Equal(amt("1.5")) || created.ExternalID != "batch-1" ||
		!created.ExecutionDate.Equal(exec.Truncate(time.Millisecond)) {
		t.Fatalf("created = %+v", created)
	}
	// The debit is what the fee pre-calculation said: sum of amount + fee.
	want := amt("10").Sub(quotes[0].FeeSender.Amount).Sub(amt("0.5")).Sub(amt("0.0001")).Sub(amt("0.0025"))
	if !created.TotalFee.Equal(amt("0.0077")) || !e.sb.Balance(testAccount, "BTC").Equal(want) {
		t.Fatalf("fee %s, balance %s, want %s", created.TotalFee, e.sb.Balance(testAccount, "BTC"), want)
	}

	byID, err := e.client.MassPayout(ctx, string(created.ID))
	if err != nil {
		t.Fatalf("MassPayout: %v", err)
	}
	byKey, err := e.client.MassPayoutByIdempotencyKey(ctx, req.IdempotencyKey)
	if err != nil {
		t.Fatalf("MassPayoutByIdempotencyKey: %v", err)
	}
	if byID.ID != created.ID || byKey.ID != created.ID || byKey.Name != "batch" || byKey.Currency != "BTC" {
		t.Fatalf("byID %+v byKey %+v", byID, byKey)
	}

	p, ok := e.sb.Payout(string(created.ID))
	if !ok || len(p.Items) != 2 || p.Items[1].Comment != "intent-1" {
		t.Fatalf("sandbox payout %+v", p)
	}
	w, err := e.client.Withdrawal(ctx, p.Items[1].WithdrawalID)
	if err != nil {
		t.Fatalf("Withdrawal: %v", err)
	}
	if w.DepositAddress != "bc1qaddr1" || !w.Amount.Equal(amt("0.5")) || w.Comment != "intent-1" {
		t.Fatalf("withdrawal %+v", w)
	}
}

func TestClientAmountsExact(t *testing.T) {
	e := newEnv(t, nil, nil)
	ctx := context.Background()
	tests := []struct{ currency, amount string }{
		{"ETH", "0.000000000000000001"},
		{"USDT", "12345678901234567.123456"},
	}
	for _, tt := range tests {
		t.Run(tt.currency+" "+tt.amount, func(t *testing.T) {
			before := e.sb.Balance(testAccount, tt.currency)
			req := calypso.MassPayoutRequest{Currency: tt.currency, Name: "exact", IdempotencyKey: uuid.NewString(),
				Items: []calypso.MassPayoutItem{{DepositAddress: "addr", Amount: amt(tt.amount)}}}
			created, err := e.client.CreateMassPayout(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.client.MassPayout(ctx, string(created.ID))
			if err != nil {
				t.Fatal(err)
			}
			if got.TotalWithdrawalAmount.String() != tt.amount {
				t.Fatalf("total %s, want %s", got.TotalWithdrawalAmount, tt.amount)
			}
			p, _ := e.sb.Payout(string(created.ID))
			if p.Items[0].Amount.String() != tt.amount {
				t.Fatalf("sandbox saw %s, want %s", p.Items[0].Amount, tt.amount)
			}
			after := e.sb.Balance(testAccount, tt.currency)
			if !before.Sub(after).Equal(got.TotalWithdrawalAmount.Add(got.TotalFee)) {
				t.Fatalf("debit %s, want %s + %s", before.Sub(after), got.TotalWithdrawalAmount, got.TotalFee)
			}
		})
	}
}

func TestClientErrors(t *testing.T) {
	ctx := context.Background()
	type check struct {
		is        error  // errors.Is target, if any
		code      string // APIError code, if any
		retryable bool
		requests  map[string]int // sandbox outcome counts on the path
	}
	tests := []struct {
		name        string
		editSandbox func(*sandbox.Config)
		editClient  func(*calypso.Config)
		opts        []calypso.Option
		run         func(e *env) error
		want        check
		wantOK      bool
	}{
		{
			name:       "bad api key is 002, not retried",
			editClient: func(c *calypso.Config) { c.APIKey = "nope" },
			run:        func(e *env) error { _, err := e.client.Account(ctx); return err },
			want:       check{code: "002", requests: map[string]int{"error:002": 1}},
		},
		{
			name:       "bad secret is 003, not retried",
			editClient: func(c *calypso.Config) { c.APISecret = "wrong" },
			run:        func(e *env) error { _, err := e.client.Account(ctx); return err },
			want:       check{code: "003", requests: map[string]int{"error:003": 1}},
		},
		{
			name: "unknown payout is 004",
			run:  func(e *env) error { _, err := e.client.MassPayout(ctx, "999"); return err },
			want: check{is: calypso.ErrNotFound, code: "004", requests: map[string]int{"error:004": 1}},
		},
		{
			name: "past executionDate is 001, not retried",
			run: func(e *env) error {
				r := btcRequest("1")
				past := time.Now().Add(-time.Hour)
				r.ExecutionDate = &past
				_, err := e.client.CreateMassPayout(ctx, r)
				return err
			},
			want: check{code: "001", requests: map[string]int{"error:001": 1}},
		},
		{
			name: "too many items for the server is 001",
			editClient: func(c *calypso.Config) {
				c.Currencies = map[string]calypso.CurrencyRule{"BTC": {Decimals: 8, MaxItems: 500}}
			},
			run: func(e *env) error {
				amounts := make([]string, 101)
				for i := range amounts {
					amounts[i] = "0.001"
				}
				_, err := e.client.CreateMassPayout(ctx, btcRequest(amounts...))
				return err
			},
			want: check{code: "001", requests: map[string]int{"error:001": 1}},
		},
		{
			name: "reused idempotency key is 016",
			run: func(e *env) error {
				r := btcRequest("0.1")
				if _, err := e.client.CreateMassPayout(ctx, r); err != nil {
					return fmt.Errorf("first create: %w", err)
				}
				r.Items[0].Amount = amt("0.2") // any body: the key decides
				_, err := e.client.CreateMassPayout(ctx, r)
				return err
			},
			want: check{is: calypso.ErrIdempotencyKeyExists, code: "016", requests: map[string]int{"ok": 1, "error:016": 1}},
		},
		{
			name: "insufficient balance",
			run:  func(e *env) error { _, err := e.client.CreateMassPayout(ctx, btcRequest("11")); return err },
			want: check{is: calypso.ErrInsufficientBalance, code: "016", requests: map[string]int{"error:016": 1}},
		},
		{
			name: "skewed clock: 011, then re-stamped from the server's Date and accepted",
			opts: []calypso.Option{calypso.WithClock(func() time.Time { return time.Now().Add(10 * time.Minute) })},
			run:  func(e *env) error { _, err := e.client.Account(ctx); return err },
			want: check{requests: map[string]int{"error:011": 1, "ok": 1}}, wantOK: true,
		},
		{
			name: "5xx is retried",
			run: func(e *env) error {
				e.sb.InjectFault(calypso.PathAccount, sandbox.Fault5xx, sandbox.Fault5xx)
				_, err := e.client.Account(ctx)
				return err
			},
			want: check{requests: map[string]int{"fault:5xx": 2, "ok": 1}}, wantOK: true,
		},
		{
			name: "429 is retried",
			run: func(e *env) error {
				e.sb.InjectFault(calypso.PathAccount, sandbox.Fault429)
				_, err := e.client.Account(ctx)
				return err
			},
			want: check{requests: map[string]int{"fault:429": 1, "ok": 1}}, wantOK: true,
		},
		{
			name: "connection reset is retried",
			run: func(e *env) error {
				e.sb.InjectFault(calypso.PathMassCreate, sandbox.FaultReset)
				_, err := e.client.CreateMassPayout(ctx, btcRequest("0.1"))
				return err
			},
			want: check{requests: map[string]int{"fault:reset": 1, "ok": 1}}, wantOK: true,
		},
		{
			name:       "slow response hits the per-request timeout and is retried",
			editClient: func(c *calypso.Config) { c.Timeout = 100 * time.Millisecond },
			run: func(e *env) error {
				e.sb.InjectFault(calypso.PathAccount, sandbox.FaultSlow)
				_, err := e.client.Account(ctx)
				return err
			},
			want: check{requests: map[string]int{"fault:slow": 1, "ok": 1}}, wantOK: true,
		},
		{
			name: "lost create response: the retry gets 016, the lookup finds the payout",
			run: func(e *env) error {
				e.sb.InjectFault(calypso.PathMassCreate, sandbox.FaultLostResponse)
				r := btcRequest("0.1")
				_, err := e.client.CreateMassPayout(ctx, r)
				if !errors.Is(err, calypso.ErrIdempotencyKeyExists) {
					return fmt.Errorf("want ErrIdempotencyKeyExists, got %w", err)
				}
				p, lerr := e.client.MassPayoutByIdempotencyKey(ctx, r.IdempotencyKey)
				if lerr != nil || !p.TotalWithdrawalAmount.Equal(amt("0.1")) {
					return fmt.Errorf("lookup: %v %+v", lerr, p)
				}
				if n := len(e.sb.Payouts()); n != 1 || e.sb.CreateCount(r.IdempotencyKey) != 2 {
					return fmt.Errorf("%d payouts, %d creates", n, e.sb.CreateCount(r.IdempotencyKey))
				}
				return nil
			},
			want: check{requests: map[string]int{"fault:lost-response": 1, "error:016": 1, "ok": 1}}, wantOK: true,
		},
		{
			name: "retries give up after MaxAttempts",
			run: func(e *env) error {
				e.sb.InjectFault(calypso.PathAccount, sandbox.Fault5xx, sandbox.Fault5xx, sandbox.Fault5xx, sandbox.Fault5xx, sandbox.Fault5xx)
				_, err := e.client.Account(ctx)
				return err
			},
			want: check{retryable: true, requests: map[string]int{"fault:5xx": 4}},
		},
		{
			name: "local validation: unknown currency, never sent",
			run: func(e *env) error {
				r := btcRequest("1")
				r.Currency = "DOGE2"
				_, err := e.client.CreateMassPayout(ctx, r)
				return err
			},
			want: check{is: calypso.ErrInvalidRequest, requests: map[string]int{}},
		},
		{
			name: "local validation: too many decimals",
			run:  func(e *env) error { _, err := e.client.CreateMassPayout(ctx, btcRequest("0.000000001")); return err },
			want: check{is: calypso.ErrInvalidRequest, requests: map[string]int{}},
		},
		{
			name: "local validation: idempotency key must be a UUID",
			run: func(e *env) error {
				r := btcRequest("1")
				r.IdempotencyKey = "batch-7"
				_, err := e.client.CreateMassPayout(ctx, r)
				return err
			},
			want: check{is: calypso.ErrInvalidRequest, requests: map[string]int{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.editSandbox, tt.editClient, tt.opts...)
			err := tt.run(e)
			if tt.wantOK {
				if err != nil {
					t.Fatalf("want success, got %v", err)
				}
			} else {
				if err == nil {
					t.Fatal("want error, got nil")
				}
				if tt.want.is != nil && !errors.Is(err, tt.want.is) {
					t.Errorf("want errors.Is %v, got %v", tt.want.is, err)
				}
				var api *calypso.APIError
				if tt.want.code != "" && (!errors.As(err, &api) || api.Code != tt.want.code || api.Op == "") {
					t.Errorf("want APIError code %s with Op, got %#v", tt.want.code, err)
				}
				if got := calypso.Retryable(err); got != tt.want.retryable {
					t.Errorf("Retryable = %v, want %v (%v)", got, tt.want.retryable, err)
				}
				if strings.Contains(err.Error(), testSecret.Reveal()) {
					t.Errorf("secret in error: %v", err)
				}
			}
			if tt.want.requests != nil {
				got := map[string]int{}
				for _, m := range e.sb.Requests() {
					for k, v := range m {
						got[k] += v
					}
				}
				if fmt.Sprint(got) != fmt.Sprint(tt.want.requests) {
					t.Errorf("sandbox saw %v, want %v", got, tt.want.requests)
				}
			}
			if strings.Contains(e.logs.String(), testSecret.Reveal()) {
				t.Errorf("secret in logs")
			}
		})
	}
}

func TestClientContextEndsRetries(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	e := newEnv(t, nil, nil, calypso.WithSleep(func(context.Context, time.Duration) error {
		cancel() // the caller gives up while we back off
		return context.Canceled
	}))
	e.sb.InjectFault(calypso.PathAccount, sandbox.Fault5xx)
	_, err := e.client.Account(ctx)
	if !errors.Is(err, context.Canceled) || calypso.Retryable(err) {
		t.Fatalf("want a non-retryable context.Canceled, got %v", err)
	}
	var api *calypso.APIError
	if !errors.As(err, &api) || api.HTTPStatus < 500 {
		t.Fatalf("the last failure should stay visible: %v", err)
	}
}

func TestClientBackoffIsCappedAndJittered(t *testing.T) {
	var mu sync.Mutex
	var sleeps []time.Duration
	e := newEnv(t, nil, func(c *calypso.Config) {
		c.Retry = calypso.RetryPolicy{MaxAttempts: 6, BaseDelay: 10 * time.Millisecond, MaxDelay: 40 * time.Millisecond}
	}, calypso.WithSleep(func(_ context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		sleeps = append(sleeps, d)
		return nil
	}), calypso.WithJitter(func(d time.Duration) time.Duration { return d }))
	e.sb.InjectFault(calypso.PathAccount, sandbox.Fault5xx, sandbox.Fault5xx, sandbox.Fault5xx, sandbox.Fault5xx, sandbox.Fault5xx)
	if _, err := e.client.Account(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 40 * time.Millisecond, 40 * time.Millisecond}
	if fmt.Sprint(sleeps) != fmt.Sprint(want) {
		t.Fatalf("sleeps %v, want %v", sleeps, want)
	}
}

func TestClientRateLimit(t *testing.T) {
	e := newEnv(t, nil, func(c *calypso.Config) { c.RateLimit = 50 })
	start := time.Now()
	for range 5 {
		if _, err := e.client.Account(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// Five requests at 50/s need at least four 20 ms gaps.
	if took := time.Since(start); took < 80*time.Millisecond {
		t.Fatalf("5 requests took %v; the limiter did not space them", took)
	}
}

func TestConcurrentCreatesOneKey(t *testing.T) {
	e := newEnv(t, nil, nil)
	req := btcRequest("0.01", "0.02")
	const n = 50
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.client.CreateMassPayout(context.Background(), req)
		}()
	}
	wg.Wait()
	ok, exists := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, calypso.ErrIdempotencyKeyExists):
			exists++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 || exists != n-1 {
		t.Fatalf("%d created, %d already exists; want 1 and %d", ok, exists, n-1)
	}
	if got := len(e.sb.Payouts()); got != 1 {
		t.Fatalf("%d payouts, want 1", got)
	}
	if got := e.sb.CreateCount(req.IdempotencyKey); got != n {
		t.Fatalf("CreateCount = %d, want %d", got, n)
	}
	// Debited once.
	want := amt("10").Sub(amt("0.03")).Sub(amt("0.0002")).Sub(amt("0.00015"))
	if got := e.sb.Balance(testAccount, "BTC"); !got.Equal(want) {
		t.Fatalf("balance %s, want %s", got, want)
	}
}

func TestObserverSeesEveryAttempt(t *testing.T) {
	type seen struct{ op, outcome string }
	var (
		mu  sync.Mutex
		got []seen
	)
	e := newEnv(t, nil, nil, calypso.WithObserver(func(op, outcome string, took time.Duration) {
		if took <= 0 {
			t.Errorf("attempt of %s took %v", op, took)
		}
		mu.Lock()
		got = append(got, seen{op, outcome})
		mu.Unlock()
	}))
	e.sb.InjectFault(calypso.PathAccount, sandbox.Fault5xx)
	if _, err := e.client.Account(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.MassPayout(context.Background(), "no-such-payout"); err == nil {
		t.Fatal("lookup of a missing payout succeeded")
	}
	want := []seen{{calypso.OpAccount, "000"}, {calypso.OpAccount, "ok"}, {calypso.OpGetMassPayout, "004"}}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("observed %v, want %v", got, want)
	}
}
