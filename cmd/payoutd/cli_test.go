package main

import (
	"strings"
	"testing"
	"time"
)

var commands = []string{"dev", "run", "sandbox", "topics", "produce", "tail", "status", "replay", "probe", "version"}

func TestHelpForEveryCommand(t *testing.T) {
	t.Parallel()
	r := payoutd(t, 10*time.Second, nil, "--help")
	if r.code != 0 {
		t.Fatalf("payoutd --help:\n%s", r)
	}
	for _, c := range commands {
		if !strings.Contains(r.stdout, c) {
			t.Errorf("payoutd --help does not list %s", c)
		}
	}
	for _, c := range commands {
		t.Run(c, func(t *testing.T) {
			t.Parallel()
			r := payoutd(t, 10*time.Second, nil, c, "--help")
			if r.code != 0 || !strings.Contains(r.stdout, "Usage: payoutd "+c) {
				t.Fatalf("payoutd %s --help:\n%s", c, r)
			}
		})
	}
}

func TestConfigErrorsNameEverySetting(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  []string
		args []string
		want []string
	}{{
		name: "missing URL and bad duration",
		args: []string{"run", "--batcher-max-wait=soon", "--calypso-account=id=a,key=k,secret=s", "--webhook-key=pub=sec"},
		want: []string{"--calypso-url (PAYOUTD_CALYPSO_URL)", "--batcher-max-wait (PAYOUTD_BATCHER_MAX_WAIT)"},
	}, {
		name: "from the environment",
		env:  []string{"PAYOUTD_TRACKER_POLL_AFTER=often", "PAYOUTD_LOG_FORMAT=xml", "PAYOUTD_COMPONENTS=batcher,mailer", "PAYOUTD_TRACKER_WORKERS=many"},
		args: []string{"run"},
		want: []string{"PAYOUTD_TRACKER_POLL_AFTER", "PAYOUTD_LOG_FORMAT", `unknown component "mailer"`, "PAYOUTD_TRACKER_WORKERS"},
	}, {
		name: "ingress needs keys, submitter needs accounts",
		args: []string{"run", "--calypso-url=https://calypso.example", "--shutdown-timeout=-1s"},
		want: []string{"--webhook-key (PAYOUTD_WEBHOOK_KEYS)", "--calypso-account (PAYOUTD_CALYPSO_ACCOUNTS)", "--shutdown-timeout"},
	}, {
		name: "TLS and SASL",
		args: []string{"run", "--components=batcher", "--kafka-tls-ca-file=/nonexistent/ca.pem", "--kafka-sasl-mechanism=SCRAM-SHA-1", "--kafka-sasl-password=hunter2"},
		want: []string{"--kafka-tls-ca-file", "--kafka-sasl-mechanism", "--kafka-sasl-user"},
	}, {
		name: "submitter lanes out of range",
		env:  []string{"PAYOUTD_SUBMITTER_LOOKUP_GRACE=2h", "PAYOUTD_SUBMITTER_RETRY_ATTEMPTS=0"},
		args: []string{"run", "--components=submitter", "--calypso-url=https://calypso.example", "--calypso-account=id=a,key=k,secret=s",
			"--submitter-in-flight=0", "--submitter-retry-max-elapsed=0s", "--calypso-rate-limit=0", "--submitter-max-pending=0"},
		want: []string{"--submitter-in-flight (PAYOUTD_SUBMITTER_IN_FLIGHT)", "PAYOUTD_SUBMITTER_LOOKUP_GRACE", "PAYOUTD_SUBMITTER_RETRY_ATTEMPTS",
			"--submitter-retry-max-elapsed", "--calypso-rate-limit", "--submitter-max-pending"},
	}, {
		// Issue 11, scenario 13: a 100-year dedup horizon wrapped the cut-off.
		name: "settings out of their range",
		args: []string{"run", "--components=batcher", "--dedup-horizon=876000h", "--batcher-execution-horizon=100000h",
			"--batcher-max-records=0", "--batcher-max-record-bytes=2000000", "--batcher-max-wait=1ns", "--calypso-rate-limit=0",
			"--tracker-workers=100000", "--calypso-max-attempts=1000", "--batcher-rebuild-wait=0s",
			"--batcher-max-amount=BTC=-1", "--batcher-max-amount=DOGECOIN=5"},
		want: []string{"--dedup-horizon (PAYOUTD_DEDUP_HORIZON)", "--batcher-execution-horizon", "--batcher-max-records",
			"--batcher-max-record-bytes", "--batcher-max-wait", "--calypso-rate-limit", "--tracker-workers", "--calypso-max-attempts",
			"--batcher-rebuild-wait", "must be between 1h0m0s and 43800h0m0s, got 876000h0m0s",
			`"BTC=-1" is not CURRENCY=AMOUNT`, `currency "DOGECOIN" is not one payoutd knows`},
	}, {
		name: "replay times",
		args: []string{"replay", "--from=yesterday", "--out-topic=payouts.outcomes"},
		want: []string{"--from", "--out-topic"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := payoutd(t, 10*time.Second, tc.env, tc.args...)
			if r.code != exitUsage {
				t.Fatalf("want exit %d:\n%s", exitUsage, r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not name %q:\n%s", w, r.stderr)
				}
			}
			if strings.Contains(r.stderr+r.stdout, "hunter2") {
				t.Errorf("a secret was printed:\n%s", r)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	r := payoutd(t, 10*time.Second, nil, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "payoutd ") || !strings.Contains(r.stdout, "commit ") {
		t.Fatalf("payoutd version:\n%s", r)
	}
}
