package sandbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/calypso/sandbox"
)

const (
	account    = "0xc195df92dd9db2a8f28e597981f113d6e7582f8b"
	apiKey     = "c529e14832b34b74972365cf7bf02430"
	apiSecret  = calypso.Secret("b823a6b9ea72408583cef9ec8d67fa52")
	hookKey    = "hook-public"
	hookSecret = calypso.Secret("hook-secret")
)

var amt = calypso.MustParseAmount

// receiver is a webhook endpoint like payoutd's ingress: it verifies,
// parses, dedupes by envelope id and never moves a payout backwards.
type receiver struct {
	verifier *calypso.WebhookVerifier

	mu        sync.Mutex
	failFirst int // answer 500 to the first deliveries of each event
	calls     map[string]int
	received  []*calypso.Webhook // every verified delivery, in arrival order
	seen      map[string]bool
	unique    []*calypso.Webhook
	state     map[string]calypso.State
	rejected  int
}

func newReceiver() *receiver {
	return &receiver{
		verifier: calypso.NewWebhookVerifier(calypso.WebhookKeys{hookKey: hookSecret}),
		seen:     map[string]bool{},
		state:    map[string]calypso.State{},
		calls:    map[string]int{},
	}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.failFirst > 0 {
		if hook, err := calypso.ParseWebhook(body); err == nil {
			rc.calls[hook.DedupKey()]++
			if rc.calls[hook.DedupKey()] <= rc.failFirst {
				http.Error(w, "not now", http.StatusInternalServerError)
				return
			}
		}
	}
	if err := rc.verifier.VerifyRequest(r, body); err != nil {
		rc.rejected++
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	hook, err := calypso.ParseWebhook(body)
	if err != nil {
		rc.rejected++
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc.received = append(rc.received, hook)
	if !rc.seen[hook.DedupKey()] {
		rc.seen[hook.DedupKey()] = true
		rc.unique = append(rc.unique, hook)
		if st := hook.State(); st != "" && st.Rank() > rc.state[hook.PayoutID()].Rank() {
			rc.state[hook.PayoutID()] = st
		}
	}
	w.WriteHeader(http.StatusOK)
}

func (rc *receiver) snapshot() (received, unique []*calypso.Webhook) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.received), slices.Clone(rc.unique)
}

func (rc *receiver) payoutState(id string) calypso.State {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.state[id]
}

