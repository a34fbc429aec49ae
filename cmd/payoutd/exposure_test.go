package main

import (
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/pipeline"
)

// The ops server and the sandbox bind loopback unless told otherwise, and
// every server has read, write and idle timeouts.
func TestServersBindLoopbackAndHaveTimeouts(t *testing.T) {
	t.Parallel()
	var c cli
	parser, err := kong.New(&c, kong.Name("payoutd"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parser.Parse([]string{"run"}); err != nil {
		t.Fatal(err)
	}
	if !isLoopback(c.Run.OpsAddr) {
		t.Errorf("run --ops-addr defaults to %q, want loopback", c.Run.OpsAddr)
	}
	if _, err := parser.Parse([]string{"sandbox"}); err != nil {
		t.Fatal(err)
	}
	if !isLoopback(c.Sandbox.Listen) {
		t.Errorf("sandbox --listen defaults to %q, want loopback", c.Sandbox.Listen)
	}

	ops, err := newOpsServer("127.0.0.1:0", newMetrics(), pipeline.NewHealth(), func() (bool, string) { return true, "" }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ops.close)
	in, err := pipeline.NewIngress(pipeline.IngressConfig{Keys: calypso.WebhookKeys{"wk": "ws"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, srv := range map[string]*http.Server{
		"ops": ops.srv, "ingress": in.Server(":0"), "sandbox": sandboxServer(http.NotFoundHandler(), "", slog.New(slog.DiscardHandler)),
	} {
		if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 {
			t.Errorf("%s server timeouts: header %s, read %s, write %s, idle %s", name,
				srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout)
		}
	}
}

// The sandbox's balance/confirm/cancel endpoints are never open beyond
// loopback: listening wider needs a token, and with one they require it.
func TestSandboxIntrospectionNeedsATokenBeyondLoopback(t *testing.T) {
	t.Parallel()
	r := payoutd(t, 10*time.Second, nil, "sandbox", "--listen=0.0.0.0:0")
	if r.code != exitUsage || !strings.Contains(r.stderr, "--introspection-token") {
		t.Fatalf("sandbox on 0.0.0.0 without a token: want exit %d naming --introspection-token:\n%s", exitUsage, r)
	}

	sb := startPayoutd(t, nil, "sandbox", "--listen=127.0.0.1:0", "--introspection-token=tok-123",
		"--account=id=acc,key=k,secret=s,balance=USDT_TRX:10")
	base := waitMatch(t, sb, regexp.MustCompile(`url=(http://\S+)`))
	get := func(path, token string) int {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		path, token string
		want        int
	}{
		{"/sandbox/payouts", "", http.StatusUnauthorized},
		{"/sandbox/payouts", "wrong", http.StatusUnauthorized},
		{"/sandbox/payouts", "tok-123", http.StatusOK},
		{"/healthz", "", http.StatusOK},
	} {
		if got := get(c.path, c.token); got != c.want {
			t.Errorf("GET %s with token %q: %d, want %d", c.path, c.token, got, c.want)
		}
	}
}
