package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/calypso/sandbox"
)

// A second merchant account, to show that one account's faults leave the
// other alone.
const (
	account2   = "0x2222222222222222222222222222222222222222"
	apiKey2    = "key-two"
	apiSecret2 = calypso.Secret("secret-two")
)

func withSecondAccount(c *sandbox.Config) {
	c.Accounts[account2] = sandbox.Account{APIKey: apiKey2, APISecret: apiSecret2,
		Balances: map[string]calypso.Amount{"USDT_TRX": amt("1000")}}
}

// oneShot is a client for acct that makes exactly one attempt per call, so
// each call meets each fault once.
func oneShot(t *testing.T, url, acct, key string, secret calypso.Secret) *calypso.Client {
	t.Helper()
	c, err := calypso.NewClient(calypso.Config{BaseURL: url, Account: acct, APIKey: key, APISecret: secret,
		RateLimit: -1, Retry: calypso.RetryPolicy{MaxAttempts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func usdt(key string, addrAmounts ...string) calypso.MassPayoutRequest {
	r := calypso.MassPayoutRequest{Currency: "USDT_TRX", Name: "n", IdempotencyKey: key}
	for i := 0; i+1 < len(addrAmounts); i += 2 {
		r.Items = append(r.Items, calypso.MassPayoutItem{DepositAddress: addrAmounts[i], Amount: amt(addrAmounts[i+1])})
	}
	return r
}

// apiErr returns err's *calypso.APIError or fails.
func apiErr(t *testing.T, err error) *calypso.APIError {
	t.Helper()
	var api *calypso.APIError
	if !errors.As(err, &api) {
		t.Fatalf("want an API error, got %v", err)
	}
	return api
}

// After a create, the read side answers 004 for LookupLag (scaled), by id
// and by key, while the payout exists; then it finds it.
func TestFaultLookupLag(t *testing.T) {
	h := newHarness(t, func(c *sandbox.Config) { c.Faults.LookupLag = 200 * time.Second }) // 200 ms at TimeScale 0.001
	ctx := context.Background()
	cl := oneShot(t, h.url, account, apiKey, apiSecret)
	key := uuid.NewString()
	created, err := cl.CreateMassPayout(ctx, usdt(key, "T1", "1"))
	if err != nil {
		t.Fatal(err)
	}
	_, errKey := cl.MassPayoutByIdempotencyKey(ctx, key)
	_, errID := cl.MassPayout(ctx, string(created.ID))
	for _, err := range []error{errKey, errID} {
		if api := apiErr(t, err); api.Code != calypso.CodeNotFound {
			t.Fatalf("look-up right after the create: want 004, got %v", err)
		}
	}
	if _, ok := h.sb.PayoutByIdempotencyKey(key); !ok {
		t.Fatal("the payout must exist while the read side lags")
	}
	waitFor(t, "the look-up to find the payout", func() bool {
		p, err := cl.MassPayoutByIdempotencyKey(ctx, key)
		return err == nil && p.ID == created.ID
	})

	// Switched off at run time: the next payout is found at once.
	h.sb.SetFaults(func(f *sandbox.Faults) { f.LookupLag = 0 })
	key2 := uuid.NewString()
	if _, err := cl.CreateMassPayout(ctx, usdt(key2, "T1", "1")); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.MassPayoutByIdempotencyKey(ctx, key2); err != nil {
		t.Fatalf("without lag: %v", err)
	}
}

// A create that reuses a key answers 016 "Validation failed" with the
// configured probability, else 016 "already exists"; never a second payout.
func TestFaultValidationAfterAmbiguous(t *testing.T) {
	for _, tt := range []struct {
		name string
		p    float64
		want string
	}{
		{"always validation failed", 1, "Can not create deal. Validation failed"},
		{"never", 0, "already exists"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(c *sandbox.Config) { c.Faults.ValidationAfterAmbiguous = tt.p })
			cl := oneShot(t, h.url, account, apiKey, apiSecret)
			key := uuid.NewString()
			r := usdt(key, "T1", "1")
			if _, err := cl.CreateMassPayout(context.Background(), r); err != nil {
				t.Fatal(err)
			}
			_, err := cl.CreateMassPayout(context.Background(), r)
			api := apiErr(t, err)
			if api.Code != calypso.CodeCreateRejected || !strings.Contains(api.Message, tt.want) {
				t.Fatalf("second create: want 016 %q, got %v", tt.want, err)
			}
			if n := len(h.sb.Payouts()); n != 1 || h.sb.CreateCount(key) != 2 {
				t.Fatalf("%d payouts from %d creates, want 1 from 2", n, h.sb.CreateCount(key))
			}
		})
	}
	// A fresh key is never refused by this fault.
	h := newHarness(t, func(c *sandbox.Config) { c.Faults.ValidationAfterAmbiguous = 1 })
	if _, err := oneShot(t, h.url, account, apiKey, apiSecret).CreateMassPayout(context.Background(), usdt(uuid.NewString(), "T1", "1")); err != nil {
		t.Fatalf("fresh key: %v", err)
	}
}

// Totals: the create's answer and the look-ups report totalWithdrawalAmount
// per mode; the sandbox's own record stays exact.
func TestFaultTotals(t *testing.T) {
	const (
		ethA = "1.123456789012345678"
		ethB = "2.000000000000000001"
		ethT = "3.123456789012345679" // exact sum
	)
	tests := []struct {
		name       string
		mode       sandbox.TotalsMode
		currencies []string
		req        calypso.MassPayoutRequest
		// answered total in the create's answer, and once the payout has
		// left CREATION_IN_PROGRESS
		atCreate, later string
	}{
		{"exact", sandbox.TotalsExact, nil, ethReq(ethA, ethB), ethT, ethT},
		{"float", sandbox.TotalsFloat, nil, ethReq(ethA, ethB), "3.1234567890123457", "3.1234567890123457"},
		{"float for another currency only", sandbox.TotalsFloat, []string{"BTC"}, ethReq(ethA, ethB), ethT, ethT},
		{"zero while creating", sandbox.TotalsZeroWhileCreating, nil, ethReq(ethA, ethB), "0", ethT},
		// USDT_TRX fee: 1 + 1% per withdrawal, rounded up to 6 decimals:
		// 10 → 1.1, 20 → 1.2.
		{"fee inclusive", sandbox.TotalsFeeInclusive, nil, usdt("", "T1", "10", "T2", "20"), "32.3", "32.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(c *sandbox.Config) {
				c.Verification = true // holds the payout in PENDING_CONFIRMATION after creation
				c.Faults.Totals, c.Faults.TotalsCurrencies = tt.mode, tt.currencies
			})
			ctx := context.Background()
			cl := oneShot(t, h.url, account, apiKey, apiSecret)
			tt.req.IdempotencyKey = uuid.NewString()
			p, err := cl.CreateMassPayout(ctx, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if p.TotalWithdrawalAmount.String() != tt.atCreate {
				t.Fatalf("create answered total %s, want %s", p.TotalWithdrawalAmount, tt.atCreate)
			}
			waitFor(t, "PENDING_CONFIRMATION", func() bool {
				got, _ := h.sb.Payout(string(p.ID))
				return got.State == calypso.StatePendingConfirmation
			})
			got, err := cl.MassPayout(ctx, string(p.ID))
			if err != nil {
				t.Fatal(err)
			}
			if got.TotalWithdrawalAmount.String() != tt.later {
				t.Fatalf("look-up answered total %s, want %s", got.TotalWithdrawalAmount, tt.later)
			}
			rec, _ := h.sb.Payout(string(p.ID))
			var sum calypso.Amount
			for _, it := range tt.req.Items {
				sum = sum.Add(it.Amount)
			}
			if !rec.Total.Equal(sum) {
				t.Fatalf("sandbox record total %s, want the exact %s", rec.Total, sum)
			}
		})
	}
}

