package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/calypso/sandbox"
	"github.com/payoutd/payoutd/pipeline"
)

// devCmd is payoutd for a first look: everything in one process, nothing
// to install. It shows the whole flow on sample intents, including the
// unhappy paths (invalid intents and duplicates to the DLQ, lost and
// repeated webhooks, failed and partial payouts).
type devCmd struct {
	Kafka       []string      `name:"kafka" env:"PAYOUTD_DEV_KAFKA" placeholder:"HOST:PORT" help:"Use this Kafka cluster (seed brokers) instead of the embedded one."`
	Intents     int           `name:"intents" env:"PAYOUTD_DEV_INTENTS" default:"300" help:"Send this many valid sample intents, stop when each reached a terminal outcome, print a final summary and exit (non-zero if some did not within --deadline)."`
	Forever     bool          `name:"forever" env:"PAYOUTD_DEV_FOREVER" help:"Keep sending sample intents until interrupted (ignores --intents)."`
	Rate        int           `name:"rate" env:"PAYOUTD_DEV_RATE" default:"100" help:"Sample intents per second."`
	Deadline    time.Duration `name:"deadline" env:"PAYOUTD_DEV_DEADLINE" default:"2m" help:"With --intents: how long every intent may take to reach a terminal outcome."`
	TimeScale   float64       `name:"time-scale" env:"PAYOUTD_DEV_TIME_SCALE" default:"0.001" help:"Sandbox time scale: 0.001 turns Calypso's seconds into milliseconds."`
	Failed      float64       `name:"failed" env:"PAYOUTD_DEV_FAILED" default:"0.03" help:"Share of payouts the sandbox fails."`
	Partial     float64       `name:"partial" env:"PAYOUTD_DEV_PARTIAL" default:"0.05" help:"Share of payouts the sandbox ends PARTIAL (one withdrawal fails)."`
	DropHooks   float64       `name:"drop-webhooks" env:"PAYOUTD_DEV_DROP_WEBHOOKS" default:"0.02" help:"Share of webhooks the sandbox never sends (the tracker's polling finds those states)."`
	DupHooks    float64       `name:"duplicate-webhooks" env:"PAYOUTD_DEV_DUPLICATE_WEBHOOKS" default:"0.05" help:"Share of webhooks the sandbox sends twice."`
	Partitions  int32         `name:"partitions" env:"PAYOUTD_DEV_PARTITIONS" default:"3" help:"Partitions of the topics dev creates."`
	GroupPrefix string        `name:"group-prefix" env:"PAYOUTD_DEV_GROUP_PREFIX" default:"payoutd-dev" help:"Prefix of consumer groups and transactional ids (to share a cluster)."`
	SandboxAddr string        `name:"sandbox-addr" env:"PAYOUTD_DEV_SANDBOX_ADDR" default:"127.0.0.1:0" help:"Listen address of the sandbox (port 0: any free port)."`
	IngressAddr string        `name:"ingress-addr" env:"PAYOUTD_DEV_INGRESS_ADDR" default:"127.0.0.1:0" help:"Listen address of the webhook ingress."`
	OpsAddr     string        `name:"ops-addr" env:"PAYOUTD_DEV_OPS_ADDR" default:"127.0.0.1:0" help:"Listen address of /metrics, /healthz, /readyz."`
	Summary     time.Duration `name:"summary-every" env:"PAYOUTD_DEV_SUMMARY_EVERY" default:"1s" help:"How often the live summary is printed (on a terminal it is redrawn in place; otherwise one line each time)."`
	Balance     string        `name:"balance" env:"PAYOUTD_DEV_BALANCE" default:"1000000000" help:"Sandbox balance of each sample account in each of its currencies. A small one shows what running out looks like: dev says so once, with how to top it up."`
	topicFlags  `embed:""`
	LogFormat   string `name:"log-format" env:"PAYOUTD_LOG_FORMAT" default:"text" help:"Log format: text or json."`
	LogLevel    string `name:"log-level" env:"PAYOUTD_LOG_LEVEL" default:"warn" help:"Log level (default warn, so the summary stays readable)."`
}

func (d *devCmd) validate(p *problems) {
	d.topicFlags.validate(p)
	logFlags{Format: d.LogFormat, Level: d.LogLevel}.validate(p)
	if !d.Forever && d.Intents <= 0 {
		p.add("--intents (PAYOUTD_DEV_INTENTS)", "must be positive (or use --forever), got %d", d.Intents)
	}
	if d.Rate <= 0 {
		p.add("--rate (PAYOUTD_DEV_RATE)", "must be positive, got %d", d.Rate)
	}
	positive(p, "--deadline (PAYOUTD_DEV_DEADLINE)", d.Deadline)
	positive(p, "--summary-every (PAYOUTD_DEV_SUMMARY_EVERY)", d.Summary)
	if d.TimeScale <= 0 {
		p.add("--time-scale (PAYOUTD_DEV_TIME_SCALE)", "must be positive, got %v", d.TimeScale)
	}
	faultFlags{Failed: d.Failed, Partial: d.Partial, DropWebhooks: d.DropHooks, DuplicateWebhooks: d.DupHooks}.validate(p)
	if a, err := calypso.ParseAmount(d.Balance); err != nil || a.Sign() < 0 {
		p.add("--balance (PAYOUTD_DEV_BALANCE)", "must be a decimal amount, 0 or more, got %q", d.Balance)
	}
	if d.Partitions <= 0 {
		p.add("--partitions (PAYOUTD_DEV_PARTITIONS)", "must be positive, got %d", d.Partitions)
	}
	for flag, addr := range map[string]string{"--sandbox-addr": d.SandboxAddr, "--ingress-addr": d.IngressAddr, "--ops-addr": d.OpsAddr} {
		checkAddr(p, flag, addr)
	}
}

