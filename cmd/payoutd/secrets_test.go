package main

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// The secret the cases below hide somewhere; no part of it may be printed.
const leak = "Zq7-not-for-logs"

// Transport that would expose payouts or passwords is refused, a duplicate
// webhook key is an error, and no configuration error shows any part of a
// secret, kong's own included.
func TestConfigRefusesInsecureTransportAndNeverEchoesSecrets(t *testing.T) {
	t.Parallel()
	base := []string{"run", "--components=ingress,submitter", "--calypso-account=id=a,key=k,secret=" + leak}
	tests := []struct {
		name    string
		args    []string
		want    []string
		notWant []string
	}{{
		name: "plain http to another host",
		args: append(base, "--webhook-key=pub="+leak, "--calypso-url=http://calypso.example"),
		want: []string{"--calypso-url (PAYOUTD_CALYPSO_URL): is plain http://"},
	}, {
		name:    "plain http allowed for loopback and by flag",
		args:    append(base, "--calypso-url=http://127.0.0.1:8081", "--calypso-insecure-http"),
		want:    []string{"--webhook-key"}, // the one problem left
		notWant: []string{"--calypso-url"},
	}, {
		name: "SASL PLAIN without TLS",
		args: append(base, "--webhook-key=pub="+leak, "--calypso-url=https://c", "--kafka-sasl-mechanism=PLAIN", "--kafka-sasl-user=u", "--kafka-sasl-password="+leak),
		want: []string{"--kafka-sasl-mechanism (PAYOUTD_KAFKA_SASL_MECHANISM): PLAIN without TLS"},
	}, {
		name:    "SASL PLAIN explicitly allowed",
		args:    append(base, "--calypso-url=https://c", "--kafka-sasl-mechanism=PLAIN", "--kafka-sasl-user=u", "--kafka-sasl-password="+leak, "--kafka-sasl-plain-without-tls"),
		want:    []string{"--webhook-key"},
		notWant: []string{"--kafka-sasl-mechanism"},
	}, {
		name: "duplicate webhook public key",
		args: append(base, "--calypso-url=https://c", "--webhook-key=pub="+leak, "--webhook-key=pub=other-"+leak),
		want: []string{`public key "pub" is configured twice`},
	}, {
		name: "account part without its secret=",
		args: []string{"run", "--components=submitter", "--calypso-url=https://c", "--calypso-account=id=a,key=k," + leak},
		want: []string{"--calypso-account", "is not key=value"},
	}, {
		name: "webhook key without its public part",
		args: []string{"run", "--components=ingress", "--webhook-key=" + leak},
		want: []string{"--webhook-key", "is not PUBLIC_KEY=SECRET"},
	}, {
		name: "secret split off its flag (kong: unexpected argument)",
		args: []string{"run", "--calypso-account=id=a,key=k,", "secret=" + leak},
		want: []string{"unexpected argument secret=…"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := payoutd(t, 10*time.Second, nil, tc.args...)
			if r.code != exitUsage {
				t.Fatalf("want exit %d:\n%s", exitUsage, r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(r.stderr, w) {
					t.Errorf("stderr names %q:\n%s", w, r.stderr)
				}
			}
			if strings.Contains(r.stderr+r.stdout, leak[:2]) {
				t.Errorf("part of a secret was printed:\n%s", r)
			}
		})
	}
}

// A secret given inline rather than from a file is warned about, by
// setting name, without its value.
func TestRunWarnsAboutInlineSecrets(t *testing.T) {
	t.Parallel()
	p := startPayoutd(t, nil, "run", "--components=ingress", "--kafka-brokers=127.0.0.1:1",
		"--ingress-addr=127.0.0.1:0", "--ops-addr=127.0.0.1:0", "--webhook-key=pub="+leak,
		"--kafka-sasl-mechanism=SCRAM-SHA-512", "--kafka-sasl-user=u", "--kafka-sasl-password="+leak)
	p.waitOutput(t, 30*time.Second, "payoutd running")
	p.signal(syscall.SIGTERM)
	r := p.wait(t, 30*time.Second)
	for _, setting := range []string{"--webhook-key (PAYOUTD_WEBHOOK_KEYS)", "--kafka-sasl-password (PAYOUTD_KAFKA_SASL_PASSWORD)"} {
		if !strings.Contains(r.stderr, "a secret is given inline") || !strings.Contains(r.stderr, setting) {
			t.Errorf("no inline-secret warning for %s:\n%s", setting, r.stderr)
		}
	}
	if strings.Contains(r.stderr+r.stdout, leak[:2]) {
		t.Errorf("part of a secret was printed:\n%s", r)
	}

	sb := startPayoutd(t, nil, "sandbox", "--listen=127.0.0.1:0", "--webhook-secret="+leak)
	sb.waitOutput(t, 30*time.Second, "Calypso sandbox serving")
	sb.signal(syscall.SIGTERM)
	r = sb.wait(t, 30*time.Second)
	if !strings.Contains(r.stderr, "a secret is given inline") || !strings.Contains(r.stderr, "--webhook-secret (PAYOUTD_SANDBOX_WEBHOOK_SECRET)") ||
		strings.Contains(r.stderr+r.stdout, leak[:2]) {
		t.Errorf("sandbox: want an inline-secret warning naming --webhook-secret and no part of it:\n%s", r)
	}
}