func (rc *receiver) has(id, event string, st calypso.State) bool {
	_, unique := rc.snapshot()
	for _, h := range unique {
		if h.PayoutID() == id && h.EventType == event && h.State() == st {
			return true
		}
	}
	return false
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

type harness struct {
	sb     *sandbox.Sandbox
	rc     *receiver
	client *calypso.Client
	url    string
}

func newHarness(t *testing.T, edit func(*sandbox.Config)) *harness {
	t.Helper()
	rc := newReceiver()
	hooks := httptest.NewServer(rc)
	cfg := sandbox.Config{
		Accounts: map[string]sandbox.Account{account: {
			APIKey: apiKey, APISecret: apiSecret,
			Balances: map[string]calypso.Amount{"USDT_TRX": amt("1000"), "ETH": amt("10")},
		}},
		Tariff:    map[string]sandbox.Fee{"USDT_TRX": {Fixed: amt("1"), Percent: amt("1")}},
		TimeScale: 0.001,
		Webhook:   sandbox.WebhookConfig{URL: hooks.URL, RequestID: uuid.NewString(), PublicKey: hookKey, Secret: hookSecret},
	}
	if edit != nil {
		edit(&cfg)
	}
	sb := sandbox.New(cfg)
	api := httptest.NewServer(sb)
	// The sandbox first: it ends requests still hanging, which api.Close
	// would otherwise wait for.
	t.Cleanup(func() { sb.Close(); api.Close(); hooks.Close() })
	c, err := calypso.NewClient(calypso.Config{
		BaseURL: api.URL, Account: account, APIKey: apiKey, APISecret: apiSecret, RateLimit: -1,
		Retry: calypso.RetryPolicy{MaxAttempts: 10, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{sb: sb, rc: rc, client: c, url: api.URL}
}

func (h *harness) create(t *testing.T, key string, amounts ...string) *calypso.MassPayout {
	t.Helper()
	r := calypso.MassPayoutRequest{Currency: "USDT_TRX", Name: "n", IdempotencyKey: key}
	for i, a := range amounts {
		r.Items = append(r.Items, calypso.MassPayoutItem{DepositAddress: fmt.Sprintf("T%d", i), Amount: amt(a), Comment: "intent"})
	}
	p, err := h.client.CreateMassPayout(context.Background(), r)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return p
}

const (
	cs     = calypso.EventPayoutChangeStatus + ":"
	conf   = calypso.EventPayoutConfirmed
	hash   = calypso.EventPayoutHashReceived
	valErr = calypso.EventPayoutValidationError
)

func describe(hooks []*calypso.Webhook) []string {
	var out []string
	for _, h := range hooks {
		if h.EventType == calypso.EventPayoutChangeStatus {
			out = append(out, cs+string(h.State()))
		} else {
			out = append(out, h.EventType)
		}
	}
	return out
}

func TestStateMachine(t *testing.T) {
	type scenario struct {
		name         string
		verification bool
		decide       func(sb *sandbox.Sandbox, id string) error // when verification is on
		outcome      calypso.State
		amounts      []string
		scheduleIn   time.Duration // executionDate this far ahead (unscaled)
		final        calypso.State
		want         func(failed int) []string
	}
	happy := func(n int) func(int) []string {
		return func(int) []string {
			s := []string{cs + "CREATION_IN_PROGRESS", conf, cs + "IN_PROGRESS"}
			for range n {
				s = append(s, hash)
			}
			return append(s, cs+"COMPLETED")
		}
	}
	scenarios := []scenario{
		{
			name: "verification confirmed then COMPLETED", verification: true, decide: (*sandbox.Sandbox).Confirm,
			outcome: calypso.StateCompleted, amounts: []string{"10", "20"}, final: calypso.StateCompleted,
			want: func(int) []string {
				return []string{cs + "CREATION_IN_PROGRESS", cs + "PENDING_CONFIRMATION", conf, cs + "IN_PROGRESS", hash, hash, cs + "COMPLETED"}
			},
		},
		{
			name: "verification declined: CANCELED", verification: true, decide: (*sandbox.Sandbox).Cancel,
			amounts: []string{"10"}, final: calypso.StateCanceled,
			want: func(int) []string {
				return []string{cs + "CREATION_IN_PROGRESS", cs + "PENDING_CONFIRMATION", cs + "CANCELED"}
			},
		},
		{
			name: "COMPLETED", outcome: calypso.StateCompleted, amounts: []string{"1", "2"}, final: calypso.StateCompleted,
			want: happy(2),
		},
		{
			name: "PARTIAL with withdrawal errors", outcome: calypso.StatePartial, amounts: []string{"1", "2", "3", "4"}, final: calypso.StatePartial,
			want: func(failed int) []string {
				s := []string{cs + "CREATION_IN_PROGRESS", conf, cs + "IN_PROGRESS"}
				for range failed {
					s = append(s, valErr)
				}
				for range 4 - failed {
					s = append(s, hash)
				}
				return append(s, cs+"PARTIAL")
			},
		},
		{
			name: "FAILED", outcome: calypso.StateFailed, amounts: []string{"5", "6"}, final: calypso.StateFailed,
			want: func(int) []string {
				return []string{cs + "CREATION_IN_PROGRESS", conf, cs + "IN_PROGRESS", cs + "FAILED"}
			},
		},
		{
			name: "scheduled executionDate waits in CONFIRMED", outcome: calypso.StateCompleted, amounts: []string{"7"},
			scheduleIn: time.Minute, final: calypso.StateCompleted, want: happy(1),
		},
	}

	run := func(t *testing.T, sc scenario, faults sandbox.Faults) (received, unique []*calypso.Webhook) {
		h := newHarness(t, func(c *sandbox.Config) { c.Verification = sc.verification; c.Faults = faults })
		key := uuid.NewString()
		h.sb.ForceOutcome(key, sc.outcome)
		r := calypso.MassPayoutRequest{Currency: "USDT_TRX", Name: sc.name, IdempotencyKey: key, ExternalID: "batch-x"}
		for i, a := range sc.amounts {
			r.Items = append(r.Items, calypso.MassPayoutItem{DepositAddress: fmt.Sprintf("T%d", i), Amount: amt(a)})
		}
		if sc.scheduleIn > 0 {
			at := time.Now().Add(sc.scheduleIn)
			r.ExecutionDate = &at
		}
		created, err := h.client.CreateMassPayout(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		id := string(created.ID)
		if sc.verification {
			waitFor(t, "PENDING_CONFIRMATION webhook", func() bool {
				return h.rc.has(id, calypso.EventPayoutChangeStatus, calypso.StatePendingConfirmation)
			})
			if p, _ := h.sb.Payout(id); p.State != calypso.StatePendingConfirmation {
				t.Fatalf("payout is %s, want PENDING_CONFIRMATION", p.State)
			}
			if err := sc.decide(h.sb, id); err != nil {
				t.Fatal(err)
			}
			if err := h.sb.Confirm(id); !errors.Is(err, sandbox.ErrWrongState) {
				t.Fatalf("second decision: want ErrWrongState, got %v", err)
			}
		}
		waitFor(t, "terminal state at the receiver", func() bool { return h.rc.payoutState(id).Terminal() })
		waitFor(t, "every emitted webhook delivered", func() bool {
			for _, w := range h.sb.Webhooks() {
				if !w.Delivered {
					return false
				}
			}
			return true
		})
		if got := h.rc.payoutState(id); got != sc.final {
			t.Fatalf("receiver's state %s, want %s", got, sc.final)
		}

		// The API agrees with the webhooks.
		got, err := h.client.MassPayout(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != sc.final {
			t.Fatalf("API state %s, want %s", got.State, sc.final)
		}
		p, _ := h.sb.Payout(id)
		failed := 0
		refund := amt("0")
		for _, it := range p.Items {
			if it.State == "FAILED" {
				failed++
				refund = refund.Add(it.Amount).Add(it.Fee)
			}
		}
		if sc.final == calypso.StatePartial {
			if failed == 0 || failed == len(p.Items) || len(got.Errors.WithdrawalErrors) != failed {
				t.Fatalf("PARTIAL: %d of %d items failed, %d withdrawalErrors", failed, len(p.Items), len(got.Errors.WithdrawalErrors))
			}
			for _, we := range got.Errors.WithdrawalErrors {
				if we.WithdrawalID == "" || len(we.Errors) == 0 || we.Errors[0].Status != "NOT_ENOUGH_FUNDS" {
					t.Fatalf("withdrawal error %+v", we)
				}
			}
		}
		// Debit = amounts + fees, minus refunds of what did not go out.
		spent := amt("1000").Sub(h.sb.Balance(account, "USDT_TRX"))
		if want := p.Total.Add(p.Fee).Sub(refund); !spent.Equal(want) {
			t.Fatalf("spent %s, want %s", spent, want)
		}
		if sc.scheduleIn > 0 {
			var confirmedAt, startedAt time.Time
			for _, c := range p.History {
				switch c.State {
				case calypso.StateConfirmed:
					confirmedAt = c.At
				case calypso.StateInProgress:
					startedAt = c.At
				}
			}
			// One minute at TimeScale 0.001 is 60 ms.
			if startedAt.Sub(confirmedAt) < 60*time.Millisecond {
				t.Fatalf("IN_PROGRESS %v after CONFIRMED, want at least the scaled wait until executionDate", startedAt.Sub(confirmedAt))
			}
		}

		received, unique = h.rc.snapshot()
		if want := sc.want(failed); !slices.Equal(describe(sortByID(unique)), want) {
			t.Fatalf("webhooks (by id)\n got %v\nwant %v", describe(sortByID(unique)), want)
		}
		for _, w := range unique {
			if w.PayoutID() != id || w.Payout.IdempotencyKey != key || w.Service != "PAYOUT" {
				t.Fatalf("webhook for another payout or key: %+v %+v", w, w.Payout)
			}
		}
		if len(unique) != len(h.sb.Webhooks()) {
			t.Fatalf("%d unique webhooks received, %d emitted", len(unique), len(h.sb.Webhooks()))
		}
		return received, unique
	}

	t.Run("in order", func(t *testing.T) {
		for _, sc := range scenarios {
			t.Run(sc.name, func(t *testing.T) {
				received, _ := run(t, sc, sandbox.Faults{})
				// Without faults: each delivered once, ids increasing.
				if want := sc.want(0); len(received) < len(want)-4 || !increasing(received) {
					t.Fatalf("arrival order %v", ids(received))
				}
			})
		}
	})

	t.Run("reordered and duplicated", func(t *testing.T) {
		var dups, reorders int
		for i, sc := range scenarios {
			t.Run(sc.name, func(t *testing.T) {
				received, unique := run(t, sc, sandbox.Faults{Seed: int64(i + 1), DuplicateWebhook: 0.5, ReorderWebhook: 0.5})
				dups += len(received) - len(unique)
				if !increasing(unique) {
					reorders++
				}
			})
		}
		if dups == 0 || reorders == 0 {
			t.Fatalf("faults not exercised: %d duplicates, %d reordered runs", dups, reorders)
		}
	})
}

func sortByID(hooks []*calypso.Webhook) []*calypso.Webhook {
	out := slices.Clone(hooks)
	slices.SortFunc(out, func(a, b *calypso.Webhook) int { return idNum(a) - idNum(b) })
	return out
}

func idNum(h *calypso.Webhook) int { n, _ := strconv.Atoi(string(h.ID)); return n }

func ids(hooks []*calypso.Webhook) []int {
	var out []int
	for _, h := range hooks {
		out = append(out, idNum(h))
	}
	return out
}

func increasing(hooks []*calypso.Webhook) bool {
	for i := 1; i < len(hooks); i++ {
		if idNum(hooks[i]) <= idNum(hooks[i-1]) {
			return false
		}
	}
	return true
}

func TestWebhookRetriedUntil200(t *testing.T) {
	h := newHarness(t, nil)
	h.rc.failFirst = 3
	p := h.create(t, uuid.NewString(), "1")
	waitFor(t, "first webhook delivered", func() bool {
		ws := h.sb.Webhooks()
		return len(ws) > 0 && ws[0].Delivered
	})
	first := h.sb.Webhooks()[0]
	var statuses []int
	for _, a := range first.Attempts {
		statuses = append(statuses, a.Status)
	}
	if !slices.Equal(statuses, []int{500, 500, 500, 200}) {
		t.Fatalf("attempt statuses %v", statuses)
	}
	// Gaps follow Calypso's schedule, scaled: 30 s, 30 s, 60 s → 30, 30, 60 ms.
	for i, min := range []time.Duration{30, 30, 60} {
		if gap := first.Attempts[i+1].At.Sub(first.Attempts[i].At); gap < min*time.Millisecond {
			t.Fatalf("gap %d = %v, want ≥ %v ms", i, gap, min)
		}
	}
	waitFor(t, "terminal", func() bool { return h.rc.payoutState(string(p.ID)) == calypso.StateCompleted })
}

func TestWebhookGivesUp(t *testing.T) {
	h := newHarness(t, func(c *sandbox.Config) {
		c.Webhook.RetryGaps = []time.Duration{time.Millisecond, time.Millisecond}
		c.Webhook.Secret = "not-the-receivers-secret" // every delivery is refused
	})
	h.create(t, uuid.NewString(), "1")
	waitFor(t, "delivery abandoned", func() bool {
		ws := h.sb.Webhooks()
		return len(ws) > 0 && ws[0].GaveUp
	})
	if w := h.sb.Webhooks()[0]; len(w.Attempts) != 3 || w.Delivered || w.Attempts[0].Status != http.StatusUnauthorized {
		t.Fatalf("record %+v", w)
	}
}

func TestWebhookDropped(t *testing.T) {
	h := newHarness(t, func(c *sandbox.Config) { c.Faults.DropWebhook = 1 })
	p := h.create(t, uuid.NewString(), "1")
	waitFor(t, "payout completes", func() bool {
		got, _ := h.sb.Payout(string(p.ID))
		return got.State.Terminal()
	})
	for _, w := range h.sb.Webhooks() {
		if !w.Dropped || len(w.Attempts) != 0 {
			t.Fatalf("record %+v", w)
		}
	}
	if received, _ := h.rc.snapshot(); len(received) != 0 {
		t.Fatalf("%d webhooks arrived, want none", len(received))
	}
}

// rawPost sends body signed with secret under key, and returns the status and
// errorCode.
func rawPost(t *testing.T, url, path, key string, secret calypso.Secret, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set(calypso.HeaderKey, key)
	}
	if secret != "" {
		req.Header.Set(calypso.HeaderSign, calypso.SignBody(secret, []byte(body)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb struct {
		ErrorCode string `json:"errorCode"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&eb)
	return resp.StatusCode, eb.ErrorCode
}

func TestStrictRequests(t *testing.T) {
	h := newHarness(t, nil)
	now := time.Now().UnixMilli()
	ts := func(ms int64) string { return strconv.FormatInt(ms, 10) }
	key := uuid.NewString()
	createBody := func(extra string) string {
		return `{"account":"` + account + `","timestamp":` + ts(now) + `,"payload":{"currency":"USDT_TRX","name":"n","idempotencyKey":"` +
			uuid.NewString() + `","massAddresses":[{"depositAddress":"T1","amount":1` + extra + `}]}}`
	}
	tests := []struct {
		name, path, key string
		secret          calypso.Secret
		body            string
		code            string // "" = success
	}{
		{"account ok", calypso.PathAccount, apiKey, apiSecret, `{"account":"` + account + `","timestamp":` + ts(now) + `}`, ""},
		{"timestamp 179 s ahead", calypso.PathAccount, apiKey, apiSecret, `{"account":"` + account + `","timestamp":` + ts(now+179000) + `}`, ""},
		{"unknown key", calypso.PathAccount, "other", apiSecret, `{"timestamp":1}`, "002"},
		{"no key", calypso.PathAccount, "", apiSecret, `{"timestamp":1}`, "002"},
		{"wrong sign", calypso.PathAccount, apiKey, "bad", `{"timestamp":` + ts(now) + `}`, "003"},
		{"no sign", calypso.PathAccount, apiKey, "", `{"timestamp":` + ts(now) + `}`, "003"},
		{"timestamp too old", calypso.PathAccount, apiKey, apiSecret, `{"account":"` + account + `","timestamp":` + ts(now-181000) + `}`, "011"},
		{"timestamp too new", calypso.PathAccount, apiKey, apiSecret, `{"account":"` + account + `","timestamp":` + ts(now+200000) + `}`, "011"},
		{"no timestamp", calypso.PathAccount, apiKey, apiSecret, `{"account":"` + account + `"}`, "011"},
		{"not json", calypso.PathAccount, apiKey, apiSecret, `{"account":`, "001"},
		{"unknown envelope key", calypso.PathAccount, apiKey, apiSecret, `{"account":"` + account + `","timestamp":` + ts(now) + `,"nonce":1}`, "001"},
		{"other account", calypso.PathAccount, apiKey, apiSecret, `{"account":"0xother","timestamp":` + ts(now) + `}`, "001"},
		{"create ok", calypso.PathMassCreate, apiKey, apiSecret, createBody(""), ""},
		{"unknown item key", calypso.PathMassCreate, apiKey, apiSecret, createBody(`,"externalId":"x"`), "001"},
		{"unknown payload key", calypso.PathMassCreate, apiKey, apiSecret,
			`{"account":"` + account + `","timestamp":` + ts(now) + `,"payload":{"currency":"USDT_TRX","name":"n","withdrawalAddress":"x","massAddresses":[{"depositAddress":"T1","amount":1}]}}`, "001"},
		{"amount as string", calypso.PathMassCreate, apiKey, apiSecret,
			`{"account":"` + account + `","timestamp":` + ts(now) + `,"payload":{"currency":"USDT_TRX","name":"n","massAddresses":[{"depositAddress":"T1","amount":"1"}]}}`, "001"},
		{"too many decimals", calypso.PathMassCreate, apiKey, apiSecret,
			`{"account":"` + account + `","timestamp":` + ts(now) + `,"payload":{"currency":"USDT_TRX","name":"n","massAddresses":[{"depositAddress":"T1","amount":0.0000001}]}}`, "001"},
		{"key not a uuid", calypso.PathMassCreate, apiKey, apiSecret,
			`{"account":"` + account + `","timestamp":` + ts(now) + `,"payload":{"currency":"USDT_TRX","name":"n","idempotencyKey":"k1","massAddresses":[{"depositAddress":"T1","amount":1}]}}`, "001"},
		{"get needs id or key", calypso.PathMass, apiKey, apiSecret, `{"account":"` + account + `","timestamp":` + ts(now) + `,"payload":{}}`, "001"},
		{"get by numeric id, missing", calypso.PathMass, apiKey, apiSecret, `{"account":"` + account + `","timestamp":` + ts(now) + `,"payload":{"id":1}}`, "004"},
		{"get by key, missing", calypso.PathMass, apiKey, apiSecret, `{"account":"` + account + `","timestamp":` + ts(now) + `,"payload":{"idempotencyKey":"` + key + `"}}`, "004"},
		{"tariff without account", calypso.PathExtendedFee, apiKey, apiSecret, `{"timestamp":` + ts(now) + `,"payload":{"items":[{"baseAmount":1000,"currency":"USDT_TRX","opType":"WITHDRAWAL"}]}}`, ""},
		{"withdrawal by withdrawalId, missing", calypso.PathWithdrawal, apiKey, apiSecret, `{"account":"` + account + `","timestamp":` + ts(now) + `,"payload":{"withdrawalId":"1"}}`, "004"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, code := rawPost(t, h.url, tt.path, tt.key, tt.secret, tt.body)
			if code != tt.code || (tt.code == "" && status != http.StatusOK) {
				t.Fatalf("status %d code %q, want code %q", status, code, tt.code)
			}
		})
	}
}

func TestIntrospectionHTTP(t *testing.T) {
	h := newHarness(t, func(c *sandbox.Config) { c.Verification = true })
	key := uuid.NewString()
	p := h.create(t, key, "1", "2")
	id := string(p.ID)
	waitFor(t, "pending", func() bool { got, _ := h.sb.Payout(id); return got.State == calypso.StatePendingConfirmation })

	get := func(path string, v any) {
		t.Helper()
		resp, err := http.Get(h.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	post := func(path, body string) int {
		t.Helper()
		resp, err := http.Post(h.url+path, "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	var payouts []sandbox.Payout
	get("/sandbox/payouts", &payouts)
	if len(payouts) != 1 || len(payouts[0].Items) != 2 || !payouts[0].Items[1].Amount.Equal(amt("2")) {
		t.Fatalf("payouts %+v", payouts)
	}
	var one sandbox.Payout
	get("/sandbox/payouts/"+id, &one)
	if one.IdempotencyKey != key {
		t.Fatalf("payout %+v", one)
	}
	if code := post("/sandbox/payouts/"+id+"/confirm", ""); code != http.StatusOK {
		t.Fatalf("confirm: %d", code)
	}
	if code := post("/sandbox/payouts/"+id+"/cancel", ""); code != http.StatusConflict {
		t.Fatalf("cancel after confirm: %d, want 409", code)
	}
	if code := post("/sandbox/payouts/nope/confirm", ""); code != http.StatusNotFound {
		t.Fatalf("confirm unknown: %d, want 404", code)
	}
	waitFor(t, "completed", func() bool { return h.rc.payoutState(id) == calypso.StateCompleted })

	var reqs map[string]map[string]int
	get("/sandbox/requests", &reqs)
	if reqs[calypso.PathMassCreate]["ok"] != 1 {
		t.Fatalf("requests %v", reqs)
	}
	var idem map[string]int
	get("/sandbox/idempotency", &idem)
	if idem[key] != 1 {
		t.Fatalf("idempotency %v", idem)
	}
	var hooks []sandbox.WebhookRecord
	get("/sandbox/webhooks", &hooks)
	if len(hooks) < 5 || hooks[0].EventType != calypso.EventPayoutChangeStatus || hooks[0].State != calypso.StateCreationInProgress {
		t.Fatalf("webhooks %+v", hooks)
	}
	if code := post("/sandbox/balance", `{"account":"`+account+`","currency":"BTC","amount":1.23456789}`); code != http.StatusOK {
		t.Fatalf("balance: %d", code)
	}
	info, err := h.client.Account(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := info.Balance("BTC"); !b.Equal(amt("1.23456789")) {
		t.Fatalf("BTC balance %s", b)
	}
}

func TestFundLater(t *testing.T) {
	h := newHarness(t, nil)
	r := calypso.MassPayoutRequest{Currency: "ETH", Name: "n", IdempotencyKey: uuid.NewString(),
		Items: []calypso.MassPayoutItem{{DepositAddress: "0xabc", Amount: amt("11")}}}
	if _, err := h.client.CreateMassPayout(context.Background(), r); !errors.Is(err, calypso.ErrInsufficientBalance) || calypso.Retryable(err) {
		t.Fatalf("want a permanent ErrInsufficientBalance, got %v", err)
	}
	if err := h.sb.SetBalance(account, "ETH", amt("11")); err != nil {
		t.Fatal(err)
	}
	// The refused create left the key unused.
	if _, err := h.client.CreateMassPayout(context.Background(), r); err != nil {
		t.Fatalf("after funding: %v", err)
	}
}

// TestChaos runs many payouts through random API faults and a random outcome
// mix: every key yields exactly one payout and every payout ends terminal.
func TestChaos(t *testing.T) {
	h := newHarness(t, func(c *sandbox.Config) {
		c.Faults = sandbox.Faults{
			Seed: 7, API5xx: 0.2, API429: 0.1, ConnReset: 0.1, LostResponse: 0.1,
			DuplicateWebhook: 0.3, ReorderWebhook: 0.3, DelayWebhook: 0.1,
			Outcomes: sandbox.OutcomeMix{Completed: 2, Partial: 1, Failed: 1},
		}
	})
	ctx := context.Background()
	var ids []string
	for i := range 12 {
		key := uuid.NewString()
		r := calypso.MassPayoutRequest{Currency: "USDT_TRX", Name: fmt.Sprint("chaos-", i), IdempotencyKey: key,
			Items: []calypso.MassPayoutItem{{DepositAddress: "T1", Amount: amt("1")}, {DepositAddress: "T2", Amount: amt("2")}}}
		var id string
		for attempt := 0; id == ""; attempt++ {
			p, err := h.client.CreateMassPayout(ctx, r)
			switch {
			case err == nil:
				id = string(p.ID)
			case errors.Is(err, calypso.ErrIdempotencyKeyExists):
				got, lerr := h.client.MassPayoutByIdempotencyKey(ctx, key)
				if lerr == nil {
					id = string(got.ID)
				}
			case !calypso.Retryable(err) || attempt > 20:
				t.Fatalf("create %d: %v", i, err)
			}
		}
		ids = append(ids, id)
	}
	if n := len(h.sb.Payouts()); n != len(ids) {
		t.Fatalf("%d payouts for %d keys", n, len(ids))
	}
	for _, id := range ids {
		waitFor(t, "payout "+id+" terminal at the receiver", func() bool { return h.rc.payoutState(id).Terminal() })
		p, _ := h.sb.Payout(id)
		if got := h.rc.payoutState(id); got != p.State {
			t.Fatalf("payout %s: receiver %s, sandbox %s", id, got, p.State)
		}
	}
}