// devAccounts are the sample merchant accounts, their currencies and
// sandbox balances (large: dev shows the flow, not deferrals).
var devAccounts = []struct {
	id         string
	currencies []string
}{
	{"acme-eu", []string{"USDT_TRX", "ETH"}},
	{"acme-us", []string{"BTC", "USDT"}},
}

const (
	devWebhookKey    = "dev-webhook-key"
	devWebhookSecret = calypso.Secret("dev-webhook-secret")
)

func (d *devCmd) run(ctx context.Context, out io.Writer) error {
	log := logFlags{Format: d.LogFormat, Level: d.LogLevel}.logger()
	slog.SetDefault(log)
	started := time.Now()
	runID := randomHex(4)

	// Kafka: embedded unless --kafka.
	seeds := nonEmpty(d.Kafka)
	kafkaKind := "real cluster"
	replication := int16(-1)
	if len(seeds) == 0 {
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return fmt.Errorf("starting the embedded Kafka: %w", err)
		}
		defer cluster.Close()
		seeds, kafkaKind, replication = cluster.ListenAddrs(), "embedded kfake", 1
	}
	m := newMetrics()
	tr, stopTracing, err := startTracing(ctx, log)
	if err != nil {
		return err
	}
	defer stopTracing()
	kf := kafkaFlags{Brokers: seeds, ClientID: "payoutd-dev"}
	kopts, err := kf.clientOpts(log, append([]kgo.Hook{newKafkaMetrics(m.reg)}, tr.KafkaHooks()...)...)
	if err != nil {
		return err
	}
	adm, err := newAdmin(kopts)
	if err != nil {
		return err
	}
	defer adm.Close()
	if err := pingKafka(ctx, adm, 15*time.Second); err != nil {
		return err
	}
	topics := d.topicFlags.topics()
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	_, err = topics.Ensure(tctx, adm, 0, d.Partitions, replication)
	cancel()
	if err != nil {
		return fmt.Errorf("creating topics: %w", err)
	}

	// The sandbox's port first: the Calypso clients need its URL.
	sbLn, err := net.Listen("tcp", d.SandboxAddr)
	if err != nil {
		return fmt.Errorf("sandbox listen: %w", err)
	}
	sbURL := "http://" + sbLn.Addr().String()
	sbCfg := sandbox.Config{Accounts: map[string]sandbox.Account{}, TimeScale: d.TimeScale,
		Faults: faultFlags{Seed: 1, Failed: d.Failed, Partial: d.Partial, DropWebhooks: d.DropHooks, DuplicateWebhooks: d.DupHooks}.faults(),
		Logger: log.With("component", "sandbox")}
	accounts := pipeline.Accounts{}
	var ids []string
	for _, a := range devAccounts {
		key, secret := "key-"+a.id, calypso.Secret("secret-"+a.id)
		bal := map[string]calypso.Amount{}
		for _, c := range a.currencies {
			bal[c] = calypso.MustParseAmount(d.Balance)
		}
		sbCfg.Accounts[a.id] = sandbox.Account{Name: a.id, APIKey: key, APISecret: secret, Balances: bal}
		cl, err := calypso.NewClient(calypso.Config{BaseURL: sbURL, Account: a.id, APIKey: key, APISecret: secret, RateLimit: -1,
			Retry: calypso.RetryPolicy{BaseDelay: 10 * time.Millisecond, MaxDelay: 200 * time.Millisecond}},
			calypso.WithLogger(log.With("component", "calypso", "account", a.id)), calypso.WithObserver(m.observeCalypso),
			calypso.WithHTTPClient(tr.HTTPClient()))
		if err != nil {
			sbLn.Close()
			return err
		}
		accounts[a.id] = cl
		ids = append(ids, a.id)
	}

	prefix := d.GroupPrefix
	st, err := buildStack(stackConfig{
		components: allComponents, topics: topics, kafka: kopts, accounts: accounts, log: withoutDeferralWarnings(log), metrics: m, tracing: tr,
		batcher: pipeline.BatcherConfig{Group: prefix + "-batcher", TransactionalID: prefix + "-batcher-" + runID,
			MaxWait: 300 * time.Millisecond, Accounts: ids},
		submitter: pipeline.SubmitterConfig{Group: prefix + "-submitter", TransactionalID: prefix + "-submitter-" + runID,
			CheckBalance: true, DeferDelay: time.Second, MaxDeferDelay: 5 * time.Second, RetryDelay: time.Second},
		ingress:     pipeline.IngressConfig{Keys: calypso.WebhookKeys{devWebhookKey: devWebhookSecret}},
		ingressAddr: d.IngressAddr,
		tracker:     pipeline.TrackerConfig{Group: prefix + "-tracker", TransactionalID: prefix + "-tracker-" + runID, PollAfter: time.Second, CallTimeout: 10 * time.Second},
	})
	if err != nil {
		sbLn.Close()
		return err
	}
	sbCfg.Webhook = sandbox.WebhookConfig{URL: webhookURL(st.ingressLn.Addr()), RequestID: "payoutd-dev",
		PublicKey: devWebhookKey, Secret: devWebhookSecret, Timeout: 5 * time.Second}
	sb := sandbox.New(sbCfg)
	sbCtx, stopSandbox := context.WithCancel(context.Background())
	sbDone := make(chan error, 1)
	go func() { sbDone <- serveSandbox(sbCtx, sb, sbLn, "", log) }()
	defer func() { stopSandbox(); <-sbDone }()

	groups := []string{prefix + "-batcher", prefix + "-submitter", prefix + "-tracker"}
	m.reg.MustRegister(newLagCollector(newLagReader(adm, kopts), groups...))
	ops, err := newOpsServer(d.OpsAddr, m, st.health, st.ready, log)
	if err != nil {
		return err
	}
	if err := mountConsole(ops.mux, consoleSpec{kafka: kopts, adm: adm, topics: topics, groups: groups,
		health: st.health, log: log, since: 24 * time.Hour}); err != nil {
		return err
	}
	ops.serve(log)
	defer ops.close()

	st.start()
	fmt.Fprintf(out, `payoutd dev: the whole flow in one process
  Kafka (%s):  %s
  Calypso sandbox:     %s   (payouts: %s/sandbox/payouts, webhooks: %s/sandbox/webhooks)
  Webhook ingress:     %s
  Console:             %s/console/
  Metrics and health:  %s/metrics  %s/healthz  %s/readyz
  Follow outcomes:     payoutd tail --kafka-brokers %s --topic-outcomes %s --from start
  Sample accounts:     %s
`, kafkaKind, strings.Join(seeds, ","), sbURL, sbURL, sbURL, webhookURL(st.ingressLn.Addr()),
		ops.url(), ops.url(), ops.url(), ops.url(), strings.Join(seeds, ","), topics.Outcomes, strings.Join(ids, ", "))

	tally := newDevTally("dev-" + runID + "-")
	follow := &outcomeFollower{tally: tally}
	gen := &sampleGenerator{tally: tally, topic: topics.Requests, rate: d.Rate, limit: d.Intents, forever: d.Forever, runID: runID}
	wctx, stopWork := context.WithCancel(ctx)
	followDone := make(chan error, 1)
	genDone := make(chan error, 1)
	go func() { followDone <- follow.run(wctx, kopts, topics.Outcomes) }()
	go func() { genDone <- gen.run(wctx, kopts) }()

	view := newDevView(out, d.Intents)
	if d.Forever {
		view = newDevView(out, -1)
	}
	result := d.watch(ctx, view, st, tally, started, genDone, sbURL)
	view.done()
	stopWork()
	<-followDone
	if err := st.stop(30 * time.Second); err != nil {
		log.Error("shutdown incomplete", "error", err)
	}
	fmt.Fprint(out, tally.final(st, time.Since(started), d.Forever))
	return result
}