func ethReq(amounts ...string) calypso.MassPayoutRequest {
	r := calypso.MassPayoutRequest{Currency: "ETH", Name: "n"}
	for i, a := range amounts {
		r.Items = append(r.Items, calypso.MassPayoutItem{DepositAddress: fmt.Sprintf("0x%d", i), Amount: amt(a)})
	}
	return r
}

func TestParseTotalsMode(t *testing.T) {
	for in, want := range map[string]sandbox.TotalsMode{"": sandbox.TotalsExact, "exact": sandbox.TotalsExact,
		"float": sandbox.TotalsFloat, "zero-while-creating": sandbox.TotalsZeroWhileCreating, "fee-inclusive": sandbox.TotalsFeeInclusive} {
		if got, err := sandbox.ParseTotalsMode(in); err != nil || got != want {
			t.Fatalf("%q: %q, %v", in, got, err)
		}
	}
	if _, err := sandbox.ParseTotalsMode("rounded"); err == nil {
		t.Fatal("unknown mode accepted")
	}
}

// One slow account: its calls take the latency, the other account's calls
// are answered meanwhile, and a caller that gives up is let go at once.
func TestFaultAccountLatency(t *testing.T) {
	h := newHarness(t, func(c *sandbox.Config) {
		withSecondAccount(c)
		c.Faults.AccountLatency = map[string]time.Duration{account: 150 * time.Millisecond}
	})
	slow, fast := oneShot(t, h.url, account, apiKey, apiSecret), oneShot(t, h.url, account2, apiKey2, apiSecret2)
	ctx := context.Background()

	start := time.Now()
	if _, err := slow.Account(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Fatalf("slow account answered after %v, want at least 150ms", took)
	}

	// Run time: a very slow account does not hold up the other one.
	h.sb.SetAccountLatency(account, time.Hour)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := slow.Account(cctx); done <- err }()
	if _, err := fast.Account(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("the slow call was answered before its latency: %v", err)
	default:
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("want the caller's cancellation, got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a canceled call kept waiting")
	}
	waitFor(t, "the delayed request to end with its caller", func() bool { return h.sb.InFlight() == 0 })
	h.sb.SetAccountLatency(account, 0)
	if _, err := slow.Account(ctx); err != nil {
		t.Fatal(err)
	}
}

