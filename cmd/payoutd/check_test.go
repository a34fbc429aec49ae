package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/calypso/sandbox"
	"github.com/payoutd/payoutd/internal/kafkatest"
)

// waitTopicsListed waits until the broker lists every topic of tt: a real
// Kafka publishes new topics asynchronously.
func waitTopicsListed(t *testing.T, c *kafkatest.Cluster, tt testTopics) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		rep, err := tt.Describe(ctx, c.Admin(t), 0)
		if err == nil && len(rep.Missing) == 0 {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("topics not listed within 30s: %v %v", rep.Missing, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func startTestSandbox(t *testing.T) string {
	t.Helper()
	sb := sandbox.New(sandbox.Config{Accounts: map[string]sandbox.Account{"acc": {APIKey: "k", APISecret: "s",
		Balances: map[string]calypso.Amount{"USDT_TRX": calypso.MustParseAmount("10")}}}})
	srv := httptest.NewServer(sb)
	t.Cleanup(func() { srv.Close(); sb.Close() })
	return srv.URL
}

// `run --check` prints one line per check and exits 0, 1 or 2.
func TestRunCheck(t *testing.T) {
	t.Parallel()
	cluster := kafkatest.Start(t)
	tt := newTestTopics(t)
	tt.ensure(t, cluster, 2)
	waitTopicsListed(t, cluster, tt)
	sandboxURL := startTestSandbox(t)
	base := func(topics testTopics, brokers, secret string) []string {
		return append([]string{"run", "--check", brokers, "--calypso-url=" + sandboxURL,
			"--calypso-account=id=acc,key=k,secret=" + secret, "--webhook-key=wk=ws"}, topics.flags()...)
	}
	typo := tt
	typo.Requests += "-typo"
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"all ok", base(tt, brokersFlag(cluster), "s"), exitOK, []string{
			"ok    configuration: valid", "ok    topic " + tt.Requests + ": exists", "ok    topic " + tt.TrackerState + ": exists",
			"ok    calypso account acc at " + sandboxURL + ": readable", "ok    webhook keys: 1 key pair(s)"}},
		{"missing topic", base(typo, brokersFlag(cluster), "s"), exitFailed, []string{
			"FAIL  topic " + typo.Requests + ": does not exist; create it with `payoutd topics`", "ok    topic " + tt.Intents + ": exists"}},
		{"wrong api secret", base(tt, brokersFlag(cluster), "wrong"), exitFailed, []string{"FAIL  calypso account acc at " + sandboxURL}},
		{"kafka unreachable", base(tt, "--kafka-brokers=127.0.0.1:1", "s"), exitFailed, []string{"FAIL  kafka at 127.0.0.1:1"}},
		{"bad configuration", append(base(tt, brokersFlag(cluster), "s"), "--calypso-timeout=-1s"), exitUsage, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := payoutd(t, time.Minute, nil, tc.args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d\n%s", r.code, tc.code, r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("stdout lacks %q\n%s", w, r)
				}
			}
			if strings.Contains(r.stdout+r.stderr, "secret=s") || strings.Contains(r.stdout+r.stderr, "wrong") {
				t.Errorf("a secret is printed\n%s", r)
			}
			for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
				if tc.code != exitUsage && !strings.HasPrefix(l, "ok    ") && !strings.HasPrefix(l, "FAIL  ") {
					t.Errorf("line %q is neither ok nor FAIL", l)
				}
			}
		})
	}
}

// `run` with a topic that does not exist says which, and is not ready for
// that reason, instead of consuming nothing in silence.
func TestRunNamesAMissingTopic(t *testing.T) {
	t.Parallel()
	cluster := kafkatest.Start(t)
	tt := newTestTopics(t)
	tt.ensure(t, cluster, 2)
	waitTopicsListed(t, cluster, tt)
	typo := tt
	typo.WebhooksRaw += "-typo"
	p := startPayoutd(t, nil, append([]string{"run", "--components=ingress", brokersFlag(cluster), "--webhook-key=wk=ws",
		"--ingress-addr=127.0.0.1:0", "--ops-addr=127.0.0.1:0", "--log-format=text"}, typo.flags()...)...)
	p.waitOutput(t, time.Minute, "topic="+typo.WebhooksRaw)
	p.waitOutput(t, time.Minute, "ops=")
	out := p.stdout.String() + p.stderr.String()
	if !strings.Contains(out, "create it with `payoutd topics`") {
		t.Fatalf("the error does not say how to fix it:\n%s", out)
	}
	ops := regexp.MustCompile(`ops=(http://[0-9.:]+)`).FindStringSubmatch(out)
	if ops == nil {
		t.Fatalf("no ops address in:\n%s", out)
	}
	code, body := getReadyz(t, ops[1], "?verbose")
	var rep readyzReport
	_ = json.Unmarshal([]byte(body), &rep)
	found := false
	for _, part := range rep.Parts {
		found = found || (!part.Ready && strings.Contains(part.Reason, "topic "+typo.WebhooksRaw+" does not exist"))
	}
	if code != http.StatusServiceUnavailable || !found {
		t.Fatalf("/readyz: %d %s; want not ready naming %s", code, body, typo.WebhooksRaw)
	}
}

// `run` against a Kafka that does not answer says so, naming the brokers,
// and keeps running (and trying) instead of exiting.
func TestRunSaysKafkaDoesNotAnswerAndKeepsTrying(t *testing.T) {
	t.Parallel()
	tt := newTestTopics(t)
	p := startPayoutd(t, nil, append([]string{"run", "--components=ingress", "--kafka-brokers=127.0.0.1:1", "--webhook-key=wk=ws",
		"--ingress-addr=127.0.0.1:0", "--ops-addr=127.0.0.1:0", "--log-format=text"}, tt.flags()...)...)
	p.waitOutput(t, 2*time.Minute, `msg="kafka does not answer; retrying" brokers=127.0.0.1:1`)
	select {
	case <-p.done:
		t.Fatalf("payoutd exited instead of retrying:\n%s", p.res)
	default:
	}
}
