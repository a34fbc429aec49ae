package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
)

// kafkaFlags are how every command reaches Kafka. A real cluster usually
// needs TLS and SASL; both are off by default so a local broker just works.
type kafkaFlags struct {
	Brokers          []string       `name:"kafka-brokers" env:"PAYOUTD_KAFKA_BROKERS" default:"localhost:9092" help:"Kafka seed brokers, comma-separated host:port."`
	ClientID         string         `name:"kafka-client-id" env:"PAYOUTD_KAFKA_CLIENT_ID" default:"payoutd" help:"Client id sent to the brokers (quotas, broker logs)."`
	TLS              bool           `name:"kafka-tls" env:"PAYOUTD_KAFKA_TLS" help:"Connect with TLS (implied by any other --kafka-tls-* flag)."`
	TLSCA            string         `name:"kafka-tls-ca-file" env:"PAYOUTD_KAFKA_TLS_CA_FILE" placeholder:"PATH" help:"PEM file of the CAs that sign the brokers' certificates (default: the system pool)."`
	TLSCert          string         `name:"kafka-tls-cert-file" env:"PAYOUTD_KAFKA_TLS_CERT_FILE" placeholder:"PATH" help:"PEM client certificate for mutual TLS; needs --kafka-tls-key-file."`
	TLSKey           string         `name:"kafka-tls-key-file" env:"PAYOUTD_KAFKA_TLS_KEY_FILE" placeholder:"PATH" help:"PEM private key of --kafka-tls-cert-file."`
	TLSServerName    string         `name:"kafka-tls-server-name" env:"PAYOUTD_KAFKA_TLS_SERVER_NAME" help:"Expected broker certificate name, when it differs from the seed host."`
	TLSInsecure      bool           `name:"kafka-tls-insecure-skip-verify" env:"PAYOUTD_KAFKA_TLS_INSECURE_SKIP_VERIFY" help:"Do not verify the brokers' certificates. For tests only: anyone on the path can read the payouts."`
	SASLMechanism    string         `name:"kafka-sasl-mechanism" env:"PAYOUTD_KAFKA_SASL_MECHANISM" placeholder:"MECH" help:"SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: no SASL). Use with TLS: PLAIN sends the password as is."`
	SASLUser         string         `name:"kafka-sasl-user" env:"PAYOUTD_KAFKA_SASL_USER" help:"SASL user name."`
	SASLPassword     calypso.Secret `name:"kafka-sasl-password" env:"PAYOUTD_KAFKA_SASL_PASSWORD" help:"SASL password. Prefer --kafka-sasl-password-file."`
	SASLPasswordFile string         `name:"kafka-sasl-password-file" env:"PAYOUTD_KAFKA_SASL_PASSWORD_FILE" placeholder:"PATH" help:"File holding the SASL password (trailing newline ignored)."`
	SASLPlainNoTLS   bool           `name:"kafka-sasl-plain-without-tls" env:"PAYOUTD_KAFKA_SASL_PLAIN_WITHOUT_TLS" help:"Allow SASL PLAIN without TLS, which sends the password in clear (a broker on loopback in tests only)."`

	inlinePassword bool // the SASL password was given inline, not from a file
}

// tlsOn reports whether the connection to Kafka uses TLS.
func (k *kafkaFlags) tlsOn() bool {
	return k.TLS || k.TLSCA != "" || k.TLSCert != "" || k.TLSInsecure || k.TLSServerName != ""
}

func (k *kafkaFlags) validate(p *problems) {
	if len(nonEmpty(k.Brokers)) == 0 {
		p.add("--kafka-brokers (PAYOUTD_KAFKA_BROKERS)", "at least one seed broker is required")
	}
	for _, b := range k.Brokers {
		if b != "" && !strings.Contains(b, ":") {
			p.add("--kafka-brokers (PAYOUTD_KAFKA_BROKERS)", "%q is not host:port", b)
		}
	}
	for name, path := range map[string]string{
		"--kafka-tls-ca-file (PAYOUTD_KAFKA_TLS_CA_FILE)":     k.TLSCA,
		"--kafka-tls-cert-file (PAYOUTD_KAFKA_TLS_CERT_FILE)": k.TLSCert,
		"--kafka-tls-key-file (PAYOUTD_KAFKA_TLS_KEY_FILE)":   k.TLSKey,
	} {
		checkReadable(p, name, path)
	}
	if (k.TLSCert == "") != (k.TLSKey == "") {
		p.add("--kafka-tls-cert-file/--kafka-tls-key-file", "give both or neither")
	}
	const mech = "--kafka-sasl-mechanism (PAYOUTD_KAFKA_SASL_MECHANISM)"
	switch strings.ToUpper(k.SASLMechanism) {
	case "":
		if k.SASLUser != "" || k.SASLPassword != "" || k.SASLPasswordFile != "" {
			p.add(mech, "is required when a SASL user or password is set")
		}
		return
	case "PLAIN":
		if !k.tlsOn() && !k.SASLPlainNoTLS {
			p.add(mech, "PLAIN without TLS sends the password in clear: set --kafka-tls (and --kafka-tls-ca-file), use SCRAM, or --kafka-sasl-plain-without-tls for a test broker")
		}
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
	default:
		p.add(mech, "must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got %q", k.SASLMechanism)
	}
	if k.SASLUser == "" {
		p.add("--kafka-sasl-user (PAYOUTD_KAFKA_SASL_USER)", "is required with SASL")
	}
	k.inlinePassword = k.SASLPassword != ""
	k.SASLPassword = secretFrom(p, "--kafka-sasl-password (PAYOUTD_KAFKA_SASL_PASSWORD)",
		"--kafka-sasl-password-file (PAYOUTD_KAFKA_SASL_PASSWORD_FILE)", k.SASLPassword, k.SASLPasswordFile)
	if k.SASLPassword == "" {
		p.add("--kafka-sasl-password (PAYOUTD_KAFKA_SASL_PASSWORD)", "is required with SASL (or --kafka-sasl-password-file)")
	}
}

