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
	"golang.org/x/time/rate"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/tracing"
	"github.com/payoutd/payoutd/pipeline"
)

var allComponents = []string{"batcher", "submitter", "ingress", "tracker"}

// runCmd is production: real Kafka, real Calypso, the selected components.
type runCmd struct {
	Components []string `name:"components" env:"PAYOUTD_COMPONENTS" default:"batcher,submitter,ingress,tracker" help:"Components to run, comma-separated: batcher, submitter, ingress, tracker. Each scales on its own."`
	Check      bool     `name:"check" env:"PAYOUTD_CHECK" help:"Check, change nothing and exit: the configuration, Kafka (the components' topics exist, co-partitioning, drift) and Calypso read-only (each account). One line per check; exit 0 all ok, 1 a check failed, 2 bad configuration."`

	kafkaFlags `embed:""`
	topicFlags `embed:""`
	logFlags   `embed:""`

	CalypsoURL          string        `name:"calypso-url" env:"PAYOUTD_CALYPSO_URL" help:"Calypso API base URL, e.g. https://api.calypso.finance. Required for submitter and tracker; there is no default, so production is never reached by accident."`
	CalypsoAccounts     []string      `name:"calypso-account" env:"PAYOUTD_CALYPSO_ACCOUNTS" sep:";" placeholder:"id=ID,key=KEY,secret=SECRET" help:"A Calypso merchant account: id=…,key=…,secret=… or secret-file=PATH. Repeat the flag, or separate accounts with ';' in the variable."`
	CalypsoAccountsFile string        `name:"calypso-accounts-file" env:"PAYOUTD_CALYPSO_ACCOUNTS_FILE" placeholder:"PATH" help:"File with one account per line, same syntax as --calypso-account ('#' comments)."`
	CalypsoInsecureHTTP bool          `name:"calypso-insecure-http" env:"PAYOUTD_CALYPSO_INSECURE_HTTP" help:"Allow a plain http:// --calypso-url to a host other than loopback (a sandbox on a private network); never for the real Calypso."`
	CalypsoTimeout      time.Duration `name:"calypso-timeout" env:"PAYOUTD_CALYPSO_TIMEOUT" default:"30s" help:"Timeout of one Calypso HTTP attempt."`
	CalypsoRateLimit    float64       `name:"calypso-rate-limit" env:"PAYOUTD_CALYPSO_RATE_LIMIT" default:"5" help:"Requests per second per account towards Calypso (negative: unlimited)."`
	CalypsoMaxAttempts  int           `name:"calypso-max-attempts" env:"PAYOUTD_CALYPSO_MAX_ATTEMPTS" default:"4" help:"Tries of one Calypso call on retryable errors, the first included."`

	WebhookKeys     []string `name:"webhook-key" env:"PAYOUTD_WEBHOOK_KEYS" placeholder:"PUBLIC=SECRET" help:"A webhook subscription key pair PUBLIC=SECRET; repeat (or comma-separate) to rotate keys. Required for ingress."`
	WebhookKeysFile string   `name:"webhook-keys-file" env:"PAYOUTD_WEBHOOK_KEYS_FILE" placeholder:"PATH" help:"File with one PUBLIC=SECRET pair per line."`

	BatcherGroup      string        `name:"batcher-group" env:"PAYOUTD_BATCHER_GROUP" default:"payoutd-batcher" help:"Consumer group of the batcher."`
	SubmitterGroup    string        `name:"submitter-group" env:"PAYOUTD_SUBMITTER_GROUP" default:"payoutd-submitter" help:"Consumer group of the submitter."`
	InstanceID        string        `name:"instance-id" env:"PAYOUTD_INSTANCE_ID" help:"This process's stable name among its peers; the batcher's, submitter's and tracker's transactional and static member ids are GROUP-INSTANCE. Default: a StatefulSet pod's hostname (name-ORDINAL), else hostname-PID (unique on a host; stable only where the PID is, e.g. a container's PID 1). Unique per process."`
	InstanceIDWait    time.Duration `name:"instance-id-wait" env:"PAYOUTD_INSTANCE_ID_WAIT" default:"50s" help:"At start, how long a member holding one of this process's ids from another address may take to go (a predecessor's session expiring) before the start fails as a collision."`
	BatcherTxnID      string        `name:"batcher-transactional-id" env:"PAYOUTD_BATCHER_TRANSACTIONAL_ID" help:"Transactional id of the batcher (default: batcher-group-INSTANCE, see --instance-id). Unique per process."`
	SubmitterTxnID    string        `name:"submitter-transactional-id" env:"PAYOUTD_SUBMITTER_TRANSACTIONAL_ID" help:"Transactional id of the submitter (default: submitter-group-INSTANCE). Unique per process."`
	IngressTxnID      string        `name:"ingress-transactional-id" env:"PAYOUTD_INGRESS_TRANSACTIONAL_ID" hidden:"" help:"Ignored: the ingress writes with an idempotent, non-transactional producer."`
	StaticMembership  bool          `name:"static-membership" env:"PAYOUTD_STATIC_MEMBERSHIP" default:"true" negatable:"" help:"Join the batcher, submitter and tracker groups as static members named by their transactional ids, so a restarted instance gets its partitions back at once instead of after the session timeout."`
	TrackerGroup      string        `name:"tracker-group" env:"PAYOUTD_TRACKER_GROUP" default:"payoutd-tracker" help:"Consumer group of the tracker on the outcomes topic."`
	TrackerTxnID      string        `name:"tracker-transactional-id" env:"PAYOUTD_TRACKER_TRANSACTIONAL_ID" help:"Transactional id of the tracker (default: tracker-group-INSTANCE). Unique per process."`
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
	RetryDelay       time.Duration `name:"submitter-retry-delay" env:"PAYOUTD_SUBMITTER_RETRY_DELAY" default:"30s" help:"Cap of the wait between tries of a call Calypso failed retryably (the lane's retry policy)."`

	SubmitterInFlight        int           `name:"submitter-in-flight" env:"PAYOUTD_SUBMITTER_IN_FLIGHT" default:"4" help:"Batches one account's lane works on at once (1-64). The account's rate limit (--calypso-rate-limit) still paces its calls."`
	SubmitterLookupGrace     time.Duration `name:"submitter-lookup-grace" env:"PAYOUTD_SUBMITTER_LOOKUP_GRACE" default:"1m" help:"How long a batch whose create may have reached Calypso is looked up by idempotency key (004, still being created) before it is parked as undecided (1s-1h)."`
	SubmitterRetryAttempts   int           `name:"submitter-retry-attempts" env:"PAYOUTD_SUBMITTER_RETRY_ATTEMPTS" default:"6" help:"Tries of one Calypso call in a lane's retry policy, the first included (1-100)."`
	SubmitterRetryInitial    time.Duration `name:"submitter-retry-initial" env:"PAYOUTD_SUBMITTER_RETRY_INITIAL" default:"200ms" help:"First wait of a lane's retry policy; doubles up to --submitter-retry-delay."`
	SubmitterRetryMaxElapsed time.Duration `name:"submitter-retry-max-elapsed" env:"PAYOUTD_SUBMITTER_RETRY_MAX_ELAPSED" default:"2m" help:"Longest a lane retries one call; then the batch is looked up, parked as undecided or deferred (CALYPSO_UNAVAILABLE), and a lane failing this long parks its batches (1s-1h)."`
	SubmitterMaxPending      int           `name:"submitter-max-pending" env:"PAYOUTD_SUBMITTER_MAX_PENDING" default:"4096" help:"Most batches in lanes awaiting an outcome; above it the submitter stops fetching (1-1000000)."`

	TrackerPollAfter   time.Duration `name:"tracker-poll-after" env:"PAYOUTD_TRACKER_POLL_AFTER" default:"2m" help:"Poll Calypso for a payout silent this long (webhooks get lost)."`
	TrackerWorkers     int           `name:"tracker-workers" env:"PAYOUTD_TRACKER_WORKERS" default:"4" help:"Payouts the tracker handles at once."`
	TrackerCallTimeout time.Duration `name:"tracker-call-timeout" env:"PAYOUTD_TRACKER_CALL_TIMEOUT" default:"30s" help:"Bound of one Calypso call of the tracker (a withdrawal list is read a page per call)."`
	TrackerMaxPoll     time.Duration `name:"tracker-max-poll-interval" env:"PAYOUTD_TRACKER_MAX_POLL_INTERVAL" default:"1h" help:"Longest wait between polls of a payout silent on purpose (the wait doubles from --tracker-poll-after while polls find nothing new)."`
	TrackerMatchWait   time.Duration `name:"tracker-match-wait" env:"PAYOUTD_TRACKER_MATCH_WAIT" default:"30m" help:"How long statuses of a payout wait for its PayoutSubmitted before it is taken as foreign (alert FOREIGN_PAYOUT) and no longer tracked."`

	IngressAddr       string        `name:"ingress-addr" env:"PAYOUTD_INGRESS_ADDR" default:":8080" help:"Listen address of the webhook endpoint (POST /webhooks/calypso)."`
	IngressAckTimeout time.Duration `name:"ingress-ack-timeout" env:"PAYOUTD_INGRESS_ACK_TIMEOUT" default:"5s" help:"How long a webhook waits for Kafka's acknowledgement before 503."`
	IngressMaxBody    int64         `name:"ingress-max-body" env:"PAYOUTD_INGRESS_MAX_BODY" default:"262144" help:"Largest webhook body read, in bytes; larger is 413 (webhooks are about 1 KB). At most 995904, below the producer's record limit."`
	IngressMaxConc    int           `name:"ingress-max-concurrent" env:"PAYOUTD_INGRESS_MAX_CONCURRENT" default:"512" help:"Webhook requests handled at once; beyond it 503 at once (Calypso retries)."`
	IngressDedup      time.Duration `name:"ingress-dedup-window" env:"PAYOUTD_INGRESS_DEDUP_WINDOW" default:"92h" help:"How long an archived webhook body is remembered; a repeat within it is answered 200 and not archived again. Keep it above Calypso's retry span (about 91h)."`
	OpsAddr           string        `name:"ops-addr" env:"PAYOUTD_OPS_ADDR" default:"127.0.0.1:9464" help:"Listen address of /metrics, /healthz and /readyz. Loopback by default; set e.g. :9464 to let a scraper in."`
	ShutdownTimeout   time.Duration `name:"shutdown-timeout" env:"PAYOUTD_SHUTDOWN_TIMEOUT" default:"30s" help:"On SIGINT/SIGTERM, how long to finish webhooks in flight, close windows and end transactions."`

	// Resolved by validate.
	inlineSecrets []string // settings whose secrets were given inline, to warn about
	accounts      []accountSpec
	keys          calypso.WebhookKeys
	maxFee        map[string]calypso.Amount
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
	r.validateSubmitter(p)
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
	if limit := int64(pipeline.MaxRecordBytes - 4<<10); r.IngressMaxBody <= 0 || r.IngressMaxBody > limit {
		p.add("--ingress-max-body (PAYOUTD_INGRESS_MAX_BODY)", "must be between 1 and %d bytes (below the producer's record limit), got %d", limit, r.IngressMaxBody)
	}
	checkAddr(p, "--ops-addr (PAYOUTD_OPS_ADDR)", r.OpsAddr)
}

