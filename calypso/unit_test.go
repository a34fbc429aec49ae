package calypso_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/payoutd/payoutd/calypso"
)

func TestSignBodyPublishedVector(t *testing.T) {
	// From Calypso's API authentication page; the key is not used by the MAC.
	const (
		secret = "b823a6b9ea72408583cef9ec8d67fa52"
		body   = `{"timestamp":1}`
		want   = "b16e9d45f49f2069becbc4f108b237bee588cfc353fe9501df103e692acbc68d482a10d34c12bea22fedde7e28e1b8e57a6a0a373b0e9a27c5257bd8b36e13b9"
	)
	if got := calypso.SignBody(calypso.Secret(secret), []byte(body)); got != want {
		t.Fatalf("SignBody = %s, want %s", got, want)
	}
}

func TestAmountJSON(t *testing.T) {
	tests := []struct {
		name, in, wantText, wantJSON string
	}{
		{"integer", `1500`, "1500", `1500`},
		{"fraction", `1500.75`, "1500.75", `1500.75`},
		{"one wei", `0.000000000000000001`, "0.000000000000000001", `0.000000000000000001`},
		{"big with micro", `12345678901234567.123456`, "12345678901234567.123456", `12345678901234567.123456`},
		{"string", `"0.025"`, "0.025", `0.025`},
		{"exponent", `1e-18`, "0.000000000000000001", `0.000000000000000001`},
		{"trailing zeros", `2.500`, "2.5", `2.5`},
		{"negative", `-3.1`, "-3.1", `-3.1`},
		{"beyond float64", `9007199254740993.000000000000000001`, "9007199254740993.000000000000000001", `9007199254740993.000000000000000001`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a calypso.Amount
			if err := json.Unmarshal([]byte(tt.in), &a); err != nil {
				t.Fatalf("unmarshal %s: %v", tt.in, err)
			}
			if a.String() != tt.wantText {
				t.Errorf("String = %s, want %s", a, tt.wantText)
			}
			b, err := json.Marshal(a)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.wantJSON {
				t.Errorf("Marshal = %s, want %s", b, tt.wantJSON)
			}
		})
	}
	for _, bad := range []string{`"abc"`, `"1,5"`, `true`, `{}`, `""`, `1e999999999`, `1e-999999999`} {
		t.Run("reject "+bad, func(t *testing.T) {
			var a calypso.Amount
			if err := json.Unmarshal([]byte(bad), &a); err == nil {
				t.Fatalf("unmarshal %s: want error, got %s", bad, a)
			}
		})
	}
	t.Run("fits decimals", func(t *testing.T) {
		if !calypso.MustParseAmount("1.12345600").FitsDecimals(6) {
			t.Error("1.123456 should fit 6 decimals")
		}
		if calypso.MustParseAmount("0.000000001").FitsDecimals(8) {
			t.Error("1e-9 should not fit 8 decimals")
		}
	})
}

func TestIDJSON(t *testing.T) {
	tests := []struct{ in, want string }{
		{`"abc-1"`, "abc-1"},
		{`12345`, "12345"},
		{`123456789012345678901234567890`, "123456789012345678901234567890"},
		{`null`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var id calypso.ID
			if err := json.Unmarshal([]byte(tt.in), &id); err != nil {
				t.Fatal(err)
			}
			if string(id) != tt.want {
				t.Fatalf("got %q, want %q", id, tt.want)
			}
		})
	}
	var id calypso.ID
	if err := json.Unmarshal([]byte(`{}`), &id); err == nil {
		t.Fatal("object id: want error")
	}
}