// A hung account: its calls get no answer and process nothing until the
// caller gives up; the other account is served; releasing the hang lets a
// waiting call through; Close ends a hung call.
func TestFaultHangAccount(t *testing.T) {
	h := newHarness(t, func(c *sandbox.Config) {
		withSecondAccount(c)
		c.Faults.HangAccounts = map[string]bool{account: true}
	})
	hung, other := oneShot(t, h.url, account, apiKey, apiSecret), oneShot(t, h.url, account2, apiKey2, apiSecret2)
	ctx := context.Background()

	key := uuid.NewString()
	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err := hung.CreateMassPayout(tctx, usdt(key, "T1", "1"))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung create: want the caller's deadline, got %v", err)
	}
	if n := h.sb.CreateCount(key); n != 0 || len(h.sb.Payouts()) != 0 {
		t.Fatalf("a hung create was processed: %d creates, %d payouts", n, len(h.sb.Payouts()))
	}
	waitFor(t, "the hung request to end with its caller", func() bool { return h.sb.InFlight() == 0 })
	if n := h.sb.Requests()[calypso.PathMassCreate]["fault:hang"]; n != 1 {
		t.Fatalf("fault:hang counted %d times, want 1", n)
	}
	if _, err := other.CreateMassPayout(ctx, usdt(uuid.NewString(), "T1", "1")); err != nil {
		t.Fatalf("the other account: %v", err)
	}

	// Released while a call waits: that call is answered.
	done := make(chan error, 1)
	go func() { _, err := hung.CreateMassPayout(ctx, usdt(key, "T1", "1")); done <- err }()
	waitFor(t, "the second call to hang", func() bool { return h.sb.Requests()[calypso.PathMassCreate]["fault:hang"] == 2 })
	h.sb.HangAccount(account, false)
	if err := <-done; err != nil {
		t.Fatalf("released call: %v", err)
	}

	// Hung again; Close answers the waiting call with a dropped connection.
	h.sb.HangAccount(account, true)
	go func() { _, err := hung.Account(ctx); done <- err }()
	waitFor(t, "the account call to hang", func() bool { return h.sb.Requests()[calypso.PathAccount]["fault:hang"] == 1 })
	h.sb.Close()
	select {
	case err := <-done:
		var te *calypso.TransportError
		if !errors.As(err, &te) {
			t.Fatalf("after Close: want a transport error, got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close left a hung call waiting")
	}
	waitFor(t, "no request left after Close", func() bool { return h.sb.InFlight() == 0 })
}