// validateSubmitter checks the lanes' settings against their ranges.
func (r *runCmd) validateSubmitter(p *problems) {
	for name, v := range map[string]struct{ n, lo, hi int }{
		"--submitter-in-flight (PAYOUTD_SUBMITTER_IN_FLIGHT)":           {r.SubmitterInFlight, 1, 64},
		"--submitter-retry-attempts (PAYOUTD_SUBMITTER_RETRY_ATTEMPTS)": {r.SubmitterRetryAttempts, 1, 100},
		"--submitter-max-pending (PAYOUTD_SUBMITTER_MAX_PENDING)":       {r.SubmitterMaxPending, 1, 1_000_000},
	} {
		if v.n < v.lo || v.n > v.hi {
			p.add(name, "must be in %d..%d, got %d", v.lo, v.hi, v.n)
		}
	}
	for name, v := range map[string]struct{ d, lo, hi time.Duration }{
		"--submitter-lookup-grace (PAYOUTD_SUBMITTER_LOOKUP_GRACE)":           {r.SubmitterLookupGrace, time.Second, time.Hour},
		"--submitter-retry-initial (PAYOUTD_SUBMITTER_RETRY_INITIAL)":         {r.SubmitterRetryInitial, time.Millisecond, time.Minute},
		"--submitter-retry-max-elapsed (PAYOUTD_SUBMITTER_RETRY_MAX_ELAPSED)": {r.SubmitterRetryMaxElapsed, time.Second, time.Hour},
	} {
		if v.d < v.lo || v.d > v.hi {
			p.add(name, "must be in %s..%s, got %s", v.lo, v.hi, v.d)
		}
	}
}