func TestParseTime(t *testing.T) {
	want := time.Date(2022, 3, 15, 12, 13, 5, 909616000, time.UTC)
	tests := []struct {
		in   string
		want time.Time
	}{
		{"2022-03-15T12:13:05.909616", want},
		{"2022-03-15T12:13:05.909616Z", want},
		{"2022-03-15T14:13:05.909616+02:00", want},
		{"2022-03-15T14:13:05.909616+0200", want},
		{"2022-03-15T12:13:05", want.Truncate(time.Second)},
		{"2022-03-15T12:13:05Z", want.Truncate(time.Second)},
		{"2022-03-15T12:13:05.9", want.Truncate(time.Second).Add(900 * time.Millisecond)},
		{"2022-03-15T12:13:05.909616001", want.Add(1)},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := calypso.ParseTime(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(tt.want) || got.Location() != time.UTC {
				t.Fatalf("got %v, want %v (UTC)", got, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "yesterday", "2022-03-15", "2022-13-15T12:13:05"} {
		if _, err := calypso.ParseTime(bad); err == nil {
			t.Errorf("ParseTime(%q): want error", bad)
		}
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	const secret = "b823a6b9ea72408583cef9ec8d67fa52"
	cfg := calypso.Config{BaseURL: "http://x", Account: "acc", APIKey: "pub", APISecret: secret}
	keys := calypso.WebhookKeys{"pub": secret}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("cfg", "secret", cfg.APISecret, "cfg", cfg)
	jsonCfg, _ := json.Marshal(cfg)
	outputs := map[string]string{
		"%v":       fmt.Sprintf("%v", cfg),
		"%+v":      fmt.Sprintf("%+v", cfg),
		"%#v":      fmt.Sprintf("%#v", cfg),
		"%s":       fmt.Sprintf("%s", cfg.APISecret),
		"%q":       fmt.Sprintf("%q", cfg.APISecret),
		"%x":       fmt.Sprintf("%x", cfg.APISecret),
		"keys %v":  fmt.Sprintf("%v", keys),
		"keys %#v": fmt.Sprintf("%#v", keys),
		"json":     string(jsonCfg),
		"slog":     logged.String(),
	}
	// Errors from every path that touches the secret.
	_, err := calypso.NewClient(calypso.Config{APISecret: secret})
	outputs["validate error"] = err.Error()
	err = calypso.NewWebhookVerifier(keys).Verify("pub", strings.Repeat("00", 64), []byte("{}"))
	outputs["verify error"] = err.Error()
	for name, out := range outputs {
		t.Run(name, func(t *testing.T) {
			if strings.Contains(out, secret) || strings.Contains(out, fmt.Sprintf("%x", secret)) {
				t.Fatalf("secret leaked: %s", out)
			}
		})
	}
	if !strings.Contains(outputs["%+v"], "[REDACTED]") {
		t.Errorf("%%+v should show the redaction: %s", outputs["%+v"])
	}
	if calypso.Secret(secret).Reveal() != secret {
		t.Error("Reveal must return the value")
	}
}

func TestConfigValidate(t *testing.T) {
	good := calypso.Config{BaseURL: "http://sandbox:8080", Account: "acc", APIKey: "k", APISecret: "s"}
	tests := []struct {
		name  string
		edit  func(*calypso.Config)
		field string // "" = valid
	}{
		{"valid", func(*calypso.Config) {}, ""},
		{"no base url", func(c *calypso.Config) { c.BaseURL = "" }, "BaseURL"},
		{"relative base url", func(c *calypso.Config) { c.BaseURL = "api.calypso.finance" }, "BaseURL"},
		{"no account", func(c *calypso.Config) { c.Account = "" }, "Account"},
		{"no key", func(c *calypso.Config) { c.APIKey = "" }, "APIKey"},
		{"no secret", func(c *calypso.Config) { c.APISecret = "" }, "APISecret"},
		{"negative timeout", func(c *calypso.Config) { c.Timeout = -1 }, "Timeout"},
		{"negative attempts", func(c *calypso.Config) { c.Retry.MaxAttempts = -1 }, "Retry.MaxAttempts"},
		{"max below base", func(c *calypso.Config) { c.Retry.BaseDelay, c.Retry.MaxDelay = time.Second, time.Millisecond }, "Retry.MaxDelay"},
		{"bad decimals", func(c *calypso.Config) { c.Currencies = map[string]calypso.CurrencyRule{"BTC": {Decimals: -1}} }, "Currencies[BTC].Decimals"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.edit(&c)
			err := c.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("want error naming %s, got %v", tt.field, err)
			}
		})
	}
}

func TestDefaultCurrencies(t *testing.T) {
	tests := []struct {
		cur      string
		decimals int32
		items    int
	}{
		{"BTC", 8, 100}, {"ETH", 18, 1000}, {"USDT", 6, 1000}, {"USDT_TRX", 6, 100}, {"TRX", 6, 100},
	}
	c := calypso.Config{}
	for _, tt := range tests {
		r, ok := c.Rule(tt.cur)
		if !ok || r.Decimals != tt.decimals || r.MaxItems != tt.items {
			t.Errorf("%s: got %+v (known %v), want %d decimals, %d items", tt.cur, r, ok, tt.decimals, tt.items)
		}
	}
}

func TestStateOrder(t *testing.T) {
	path := []calypso.State{calypso.StateCreationInProgress, calypso.StatePendingConfirmation, calypso.StateConfirmed, calypso.StateInProgress}
	for i := 1; i < len(path); i++ {
		if path[i].Rank() <= path[i-1].Rank() {
			t.Errorf("%s should outrank %s", path[i], path[i-1])
		}
	}
	for _, term := range []calypso.State{calypso.StateCompleted, calypso.StatePartial, calypso.StateFailed, calypso.StateCanceled} {
		if !term.Terminal() || !term.Known() {
			t.Errorf("%s should be terminal and known", term)
		}
		for _, s := range path {
			if s.Terminal() || term.Rank() <= s.Rank() {
				t.Errorf("%s should outrank non-terminal %s", term, s)
			}
		}
	}
	unknown := calypso.State("SOMETHING_NEW")
	if unknown.Known() || unknown.Terminal() || unknown.Rank() != 0 {
		t.Errorf("unknown state: known=%v terminal=%v rank=%d", unknown.Known(), unknown.Terminal(), unknown.Rank())
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"5xx", &calypso.APIError{HTTPStatus: 502}, true},
		{"429", &calypso.APIError{HTTPStatus: 429}, true},
		{"000", &calypso.APIError{HTTPStatus: 400, Code: "000"}, true},
		{"011", &calypso.APIError{HTTPStatus: 400, Code: "011"}, true},
		{"001", &calypso.APIError{HTTPStatus: 400, Code: "001"}, false},
		{"002", &calypso.APIError{HTTPStatus: 401, Code: "002"}, false},
		{"016", &calypso.APIError{HTTPStatus: 400, Code: "016", Message: "IdempotencyKey x already exists"}, false},
		{"transport", &calypso.TransportError{Op: "x", Err: errors.New("reset")}, true},
		{"malformed", fmt.Errorf("x: %w", calypso.ErrMalformedResponse), true},
		{"invalid request", calypso.ErrInvalidRequest, false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := calypso.Retryable(tt.err); got != tt.want {
				t.Fatalf("Retryable = %v, want %v", got, tt.want)
			}
		})
	}
	e := &calypso.APIError{Code: "016", Message: "IdempotencyKey 123 already exists"}
	if !errors.Is(fmt.Errorf("wrapped: %w", e), calypso.ErrIdempotencyKeyExists) {
		t.Error("016 already exists should match ErrIdempotencyKeyExists")
	}
	if errors.Is(&calypso.APIError{Code: "016", Message: "Can not create deal. Validation failed"}, calypso.ErrIdempotencyKeyExists) {
		t.Error("016 validation failure must not match ErrIdempotencyKeyExists")
	}
}