// Above an account's rate the sandbox answers 429 and processes nothing;
// the other account is not limited, and tokens come back with time.
func TestFaultAccountRateLimit(t *testing.T) {
	h := newHarness(t, func(c *sandbox.Config) {
		withSecondAccount(c)
		c.Faults.AccountRateLimit = map[string]float64{account: 2}
	})
	limited, other := oneShot(t, h.url, account, apiKey, apiSecret), oneShot(t, h.url, account2, apiKey2, apiSecret2)
	ctx := context.Background()
	var ok, refused int
	for range 6 {
		_, err := limited.Account(ctx)
		switch {
		case err == nil:
			ok++
		case apiErr(t, err).HTTPStatus == 429:
			refused++
		default:
			t.Fatalf("want 429, got %v", err)
		}
	}
	// A bucket of 2 refills at 2/s: 2 at once, at most one more meanwhile.
	if ok < 2 || ok > 3 || refused != 6-ok {
		t.Fatalf("%d answered, %d refused; want 2 or 3 answered at 2/s", ok, refused)
	}
	if n := h.sb.Requests()[calypso.PathAccount]["fault:rate-limit"]; n != refused {
		t.Fatalf("fault:rate-limit counted %d, want %d", n, refused)
	}
	key := uuid.NewString()
	if _, err := limited.CreateMassPayout(ctx, usdt(key, "T1", "1")); err == nil || apiErr(t, err).HTTPStatus != 429 {
		t.Fatalf("want a refused create, got %v", err)
	} else if h.sb.CreateCount(key) != 0 {
		t.Fatal("a rate-limited create was processed")
	}
	for range 6 {
		if _, err := other.Account(ctx); err != nil {
			t.Fatalf("the other account was limited: %v", err)
		}
	}
	waitFor(t, "a token to come back", func() bool { _, err := limited.Account(ctx); return err == nil })
	h.sb.SetFaults(func(f *sandbox.Faults) { delete(f.AccountRateLimit, account) })
	for range 6 {
		if _, err := limited.Account(ctx); err != nil {
			t.Fatalf("limit removed: %v", err)
		}
	}
}

// A refused address: 400 001 naming the row and address; nothing created,
// nothing debited, the key still free.
func TestFaultRefusedAddresses(t *testing.T) {
	h := newHarness(t, func(c *sandbox.Config) { c.Faults.RefusedAddresses = []string{"Tbad"} })
	cl := oneShot(t, h.url, account, apiKey, apiSecret)
	ctx := context.Background()
	key := uuid.NewString()
	r := usdt(key, "T0", "1", "Tbad", "2", "T2", "3")
	_, err := cl.CreateMassPayout(ctx, r)
	api := apiErr(t, err)
	if api.Code != calypso.CodeBadRequest || api.HTTPStatus != 400 || api.Message != "massAddresses[1].depositAddress: invalid address Tbad" {
		t.Fatalf("want 400 001 naming row 1 and its address, got %v", err)
	}
	if len(h.sb.Payouts()) != 0 || !h.sb.Balance(account, "USDT_TRX").Equal(amt("1000")) {
		t.Fatal("a refused create created or debited something")
	}
	h.sb.SetFaults(func(f *sandbox.Faults) { f.RefusedAddresses = nil })
	if _, err := cl.CreateMassPayout(ctx, r); err != nil {
		t.Fatalf("same key after the refusal: %v", err)
	}
}

