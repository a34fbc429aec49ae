package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/pipeline"
)

var allComponents = []string{"batcher", "submitter", "ingress", "tracker"}

// runCmd is production: real Kafka, real Calypso, the selected components.
type runCmd struct {
	Components []string `name:"components" env:"PAYOUTD_COMPONENTS" default:"batcher,submitter,ingress,tracker" help:"Components to run, comma-separated: batcher, submitter, ingress, tracker. Each scales on its own."`

	kafkaFlags `embed:""`
	topicFlags `embed:""`
	logFlags   `embed:""`

	CalypsoURL          string        `name:"calypso-url" env:"PAYOUTD_CALYPSO_URL" help:"Calypso API base URL, e.g. https://api.calypso.finance. Required for submitter and tracker; there is no default, so production is never reached by accident."`
	CalypsoAccounts     []string      `name:"calypso-account" env:"PAYOUTD_CALYPSO_ACCOUNTS" sep:";" placeholder:"id=ID,key=KEY,secret=SECRET" help:"A Calypso merchant account: id=…,key=…,secret=… or secret-file=PATH. Repeat the flag, or separate accounts with ';' in the variable."`
	CalypsoAccountsFile string        `name:"calypso-accounts-file" env:"PAYOUTD_CALYPSO_ACCOUNTS_FILE" placeholder:"PATH" help:"File with one account per line, same syntax as --calypso-account ('#' comments)."`
	CalypsoTimeout      time.Duration `name:"calypso-timeout" env:"PAYOUTD_CALYPSO_TIMEOUT" default:"30s" help:"Timeout of one Calypso HTTP attempt."`
	CalypsoRateLimit    float64       `name:"calypso-rate-limit" env:"PAYOUTD_CALYPSO_RATE_LIMIT" default:"5" help:"Requests per second per account towards Calypso (negative: unlimited)."`
	CalypsoMaxAttempts  int           `name:"calypso-max-attempts" env:"PAYOUTD_CALYPSO_MAX_ATTEMPTS" default:"4" help:"Tries of one Calypso call on retryable errors, the first included."`

	WebhookKeys     []string `name:"webhook-key" env:"PAYOUTD_WEBHOOK_KEYS" placeholder:"PUBLIC=SECRET" help:"A webhook subscription key pair PUBLIC=SECRET; repeat (or comma-separate) to rotate keys. Required for ingress."`
	WebhookKeysFile string   `name:"webhook-keys-file" env:"PAYOUTD_WEBHOOK_KEYS_FILE" placeholder:"PATH" help:"File with one PUBLIC=SECRET pair per line."`

	BatcherGroup      string        `name:"batcher-group" env:"PAYOUTD_BATCHER_GROUP" default:"payoutd-batcher" help:"Consumer group of the batcher."`
	SubmitterGroup    string        `name:"submitter-group" env:"PAYOUTD_SUBMITTER_GROUP" default:"payoutd-submitter" help:"Consumer group of the submitter."`
	BatcherTxnID      string        `name:"batcher-transactional-id" env:"PAYOUTD_BATCHER_TRANSACTIONAL_ID" help:"Transactional id of the batcher (default: group-hostname, so a restart fences its predecessor). Unique per instance."`
	SubmitterTxnID    string        `name:"submitter-transactional-id" env:"PAYOUTD_SUBMITTER_TRANSACTIONAL_ID" help:"Transactional id of the submitter (default: group-hostname). Unique per instance."`
	IngressTxnID      string        `name:"ingress-transactional-id" env:"PAYOUTD_INGRESS_TRANSACTIONAL_ID" help:"Transactional id of the ingress (default: payoutd-ingress-hostname). Unique per instance."`
	StaticMembership  bool          `name:"static-membership" env:"PAYOUTD_STATIC_MEMBERSHIP" default:"true" negatable:"" help:"Join the batcher and submitter groups as static members named by their transactional ids, so a restarted instance gets its partitions back at once instead of after the session timeout."`
	TrackerTxnID      string        `name:"tracker-transactional-id" env:"PAYOUTD_TRACKER_TRANSACTIONAL_ID" default:"payoutd-tracker" help:"Transactional id of the tracker: fixed, because one tracker is active per topic set and a new one must fence the old."`
	BatcherMaxWait    time.Duration `name:"batcher-max-wait" env:"PAYOUTD_BATCHER_MAX_WAIT" default:"2s" help:"A batching window closes this long after its first record."`
	BatcherMaxRecords int           `name:"batcher-max-records" env:"PAYOUTD_BATCHER_MAX_RECORDS" default:"20000" help:"A window closes early at this many records."`
	BatcherMaxBytes   int           `name:"batcher-max-bytes" env:"PAYOUTD_BATCHER_MAX_BYTES" default:"33554432" help:"A window closes early at this many bytes."`
	MaxRecordBytes    int           `name:"batcher-max-record-bytes" env:"PAYOUTD_BATCHER_MAX_RECORD_BYTES" default:"65536" help:"Larger requests go to the DLQ."`
	DedupHorizon      time.Duration `name:"dedup-horizon" env:"PAYOUTD_DEDUP_HORIZON" default:"168h" help:"How long an intent id is remembered for dedup (also the intents topic's retention); 1h to 5 years. Part of the upstream contract: longer than the requests topic's retention."`
	ExecutionHorizon  time.Duration `name:"batcher-execution-horizon" env:"PAYOUTD_BATCHER_EXECUTION_HORIZON" default:"8760h" help:"How far ahead an executionDate may be (later ones go to the DLQ, reason execution_date); 1h to 10 years."`
	RebuildWait       time.Duration `name:"batcher-rebuild-wait" env:"PAYOUTD_BATCHER_REBUILD_WAIT" default:"2m" help:"How long the dedup rebuild waits for open transactions on the intents topic before failing the session (it never proceeds without them); 1s to 1h."`
	MaxAmount         []string      `name:"batcher-max-amount" env:"PAYOUTD_BATCHER_MAX_AMOUNT" placeholder:"CURRENCY=AMOUNT" help:"Largest amount of one payment in a currency; larger requests go to the DLQ (reason amount). Repeat per currency (default: no maximum beyond the global bounds)."`
	BatcherAccounts   []string      `name:"batcher-accounts" env:"PAYOUTD_BATCHER_ACCOUNTS" help:"Accounts the batcher accepts (default: the ids of --calypso-account; none configured: any)."`

	CheckBalance     bool          `name:"submitter-check-balance" env:"PAYOUTD_SUBMITTER_CHECK_BALANCE" help:"Read the account balance before each create and defer batches it cannot cover."`
	PrecalculateFees bool          `name:"submitter-precalculate-fees" env:"PAYOUTD_SUBMITTER_PRECALCULATE_FEES" help:"Ask Calypso for each batch's fees first (balance check covers amount+fee; --submitter-max-fee applies)."`
	MaxFee           []string      `name:"submitter-max-fee" env:"PAYOUTD_SUBMITTER_MAX_FEE" placeholder:"CURRENCY=AMOUNT" help:"Most a batch of a currency may cost in fees; above it the batch is deferred. Repeat per currency."`
	DeferDelay       time.Duration `name:"submitter-defer-delay" env:"PAYOUTD_SUBMITTER_DEFER_DELAY" default:"1m" help:"First wait of a deferred batch; doubles per attempt."`
	MaxDeferDelay    time.Duration `name:"submitter-max-defer-delay" env:"PAYOUTD_SUBMITTER_MAX_DEFER_DELAY" default:"30m" help:"Longest wait of a deferred batch."`
	RetryDelay       time.Duration `name:"submitter-retry-delay" env:"PAYOUTD_SUBMITTER_RETRY_DELAY" default:"30s" help:"Cap of the wait between tries of a call Calypso failed retryably."`

	TrackerPollAfter   time.Duration `name:"tracker-poll-after" env:"PAYOUTD_TRACKER_POLL_AFTER" default:"2m" help:"Poll Calypso for a payout silent this long (webhooks get lost)."`
	TrackerWorkers     int           `name:"tracker-workers" env:"PAYOUTD_TRACKER_WORKERS" default:"4" help:"Payouts the tracker handles at once."`
	TrackerCallTimeout time.Duration `name:"tracker-call-timeout" env:"PAYOUTD_TRACKER_CALL_TIMEOUT" default:"30s" help:"Bound of the Calypso calls for one payout."`

	IngressAddr       string        `name:"ingress-addr" env:"PAYOUTD_INGRESS_ADDR" default:":8080" help:"Listen address of the webhook endpoint (POST /webhooks/calypso)."`
	IngressAckTimeout time.Duration `name:"ingress-ack-timeout" env:"PAYOUTD_INGRESS_ACK_TIMEOUT" default:"5s" help:"How long a webhook waits for Kafka's acknowledgement before 503."`
	OpsAddr           string        `name:"ops-addr" env:"PAYOUTD_OPS_ADDR" default:":9464" help:"Listen address of /metrics, /healthz and /readyz."`
	ShutdownTimeout   time.Duration `name:"shutdown-timeout" env:"PAYOUTD_SHUTDOWN_TIMEOUT" default:"30s" help:"On SIGINT/SIGTERM, how long to finish webhooks in flight, close windows and end transactions."`

	// Resolved by validate.
	accounts []accountSpec
	keys     calypso.WebhookKeys
	maxFee   map[string]calypso.Amount
	// currencies are the defaults with --batcher-max-amount applied.
	currencies map[string]calypso.CurrencyRule
}