// watch prints the live summary until the run is done: every intent
// resolved, the deadline passed, a component failed, or an interrupt.
func (d *devCmd) watch(ctx context.Context, view devView, st *stack, tally *devTally, started time.Time, genDone <-chan error, sandboxURL string) error {
	tick := time.NewTicker(d.Summary)
	defer tick.Stop()
	check := time.NewTicker(50 * time.Millisecond)
	defer check.Stop()
	deadline := time.NewTimer(d.Deadline)
	defer deadline.Stop()
	if d.Forever {
		deadline.Stop()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-st.exited:
			return fmt.Errorf("component failed: %w", err)
		case err := <-genDone:
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("sending sample intents: %w", err)
			}
			genDone = nil
		case <-tick.C:
			resolved, of := tally.resolved()
			view.update(tally.line(st, time.Since(started)), tally.short(st), resolved, of)
		case <-check.C:
			for _, low := range tally.takeLowBalance() {
				view.notice(lowBalanceNotice(low, sandboxURL))
			}
			if !d.Forever && tally.allResolved(d.Intents) {
				return nil
			}
		case <-deadline.C:
			resolved, _ := tally.resolved()
			return &failure{code: exitFailed, msg: fmt.Sprintf("only %d of %d intents reached a terminal outcome within %s", resolved, d.Intents, d.Deadline)}
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// kafkaOpts appends options to a copy of base.
func kafkaOpts(base []kgo.Opt, more ...kgo.Opt) []kgo.Opt {
	return append(append([]kgo.Opt{}, base...), more...)
}