// The same seed gives the same faults: two sandboxes answer the same
// sequence of key reuses identically.
func TestFaultsSeeded(t *testing.T) {
	answers := func(seed int64) string {
		h := newHarness(t, func(c *sandbox.Config) { c.Faults.Seed, c.Faults.ValidationAfterAmbiguous = seed, 0.5 })
		cl := oneShot(t, h.url, account, apiKey, apiSecret)
		r := usdt(uuid.NewString(), "T1", "1")
		if _, err := cl.CreateMassPayout(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for range 32 {
			_, err := cl.CreateMassPayout(context.Background(), r)
			if strings.Contains(apiErr(t, err).Message, "Validation failed") {
				b.WriteByte('V')
			} else {
				b.WriteByte('E')
			}
		}
		return b.String()
	}
	a, b := answers(42), answers(42)
	if a != b || !strings.Contains(a, "V") || !strings.Contains(a, "E") {
		t.Fatalf("seed 42 gave %s then %s", a, b)
	}
}

// Faults flipped at run time while calls flow: no race, no lost call.
func TestSetFaultsConcurrently(t *testing.T) {
	h := newHarness(t, withSecondAccount)
	cl := oneShot(t, h.url, account2, apiKey2, apiSecret2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			h.sb.SetFaults(func(f *sandbox.Faults) {
				f.LookupLag = time.Duration(i%3) * time.Millisecond
				f.Totals = []sandbox.TotalsMode{sandbox.TotalsExact, sandbox.TotalsFloat, sandbox.TotalsFeeInclusive}[i%3]
				f.RefusedAddresses = []string{fmt.Sprint("X", i)}
			})
			h.sb.SetAccountLatency(account, time.Duration(i%2)*time.Millisecond)
			h.sb.HangAccount(account, i%2 == 0)
		}
	}()
	for range 20 {
		p, err := cl.CreateMassPayout(context.Background(), usdt(uuid.NewString(), "T1", "1"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cl.MassPayout(context.Background(), string(p.ID)); err != nil && !errors.Is(err, calypso.ErrNotFound) {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
	if f := h.sb.Faults(); len(f.RefusedAddresses) != 1 {
		t.Fatalf("faults after the run: %+v", f)
	}
}

// /sandbox/faults reads and changes the inconsistencies over HTTP, so a
// sandbox run by docker-compose can be made to hang or lag mid-run; a bad
// patch names its key and changes nothing.
func TestFaultsOverHTTP(t *testing.T) {
	h := newHarness(t, withSecondAccount)
	post := func(body string) (int, string) {
		t.Helper()
		resp, err := http.Post(h.url+"/sandbox/faults", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	status, body := post(`{"hangAccounts":{"` + account + `":true},"lookupLag":"3s","totals":"fee-inclusive",
		"accountLatency":{"` + account2 + `":"150ms"},"accountRateLimit":{"` + account2 + `":7},"refusedAddresses":["Tbad"]}`)
	if status != http.StatusOK {
		t.Fatalf("patch: %d %s", status, body)
	}
	f := h.sb.Faults()
	if !f.HangAccounts[account] || f.LookupLag != 3*time.Second || f.Totals != sandbox.TotalsFeeInclusive ||
		f.AccountLatency[account2] != 150*time.Millisecond || f.AccountRateLimit[account2] != 7 || f.RefusedAddresses[0] != "Tbad" {
		t.Fatalf("faults after the patch: %+v", f)
	}
	for _, want := range []string{`"lookupLag":"3s"`, `"accountLatency":{"` + account2 + `":"150ms"}`} {
		if !strings.Contains(body, want) {
			t.Errorf("answer %s lacks %s", body, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := oneShot(t, h.url, account, apiKey, apiSecret).Account(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung over HTTP: want the caller's deadline, got %v", err)
	}

	for _, bad := range []struct{ body, names string }{
		{`{"lookupLag":"3s","hangAcounts":{}}`, `unknown fault \"hangAcounts\"`},
		{`{"accountLatency":{"a":"soon"}}`, "accountLatency.a"},
		{`{"validationAfterAmbiguous":1.5}`, "validationAfterAmbiguous"},
		{`{"totals":"rounded"}`, "rounded"},
		{`{"accountRateLimit":{"a":-1}}`, "accountRateLimit.a"},
		{`[]`, "JSON object"},
	} {
		status, body := post(bad.body)
		if status != http.StatusBadRequest || !strings.Contains(body, bad.names) {
			t.Errorf("%s: %d %s, want 400 naming %s", bad.body, status, body, bad.names)
		}
	}
	if got := h.sb.Faults(); got.LookupLag != 3*time.Second || !got.HangAccounts[account] {
		t.Fatalf("a refused patch changed the faults: %+v", got)
	}
	if status, _ := post(`{"hangAccounts":{}}`); status != http.StatusOK {
		t.Fatal("release")
	}
	if _, err := oneShot(t, h.url, account, apiKey, apiSecret).Account(context.Background()); err != nil {
		t.Fatalf("released: %v", err)
	}
	resp, err := http.Get(h.url + "/sandbox/faults")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"hangAccounts":{}`) && !strings.Contains(string(b), `"hangAccounts":null`) {
		t.Fatalf("GET after release: %s", b)
	}
}