func (r *runCmd) has(c string) bool { return slices.Contains(r.Components, c) }

func (r *runCmd) validate(p *problems) {
	r.kafkaFlags.validate(p)
	r.topicFlags.validate(p)
	r.logFlags.validate(p)
	const comps = "--components (PAYOUTD_COMPONENTS)"
	r.Components = nonEmpty(r.Components)
	if len(r.Components) == 0 {
		p.add(comps, "select at least one of %s", strings.Join(allComponents, ", "))
	}
	for _, c := range r.Components {
		if !slices.Contains(allComponents, c) {
			p.add(comps, "unknown component %q (want %s)", c, strings.Join(allComponents, ", "))
		}
	}
	r.validateCalypso(p)
	r.validateWebhookKeys(p)

	r.validateRanges(p)
	r.currencies = calypso.DefaultCurrencies()
	for _, ma := range r.MaxAmount {
		cur, amt, ok := strings.Cut(ma, "=")
		rule, known := r.currencies[cur]
		a, err := calypso.ParseAmount(amt)
		switch {
		case !ok || err != nil || a.Sign() <= 0:
			p.add("--batcher-max-amount (PAYOUTD_BATCHER_MAX_AMOUNT)", "%q is not CURRENCY=AMOUNT with a positive decimal amount", ma)
		case !known:
			p.add("--batcher-max-amount (PAYOUTD_BATCHER_MAX_AMOUNT)", "currency %q is not one payoutd knows", cur)
		default:
			rule.Max = a
			r.currencies[cur] = rule
		}
	}
	r.maxFee = map[string]calypso.Amount{}
	for _, mf := range r.MaxFee {
		cur, amt, ok := strings.Cut(mf, "=")
		a, err := calypso.ParseAmount(amt)
		if !ok || cur == "" || err != nil || a.Sign() < 0 {
			p.add("--submitter-max-fee (PAYOUTD_SUBMITTER_MAX_FEE)", "%q is not CURRENCY=AMOUNT with a non-negative decimal amount", mf)
			continue
		}
		r.maxFee[cur] = a
	}
	if r.has("ingress") {
		checkAddr(p, "--ingress-addr (PAYOUTD_INGRESS_ADDR)", r.IngressAddr)
	}
	checkAddr(p, "--ops-addr (PAYOUTD_OPS_ADDR)", r.OpsAddr)
}