// accountLimiters is the process's one rate limiter per account, shared by
// the submitter's lanes and the tracker's calls.
func (r *runCmd) accountLimiters() map[string]*rate.Limiter {
	limit := rate.Limit(r.CalypsoRateLimit)
	if r.CalypsoRateLimit < 0 {
		limit = rate.Inf
	}
	out := map[string]*rate.Limiter{}
	for _, a := range r.accounts {
		out[a.ID] = rate.NewLimiter(limit, 1)
	}
	return out
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
		{"--tracker-max-poll-interval (PAYOUTD_TRACKER_MAX_POLL_INTERVAL)", r.TrackerMaxPoll, 100 * time.Millisecond, 7 * 24 * time.Hour},
		{"--tracker-match-wait (PAYOUTD_TRACKER_MATCH_WAIT)", r.TrackerMatchWait, time.Second, 30 * 24 * time.Hour},
		{"--ingress-dedup-window (PAYOUTD_INGRESS_DEDUP_WINDOW)", r.IngressDedup, time.Minute, 30 * 24 * time.Hour},
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
		{"--ingress-max-concurrent (PAYOUTD_INGRESS_MAX_CONCURRENT)", r.IngressMaxConc, 1, 100_000},
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
		p.add(urlFlag, "must be an absolute http(s) URL")
	} else if u.Scheme == "http" && !isLoopbackHost(u.Hostname()) && !r.CalypsoInsecureHTTP {
		p.add(urlFlag, "is plain http:// to %s: payouts and their signatures would cross the network unencrypted; use https://, or --calypso-insecure-http (PAYOUTD_CALYPSO_INSECURE_HTTP) for a sandbox", u.Host)
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
	for _, s := range nonEmpty(r.CalypsoAccounts) {
		if strings.Contains(s, "secret=") {
			r.inlineSecrets = append(r.inlineSecrets, accFlag+" secret=")
			break
		}
	}
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
	if len(nonEmpty(r.WebhookKeys)) > 0 {
		r.inlineSecrets = append(r.inlineSecrets, keyFlag)
	}
	r.keys = calypso.WebhookKeys{}
	for _, s := range specs {
		k, v, err := parseWebhookKey(s)
		if err != nil {
			p.add(keyFlag, "%v", err)
			continue
		}
		if _, dup := r.keys[k]; dup {
			p.add(keyFlag, "public key %q is configured twice (one secret would silently replace the other)", k)
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
	if r.Check {
		return r.check(ctx, out)
	}
	log := r.logFlags.logger()
	slog.SetDefault(log)
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown"
	}
	if r.kafkaFlags.inlinePassword {
		r.inlineSecrets = append(r.inlineSecrets, "--kafka-sasl-password (PAYOUTD_KAFKA_SASL_PASSWORD)")
	}
	for _, setting := range r.inlineSecrets {
		log.Warn("a secret is given inline; prefer its file setting (an inline secret shows in the process list, shell history and container specs)",
			"setting", setting)
	}
	m := newMetrics()
	tr, stopTracing, err := startTracing(ctx, log)
	if err != nil {
		return err
	}
	defer stopTracing()
	kopts, err := r.kafkaFlags.clientOpts(log, append([]kgo.Hook{newKafkaMetrics(m.reg)}, tr.KafkaHooks()...)...)
	if err != nil {
		return err
	}
	adm, err := newAdmin(kopts)
	if err != nil {
		return err
	}
	defer adm.Close()
	if err := checkKafkaAccess(ctx, adm, log, 20*time.Second); err != nil {
		return err
	}

	// One limiter per account for the whole process. The tracker's clients
	// wait on it and retry on their own; the submitter's clients make one
	// attempt per call, because its lanes wait on the same limiter and own
	// the one retry policy.
	limiters := r.accountLimiters()
	accounts, submitterAccounts := pipeline.Accounts{}, pipeline.Accounts{}
	var ids []string
	for _, a := range r.accounts {
		cfg := calypso.Config{
			BaseURL: r.CalypsoURL, Account: a.ID, APIKey: a.Key, APISecret: a.Secret,
			Timeout: r.CalypsoTimeout, Retry: calypso.RetryPolicy{MaxAttempts: r.CalypsoMaxAttempts},
		}
		opts := []calypso.Option{calypso.WithLogger(log.With("component", "calypso", "account", a.ID)), calypso.WithObserver(m.observeCalypso),
			calypso.WithHTTPClient(tr.HTTPClient())}
		cl, err := calypso.NewClient(cfg, append(opts, calypso.WithLimiter(limiters[a.ID]))...)
		if err != nil {
			return fmt.Errorf("calypso account %s: %w", a.ID, err)
		}
		cfg.Retry.MaxAttempts = 1
		sub, err := calypso.NewClient(cfg, append(opts, calypso.WithLimiter(nil))...)
		if err != nil {
			return fmt.Errorf("calypso account %s: %w", a.ID, err)
		}
		accounts[a.ID], submitterAccounts[a.ID] = cl, sub
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
	instance := instanceName(r.InstanceID, host, os.Getpid(), inKubernetes())
	batcherTxnID := orDefault(r.BatcherTxnID, r.BatcherGroup+"-"+instance)
	submitterTxnID := orDefault(r.SubmitterTxnID, r.SubmitterGroup+"-"+instance)
	trackerTxnID := orDefault(r.TrackerTxnID, r.TrackerGroup+"-"+instance)
	var batcherInstance, submitterInstance, trackerInstance string
	if r.StaticMembership {
		batcherInstance, submitterInstance, trackerInstance = batcherTxnID, submitterTxnID, trackerTxnID
		held := map[string]string{}
		if r.has("batcher") {
			held[r.BatcherGroup] = batcherInstance
		}
		if r.has("submitter") {
			held[r.SubmitterGroup] = submitterInstance
		}
		if r.has("tracker") {
			held[r.TrackerGroup] = trackerInstance
		}
		if err := checkInstanceIDs(ctx, adm, log, held, ownAddress, r.InstanceIDWait); err != nil {
			return err
		}
	}
	log.Info("instance ids", "instance", instance, "batcher", batcherTxnID, "submitter", submitterTxnID, "tracker", trackerTxnID)
	st, err := buildStack(stackConfig{
		components: r.Components, topics: r.topicFlags.topics(), kafka: kopts, accounts: accounts, log: log, metrics: m,
		submitterAccounts: submitterAccounts, health: pipeline.NewHealth(), tracing: tr,
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
			Limiters: limiters, InFlight: r.SubmitterInFlight, LookupGrace: r.SubmitterLookupGrace, MaxPending: r.SubmitterMaxPending,
			Retry: pipeline.RetryPolicy{MaxAttempts: r.SubmitterRetryAttempts, InitialInterval: r.SubmitterRetryInitial,
				MaxInterval: r.RetryDelay, MaxElapsed: r.SubmitterRetryMaxElapsed},
		},
		ingress: pipeline.IngressConfig{
			Keys: r.keys, AckTimeout: r.IngressAckTimeout, MaxBody: r.IngressMaxBody, MaxConcurrent: r.IngressMaxConc,
			DedupWindow: r.IngressDedup,
		},
		ingressAddr: r.IngressAddr,
		tracker: pipeline.TrackerConfig{
			Group: r.TrackerGroup, TransactionalID: trackerTxnID, InstanceID: trackerInstance,
			PollAfter: r.TrackerPollAfter, MaxPollInterval: r.TrackerMaxPoll, MatchWait: r.TrackerMatchWait,
			Workers: r.TrackerWorkers, CallTimeout: r.TrackerCallTimeout,
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
	if r.has("tracker") {
		groups = append(groups, r.TrackerGroup)
	}
	if len(groups) > 0 {
		m.reg.MustRegister(newLagCollector(newLagReader(adm, kopts), groups...))
	}
	ops, err := newOpsServer(r.OpsAddr, m, st.health, st.ready, log)
	if err == nil {
		err = mountConsole(ops.mux, consoleSpec{kafka: kopts, adm: adm, topics: r.topicFlags.topics(),
			groups: groups, health: st.health, log: log})
	}
	if err != nil {
		if st.ingressLn != nil {
			st.ingressLn.Close()
		}
		return err
	}
	ops.serve(log)
	defer ops.close()

	st.start()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go r.watchTopics(watchCtx, adm, log, st.health)
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
	components []string
	topics     events.Topics
	kafka      []kgo.Opt
	accounts   pipeline.Accounts
	// submitterAccounts are the submitter's own clients (one attempt per
	// call, no limiter of their own); nil: accounts.
	submitterAccounts pipeline.Accounts
	// health collects the components' readiness for /readyz; nil: none.
	health      *pipeline.Health
	log         *slog.Logger
	metrics     *metrics
	batcher     pipeline.BatcherConfig
	submitter   pipeline.SubmitterConfig
	ingress     pipeline.IngressConfig
	ingressAddr string
	tracker     pipeline.TrackerConfig
	// tracing gives the components their tracer and wraps the ingress's
	// handler; nil: off.
	tracing *tracing.Tracing
}
