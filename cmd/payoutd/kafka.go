package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/plugin/kslog"
)

// clientOpts turns the flags into the client options every component and
// command shares: seeds, TLS, SASL, and franz-go's own logging through slog.
// hooks (metrics) are added when given.
func (k *kafkaFlags) clientOpts(log *slog.Logger, hooks ...kgo.Hook) ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(nonEmpty(k.Brokers)...),
		kgo.ClientID(k.ClientID),
		kgo.WithLogger(kslog.New(kafkaLogger(log))),
	}
	if len(hooks) > 0 {
		opts = append(opts, kgo.WithHooks(hooks...))
	}
	if k.tlsOn() {
		cfg, err := k.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	switch strings.ToUpper(k.SASLMechanism) {
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: k.SASLUser, Pass: k.SASLPassword.Reveal()}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: k.SASLUser, Pass: k.SASLPassword.Reveal()}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: k.SASLUser, Pass: k.SASLPassword.Reveal()}.AsSha512Mechanism()))
	}
	return opts, nil
}

func (k *kafkaFlags) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: k.TLSServerName, InsecureSkipVerify: k.TLSInsecure} //nolint:gosec // opt-in, documented as tests only
	if k.TLSCA != "" {
		pem, err := os.ReadFile(k.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("reading --kafka-tls-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--kafka-tls-ca-file %s holds no PEM certificate", k.TLSCA)
		}
		cfg.RootCAs = pool
	}
	if k.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(k.TLSCert, k.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("loading --kafka-tls-cert-file/--kafka-tls-key-file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// newAdmin returns an admin client; close it with Close.
func newAdmin(opts []kgo.Opt) (*kadm.Client, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return kadm.NewClient(cl), nil
}

// pingKafka asks the cluster for its brokers, so a command fails early and
// clearly when Kafka is not there instead of hanging in its first fetch.
func pingKafka(ctx context.Context, adm *kadm.Client, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := adm.BrokerMetadata(ctx); err != nil {
		return fmt.Errorf("kafka does not answer: %w", err)
	}
	return nil
}

// errKafkaRefused says the cluster answered but refused this client: a
// wrong password or mechanism, or a certificate not trusted either way.
// Retrying does not help, so the start fails with it.
var errKafkaRefused = errors.New("kafka refuses this client; check --kafka-tls-* and --kafka-sasl-*")

// checkKafkaAccess is the start-up check of the TLS and SASL settings: a
// refusal (errKafkaRefused) fails the start with the reason; a cluster that
// does not answer yet only warns, since the components wait for it anyway.
func checkKafkaAccess(ctx context.Context, adm *kadm.Client, log *slog.Logger, timeout time.Duration) error {
	err := pingKafka(ctx, adm, timeout)
	switch {
	case err == nil:
		return nil
	case refusedByKafka(err):
		return fmt.Errorf("%w: %w", errKafkaRefused, err)
	}
	log.Warn("kafka does not answer yet; starting anyway", "error", err)
	return nil
}

// refusedByKafka reports an authentication or certificate failure.
func refusedByKafka(err error) bool {
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		record    tls.RecordHeaderError
		alert     tls.AlertError
		op        *net.OpError
	)
	return errors.Is(err, kerr.SaslAuthenticationFailed) || errors.Is(err, kerr.UnsupportedSaslMechanism) ||
		errors.Is(err, kerr.IllegalSaslState) || errors.Is(err, kerr.ClusterAuthorizationFailed) ||
		errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &verify) || errors.As(err, &record) || errors.As(err, &alert) ||
		// A TLS alert from the broker ("remote error: tls: bad
		// certificate"): it refused our client certificate, or its lack.
		errors.As(err, &op) && op.Op == "remote error"
}

// newAdminFrom wraps an existing client; closing it is the client's owner's job.
func newAdminFrom(cl *kgo.Client) *kadm.Client { return kadm.NewClient(cl) }