// validateRanges holds every numeric and duration setting to a sane range:
// a value outside it is a mistake (100 years of dedup horizon wrapped the
// cut-off and emptied the index on every restart), so start-up refuses it
// and names the setting.
func (r *runCmd) validateRanges(p *problems) {
	const year = 365 * 24 * time.Hour
	for _, d := range []struct {
		name     string
		v        time.Duration
		min, max time.Duration
	}{
		{"--calypso-timeout (PAYOUTD_CALYPSO_TIMEOUT)", r.CalypsoTimeout, 100 * time.Millisecond, 10 * time.Minute},
		{"--batcher-max-wait (PAYOUTD_BATCHER_MAX_WAIT)", r.BatcherMaxWait, 10 * time.Millisecond, 10 * time.Minute},
		{"--dedup-horizon (PAYOUTD_DEDUP_HORIZON)", r.DedupHorizon, time.Hour, 5 * year},
		{"--batcher-execution-horizon (PAYOUTD_BATCHER_EXECUTION_HORIZON)", r.ExecutionHorizon, time.Hour, 10 * year},
		{"--batcher-rebuild-wait (PAYOUTD_BATCHER_REBUILD_WAIT)", r.RebuildWait, time.Second, time.Hour},
		{"--submitter-defer-delay (PAYOUTD_SUBMITTER_DEFER_DELAY)", r.DeferDelay, 100 * time.Millisecond, 24 * time.Hour},
		{"--submitter-max-defer-delay (PAYOUTD_SUBMITTER_MAX_DEFER_DELAY)", r.MaxDeferDelay, 100 * time.Millisecond, 7 * 24 * time.Hour},
		{"--submitter-retry-delay (PAYOUTD_SUBMITTER_RETRY_DELAY)", r.RetryDelay, 10 * time.Millisecond, time.Hour},
		{"--tracker-poll-after (PAYOUTD_TRACKER_POLL_AFTER)", r.TrackerPollAfter, 100 * time.Millisecond, 7 * 24 * time.Hour},
		{"--tracker-call-timeout (PAYOUTD_TRACKER_CALL_TIMEOUT)", r.TrackerCallTimeout, 100 * time.Millisecond, 10 * time.Minute},
		{"--ingress-ack-timeout (PAYOUTD_INGRESS_ACK_TIMEOUT)", r.IngressAckTimeout, 10 * time.Millisecond, 5 * time.Minute},
		{"--shutdown-timeout (PAYOUTD_SHUTDOWN_TIMEOUT)", r.ShutdownTimeout, time.Second, time.Hour},
	} {
		if d.v < d.min || d.v > d.max {
			p.add(d.name, "must be between %s and %s, got %s", d.min, d.max, d.v)
		}
	}
	if r.MaxDeferDelay > 0 && r.DeferDelay > r.MaxDeferDelay {
		p.add("--submitter-max-defer-delay (PAYOUTD_SUBMITTER_MAX_DEFER_DELAY)", "must not be below --submitter-defer-delay")
	}
	for _, n := range []struct {
		name     string
		v        int
		min, max int
	}{
		{"--batcher-max-records (PAYOUTD_BATCHER_MAX_RECORDS)", r.BatcherMaxRecords, 1, 1_000_000},
		{"--batcher-max-bytes (PAYOUTD_BATCHER_MAX_BYTES)", r.BatcherMaxBytes, 64 << 10, 1 << 30},
		// A DLQ copy is the record plus headers, and must fit Kafka's record limit.
		{"--batcher-max-record-bytes (PAYOUTD_BATCHER_MAX_RECORD_BYTES)", r.MaxRecordBytes, 1 << 10, events.MaxMessageBytes / 2},
		{"--tracker-workers (PAYOUTD_TRACKER_WORKERS)", r.TrackerWorkers, 1, 1024},
		{"--calypso-max-attempts (PAYOUTD_CALYPSO_MAX_ATTEMPTS)", r.CalypsoMaxAttempts, 1, 100},
	} {
		if n.v < n.min || n.v > n.max {
			p.add(n.name, "must be between %d and %d, got %d", n.min, n.max, n.v)
		}
	}
	if rl := r.CalypsoRateLimit; math.IsNaN(rl) || rl == 0 || rl > 10_000 {
		p.add("--calypso-rate-limit (PAYOUTD_CALYPSO_RATE_LIMIT)", "must be above 0 and at most 10000 requests per second, or negative for unlimited, got %v", rl)
	}
}