// topicFlags name the topics; every name is configurable so that several
// payoutd deployments (or tests) can share a cluster.
type topicFlags struct {
	Requests     string `name:"topic-requests" env:"PAYOUTD_TOPIC_REQUESTS" default:"payouts.requests" help:"Topic of incoming payout intents."`
	DLQ          string `name:"topic-dlq" env:"PAYOUTD_TOPIC_DLQ" default:"payouts.requests.dlq" help:"Dead-letter topic for intents that cannot be paid."`
	Batches      string `name:"topic-batches" env:"PAYOUTD_TOPIC_BATCHES" default:"payouts.batches" help:"Topic of planned batches (write-ahead log)."`
	Intents      string `name:"topic-intents" env:"PAYOUTD_TOPIC_INTENTS" default:"payouts.intents" help:"Compacted topic of each intent's latest state (dedup index)."`
	Outcomes     string `name:"topic-outcomes" env:"PAYOUTD_TOPIC_OUTCOMES" default:"payouts.outcomes" help:"Topic of typed outcome events (what ledgers consume)."`
	WebhooksRaw  string `name:"topic-webhooks-raw" env:"PAYOUTD_TOPIC_WEBHOOKS_RAW" default:"calypso.webhooks.raw" help:"Topic archiving Calypso's webhooks byte for byte."`
	BatchStates  string `name:"topic-batch-states" env:"PAYOUTD_TOPIC_BATCH_STATES" default:"payouts.batches.state" help:"Compacted topic of what the submitter decided for each batch."`
	TrackerState string `name:"topic-tracker-state" env:"PAYOUTD_TOPIC_TRACKER_STATE" default:"payouts.tracker.state" help:"Compacted changelog of the tracker's open payouts."`
}

func (t topicFlags) topics() events.Topics {
	return events.Topics{Requests: t.Requests, DLQ: t.DLQ, Batches: t.Batches, Intents: t.Intents,
		Outcomes: t.Outcomes, WebhooksRaw: t.WebhooksRaw,
		BatchStates: t.BatchStates, TrackerState: t.TrackerState}.WithDefaults()
}

func (t topicFlags) validate(p *problems) {
	seen := map[string]string{}
	for flag, name := range map[string]string{
		"--topic-requests": t.Requests, "--topic-dlq": t.DLQ, "--topic-batches": t.Batches,
		"--topic-intents": t.Intents, "--topic-outcomes": t.Outcomes, "--topic-webhooks-raw": t.WebhooksRaw,
		"--topic-batch-states": t.BatchStates, "--topic-tracker-state": t.TrackerState,
	} {
		if name == "" {
			continue
		}
		if other, dup := seen[name]; dup {
			p.add(flag, "topic %q is also %s", name, other)
		}
		seen[name] = flag
	}
}

// logFlags choose the log format and level; logs go to stderr.
type logFlags struct {
	Format string `name:"log-format" env:"PAYOUTD_LOG_FORMAT" default:"text" help:"Log format: text or json."`
	Level  string `name:"log-level" env:"PAYOUTD_LOG_LEVEL" default:"info" help:"Log level: debug, info, warn or error."`
}

func (l logFlags) validate(p *problems) {
	if l.Format != "text" && l.Format != "json" {
		p.add("--log-format (PAYOUTD_LOG_FORMAT)", "must be text or json, got %q", l.Format)
	}
	if _, err := parseLevel(l.Level); err != nil {
		p.add("--log-level (PAYOUTD_LOG_LEVEL)", "%v", err)
	}
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("must be debug, info, warn or error, got %q", s)
	}
	return l, nil
}

// logger builds the process logger: one event per line, on stderr.
func (l logFlags) logger() *slog.Logger {
	level, _ := parseLevel(l.Level)
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// positive reports a duration that must be above zero.
func positive(p *problems, setting string, d time.Duration) {
	if d <= 0 {
		p.add(setting, "must be a positive duration, got %s", d)
	}
}

// checkReadable reports a path that is set but cannot be read.
func checkReadable(p *problems, setting, path string) {
	if path == "" {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		p.add(setting, "cannot read %s: %v", path, unwrapPathErr(err))
		return
	}
	_ = f.Close()
}

func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// secretFrom returns the secret given inline or read from file (never both).
func secretFrom(p *problems, inline, fileFlag string, value calypso.Secret, file string) calypso.Secret {
	if file == "" {
		return value
	}
	if value != "" {
		p.add(fileFlag, "give %s or a file, not both", inline)
		return value
	}
	b, err := os.ReadFile(file)
	if err != nil {
		p.add(fileFlag, "cannot read %s: %v", file, unwrapPathErr(err))
		return ""
	}
	return calypso.Secret(strings.TrimRight(string(b), "\r\n"))
}

func nonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