func (r *runCmd) validateCalypso(p *problems) {
	const urlFlag = "--calypso-url (PAYOUTD_CALYPSO_URL)"
	const accFlag = "--calypso-account (PAYOUTD_CALYPSO_ACCOUNTS)"
	needsCalypso := r.has("submitter") || r.has("tracker")
	if r.CalypsoURL == "" {
		if needsCalypso {
			p.add(urlFlag, "is required for the submitter and tracker (no default, so production is never reached by accident)")
		}
	} else if u, err := url.Parse(r.CalypsoURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.add(urlFlag, "must be an absolute http(s) URL, got %q", r.CalypsoURL)
	}
	specs := nonEmpty(r.CalypsoAccounts)
	if r.CalypsoAccountsFile != "" {
		lines, err := readLines(r.CalypsoAccountsFile)
		if err != nil {
			p.add("--calypso-accounts-file (PAYOUTD_CALYPSO_ACCOUNTS_FILE)", "cannot read %s: %v", r.CalypsoAccountsFile, err)
		}
		specs = append(specs, lines...)
	}
	seen := map[string]bool{}
	for _, s := range specs {
		a, err := parseAccount(s)
		if err != nil {
			p.add(accFlag, "%v", err)
			continue
		}
		if seen[a.ID] {
			p.add(accFlag, "account %q is configured twice", a.ID)
		}
		seen[a.ID] = true
		r.accounts = append(r.accounts, a)
	}
	if needsCalypso && len(specs) == 0 {
		p.add(accFlag, "at least one account is required for the submitter and tracker (or --calypso-accounts-file)")
	}
}

func (r *runCmd) validateWebhookKeys(p *problems) {
	const keyFlag = "--webhook-key (PAYOUTD_WEBHOOK_KEYS)"
	specs := nonEmpty(r.WebhookKeys)
	if r.WebhookKeysFile != "" {
		lines, err := readLines(r.WebhookKeysFile)
		if err != nil {
			p.add("--webhook-keys-file (PAYOUTD_WEBHOOK_KEYS_FILE)", "cannot read %s: %v", r.WebhookKeysFile, err)
		}
		specs = append(specs, lines...)
	}
	r.keys = calypso.WebhookKeys{}
	for _, s := range specs {
		k, v, err := parseWebhookKey(s)
		if err != nil {
			p.add(keyFlag, "%v", err)
			continue
		}
		r.keys[k] = v
	}
	if r.has("ingress") && len(specs) == 0 {
		p.add(keyFlag, "at least one key pair is required for the ingress (or --webhook-keys-file)")
	}
}

func checkAddr(p *problems, setting, addr string) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		p.add(setting, "%q is not host:port: %v", addr, err)
	}
}

func (r *runCmd) run(ctx context.Context, out io.Writer) error {
	log := r.logFlags.logger()
	slog.SetDefault(log)
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown"
	}
	m := newMetrics()
	kopts, err := r.kafkaFlags.clientOpts(log, newKafkaMetrics(m.reg))
	if err != nil {
		return err
	}
	adm, err := newAdmin(kopts)
	if err != nil {
		return err
	}
	defer adm.Close()

	accounts := pipeline.Accounts{}
	var ids []string
	for _, a := range r.accounts {
		cl, err := calypso.NewClient(calypso.Config{
			BaseURL: r.CalypsoURL, Account: a.ID, APIKey: a.Key, APISecret: a.Secret,
			Timeout: r.CalypsoTimeout, RateLimit: r.CalypsoRateLimit, Retry: calypso.RetryPolicy{MaxAttempts: r.CalypsoMaxAttempts},
		}, calypso.WithLogger(log.With("component", "calypso", "account", a.ID)), calypso.WithObserver(m.observeCalypso))
		if err != nil {
			return fmt.Errorf("calypso account %s: %w", a.ID, err)
		}
		accounts[a.ID] = cl
		ids = append(ids, a.ID)
	}
	batcherAccounts := nonEmpty(r.BatcherAccounts)
	if len(batcherAccounts) == 0 {
		batcherAccounts = ids
	}
	orDefault := func(v, def string) string {
		if v != "" {
			return v
		}
		return def
	}
	batcherTxnID := orDefault(r.BatcherTxnID, r.BatcherGroup+"-"+host)
	submitterTxnID := orDefault(r.SubmitterTxnID, r.SubmitterGroup+"-"+host)
	var batcherInstance, submitterInstance string
	if r.StaticMembership {
		batcherInstance, submitterInstance = batcherTxnID, submitterTxnID
	}
	st, err := buildStack(stackConfig{
		components: r.Components, topics: r.topicFlags.topics(), kafka: kopts, accounts: accounts, log: log, metrics: m,
		batcher: pipeline.BatcherConfig{
			Group: r.BatcherGroup, TransactionalID: batcherTxnID, InstanceID: batcherInstance,
			MaxWait: r.BatcherMaxWait, MaxRecords: r.BatcherMaxRecords, MaxBytes: r.BatcherMaxBytes,
			MaxRecordBytes: r.MaxRecordBytes, DedupHorizon: r.DedupHorizon, Accounts: batcherAccounts,
			ExecutionHorizon: r.ExecutionHorizon, RebuildWait: r.RebuildWait, Currencies: r.currencies,
		},
		submitter: pipeline.SubmitterConfig{
			Group: r.SubmitterGroup, TransactionalID: submitterTxnID, InstanceID: submitterInstance,
			CheckBalance: r.CheckBalance, PrecalculateFees: r.PrecalculateFees, MaxFee: r.maxFee,
			DeferDelay: r.DeferDelay, MaxDeferDelay: r.MaxDeferDelay, RetryDelay: r.RetryDelay,
		},
		ingress: pipeline.IngressConfig{
			Keys: r.keys, AckTimeout: r.IngressAckTimeout, TransactionalID: orDefault(r.IngressTxnID, "payoutd-ingress-"+host),
		},
		ingressAddr: r.IngressAddr,
		tracker: pipeline.TrackerConfig{
			TransactionalID: r.TrackerTxnID, PollAfter: r.TrackerPollAfter, Workers: r.TrackerWorkers, CallTimeout: r.TrackerCallTimeout,
		},
	})
	if err != nil {
		return err
	}
	groups := []string{}
	if r.has("batcher") {
		groups = append(groups, r.BatcherGroup)
	}
	if r.has("submitter") {
		groups = append(groups, r.SubmitterGroup)
	}
	if len(groups) > 0 {
		m.reg.MustRegister(newLagCollector(adm, groups...))
	}
	ops, err := newOpsServer(r.OpsAddr, m, adm, st.ready, log)
	if err != nil {
		if st.ingressLn != nil {
			st.ingressLn.Close()
		}
		return err
	}
	ops.serve(log)
	defer ops.close()

	st.start()
	log.Info("payoutd running", "components", strings.Join(r.Components, ","), "ops", ops.url(),
		"brokers", strings.Join(r.Brokers, ","), "calypso", r.CalypsoURL, "accounts", strings.Join(ids, ","))
	var cause error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", r.ShutdownTimeout)
	case cause = <-st.exited:
		log.Error("a component stopped; shutting down", "error", cause)
	}
	if err := st.stop(r.ShutdownTimeout); err != nil {
		log.Error("shutdown incomplete", "error", err)
		return err
	}
	log.Info("stopped cleanly")
	if cause != nil {
		return cause
	}
	_ = out
	return nil
}

// stackConfig is what buildStack needs; dev and run fill it differently.
type stackConfig struct {
	components  []string
	topics      events.Topics
	kafka       []kgo.Opt
	accounts    pipeline.Accounts
	log         *slog.Logger
	metrics     *metrics
	batcher     pipeline.BatcherConfig
	submitter   pipeline.SubmitterConfig
	ingress     pipeline.IngressConfig
	ingressAddr string
	tracker     pipeline.TrackerConfig
}
