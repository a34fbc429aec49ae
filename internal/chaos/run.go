package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/calypso/sandbox"
	"github.com/payoutd/payoutd/events"
)

// Env is what a component process needs to reach the rest of the run.
type Env struct {
	SandboxURL    string
	IngressAddr   string // host:port the ingress listens on (the sandbox's webhooks go there)
	Accounts      []Account
	WebhookKey    string
	WebhookSecret string
}

// Account is a merchant account of the run and its API key pair.
type Account struct {
	ID, APIKey, APISecret string
}

// The run's accounts: intents alternate between them. The second answers
// every call SlowAccountLatency late, so one lane is slow while the other
// flows.
const (
	FastAccount        = "acct-chaos"
	SlowAccount        = "acct-chaos-slow"
	SlowAccountLatency = 100 * time.Millisecond
	// FastAccountRate is the calls per second Calypso allows the fast
	// account before it answers 429.
	FastAccountRate = 20
	// SlowAccountHang is how long, from the run's start, Calypso answers
	// none of the slow account's calls (they end when the caller gives up,
	// or are answered on release): its lane is stuck while the fast one
	// must flow, and every batch it held is still paid once.
	SlowAccountHang = 3 * time.Second
)

// FirstCreates are the faults the run's first creates meet, in order,
// before the random ones: answers lost after the payout was created, a 5xx,
// a reset connection.
var FirstCreates = []sandbox.Fault{sandbox.FaultLostResponse, sandbox.Fault5xx, sandbox.FaultLostResponse,
	sandbox.FaultReset, sandbox.FaultLostResponse}

// Faults is the sandbox's fault mix in a chaos run, drawn from seed: the
// transient faults (5xx, 429, resets, lost answers, webhooks dropped,
// duplicated, reordered), an outcome mix, and Calypso's inconsistencies at
// moderate values so that the run still ends: a read side lagging 2 s
// behind creates, 016 "Validation failed" for half the creates reusing a
// key, ETH totals rounded through a float (or, by seed, 0 while creating or
// fee-inclusive), one slow account hung for the run's first seconds, a per-account
// rate limit on the other, a few recipient addresses refused.
func Faults(seed uint64) sandbox.Faults {
	return sandbox.Faults{Seed: int64(seed), API5xx: 0.03, API429: 0.03, ConnReset: 0.02, LostResponse: 0.02,
		DropWebhook: 0.1, DuplicateWebhook: 0.1, ReorderWebhook: 0.1,
		Outcomes: sandbox.OutcomeMix{Completed: 0.8, Partial: 0.1, Failed: 0.1},
		// Unscaled; the run's TimeScale of 0.01 makes it 2 s.
		LookupLag:                200 * time.Second,
		ValidationAfterAmbiguous: 0.5,
		Totals:                   totalsModes[(seed+2)%uint64(len(totalsModes))],
		TotalsCurrencies:         []string{"ETH"},
		AccountLatency:           map[string]time.Duration{SlowAccount: SlowAccountLatency},
		// The submitters run without a client-side limit, so bursts meet
		// Calypso's per-account 429.
		AccountRateLimit: map[string]float64{FastAccount: FastAccountRate},
		RefusedAddresses: RefusedAddresses,
	}
}

// totalsModes are how the run's Calypso reports ETH totals, one per seed in
// turn: seed 1 (the default) rounds them through a float, seed 2 answers 0
// while a payout is being created, seed 3 includes the fees.
var totalsModes = []sandbox.TotalsMode{sandbox.TotalsFloat, sandbox.TotalsZeroWhileCreating, sandbox.TotalsFeeInclusive}

// RefusedAddresses are the recipients the run's Calypso refuses (400 001
// naming the row); one extra intent per hundred goes to one of them.
var RefusedAddresses = []string{"addr-refused-0", "addr-refused-1", "addr-refused-2"}

// Component is one kind of process and how many of it run.
type Component struct {
	Name      string // batcher, submitter, ingress, tracker
	Instances int
}

// Config configures a chaos run.
type Config struct {
	Binary  string   // the payoutd binary
	Brokers []string // seeds of the one broker
	Topics  events.Topics
	// Components default to 2 batchers, 2 submitters, an ingress and 2
	// trackers (a consumer group: kills move their partitions).
	Components []Component
	// Args builds the command line of instance i of component c.
	Args func(c string, i int, env Env) []string
	// Intents valid intents are sent, plus 5% duplicates and 2% invalid records.
	Intents int
	// KillEvery is the pause between kills; MaxKills bounds them (0: until done).
	KillEvery time.Duration
	MaxKills  int
	// RestartBroker, when set, is run once mid-run to restart Kafka.
	RestartBroker []string
	// Deadline bounds the whole run. Default 10 minutes.
	Deadline time.Duration
	Seed     uint64
	// LogDir receives each process's output (default: a temp dir).
	LogDir string
	Log    *slog.Logger
}

// Run starts the processes, sends the intents, kills and restarts processes
// while the intents flow, waits until every valid intent has an outcome (or
// the deadline), stops everything and audits.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Deadline <= 0 {
		cfg.Deadline = 10 * time.Minute
	}
	if len(cfg.Components) == 0 {
		cfg.Components = []Component{{"batcher", 2}, {"submitter", 2}, {"ingress", 1}, {"tracker", 2}}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.LogDir == "" {
		dir, err := os.MkdirTemp("", "payoutd-chaos-")
		if err != nil {
			return Report{}, err
		}
		cfg.LogDir = dir
	} else if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
		return Report{}, err
	}
	cfg.Log.Info("process logs", "dir", cfg.LogDir)
	ctx, cancel := context.WithTimeout(ctx, cfg.Deadline)
	defer cancel()
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	kafka := []kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}

	adm, err := kgo.NewClient(kafka...)
	if err != nil {
		return Report{}, err
	}
	defer adm.Close()
	if _, err := cfg.Topics.Ensure(ctx, kadm.NewClient(adm), 0, 4, 1); err != nil {
		return Report{}, fmt.Errorf("creating topics: %w", err)
	}

	env, sb, stopSandbox, err := startSandbox(cfg.Seed)
	if err != nil {
		return Report{}, err
	}
	defer stopSandbox()

	procs := &fleet{cfg: cfg, env: env}
	defer procs.stopAll()
	for _, c := range cfg.Components {
		for i := range c.Instances {
			if err := procs.start(c.Name, i); err != nil {
				return Report{}, err
			}
		}
	}

	want, err := sendIntents(ctx, kafka, cfg.Topics.WithDefaults().Requests, cfg.Intents, rng)
	if err != nil {
		return Report{}, err
	}

	rep := Report{}
	done := make(chan struct{})
	go func() { defer close(done); procs.waitSettled(ctx, kafka, cfg.Topics, want) }()
	restartAt := time.Now().Add(cfg.KillEvery * 2)
	ticker := time.NewTicker(cfg.KillEvery)
	defer ticker.Stop()
loop:
	for {
		select {
		case <-done:
			break loop
		case <-ticker.C:
			if cfg.MaxKills == 0 || rep.Kills < cfg.MaxKills {
				if err := procs.killRandom(rng); err != nil {
					return rep, err
				}
				rep.Kills++
			}
			if len(cfg.RestartBroker) > 0 && rep.BrokerRestarts == 0 && time.Now().After(restartAt) {
				cfg.Log.Info("restarting the broker")
				out, err := exec.CommandContext(ctx, cfg.RestartBroker[0], cfg.RestartBroker[1:]...).CombinedOutput()
				if err != nil {
					return rep, fmt.Errorf("restarting the broker: %v: %s", err, out)
				}
				rep.BrokerRestarts++
			}
		}
	}
	procs.stopAll()
	// What the sandbox's faults did, so a passing run shows they bit.
	for path, outcomes := range sb.Requests() {
		cfg.Log.Info("sandbox requests", "path", path, "outcomes", fmt.Sprint(outcomes))
	}

	actx, acancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	defer acancel()
	audit, err := Audit(actx, kafka, cfg.Topics, sb, want)
	audit.Kills, audit.BrokerRestarts = rep.Kills, rep.BrokerRestarts
	if err == nil && ctx.Err() != nil {
		audit.problem("deadline of %v reached before every intent had an outcome (logs in %s)", cfg.Deadline, cfg.LogDir)
	}
	return audit, err
}

// startSandbox serves a sandbox with API and webhook faults on a free port;
// its webhooks go to the ingress address it reserves.
func startSandbox(seed uint64) (Env, *sandbox.Sandbox, func(), error) {
	ingress, err := freeAddr()
	if err != nil {
		return Env{}, nil, nil, err
	}
	env := Env{IngressAddr: ingress, WebhookKey: "chaos-webhook-key", WebhookSecret: "chaos-webhook-secret",
		Accounts: []Account{{FastAccount, "chaos-key", "chaos-secret"}, {SlowAccount, "chaos-slow-key", "chaos-slow-secret"}}}
	accounts := map[string]sandbox.Account{}
	for _, a := range env.Accounts {
		balances := map[string]calypso.Amount{}
		for _, c := range currencies {
			balances[c] = calypso.MustParseAmount("1000000000")
		}
		accounts[a.ID] = sandbox.Account{Name: a.ID, APIKey: a.APIKey, APISecret: calypso.Secret(a.APISecret), Balances: balances}
	}
	sb := sandbox.New(sandbox.Config{
		Accounts: accounts,
		// A fee on ETH, so fee-inclusive totals differ from the batch's.
		Tariff:    map[string]sandbox.Fee{"ETH": {Fixed: calypso.MustParseAmount("0.001")}},
		TimeScale: 0.01,
		Webhook: sandbox.WebhookConfig{URL: "http://" + ingress + "/webhooks/calypso", PublicKey: env.WebhookKey,
			Secret: calypso.Secret(env.WebhookSecret), Timeout: 200 * time.Second},
		Faults: Faults(seed),
	})
	// However few creates a short run makes, the first ones meet an
	// ambiguous end, so lookups, lag and the overloaded 016 are exercised.
	sb.InjectFault(calypso.PathMassCreate, FirstCreates...)
	sb.HangAccount(SlowAccount, true)
	release := time.AfterFunc(SlowAccountHang, func() { sb.HangAccount(SlowAccount, false) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		release.Stop()
		sb.Close()
		return Env{}, nil, nil, err
	}
	srv := &http.Server{Handler: sb, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	env.SandboxURL = "http://" + l.Addr().String()
	return env, sb, func() { release.Stop(); _ = srv.Close(); sb.Close() }, nil
}

var currencies = []string{"USDT_TRX", "BTC", "ETH", "TRX"}

// sendIntents produces n valid intents, 5% of them twice, 2% invalid
// records, and one more intent per hundred to an address Calypso refuses. Intents alternate between the accounts; a third of the ETH ones
// carry 18 decimals, so that a total rounded through a float differs from
// the batch's.
func sendIntents(ctx context.Context, kafka []kgo.Opt, topic string, n int, rng *rand.Rand) (Expect, error) {
	want := Expect{Valid: map[string]bool{}, Invalid: map[string]bool{}, Refused: map[string]bool{}}
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, kafka...), kgo.DefaultProduceTopic(topic))...)
	if err != nil {
		return want, err
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := range n {
		id := fmt.Sprintf("chaos-%07d", i)
		cur := currencies[i%len(currencies)]
		amount := fmt.Sprintf("%d.%d", 1+rng.IntN(500), rng.IntN(100))
		if cur == "ETH" && rng.IntN(3) == 0 {
			amount = fmt.Sprintf("%d.%018d", 1+rng.IntN(500), 1+rng.Int64N(999_999_999_999_999_999))
		}
		account := FastAccount
		if (i/len(currencies))%2 == 1 {
			account = SlowAccount
		}
		v, _ := json.Marshal(events.PayoutRequested{IntentID: id, Account: account, Currency: cur,
			Amount: events.MustAmount(amount), Address: fmt.Sprintf("addr-%d", rng.IntN(n))})
		r := &kgo.Record{Key: []byte(id), Value: v}
		recs = append(recs, r)
		want.Valid[id] = true
		if rng.Float64() < 0.05 {
			recs = append(recs, &kgo.Record{Key: r.Key, Value: r.Value})
		}
		if rng.Float64() < 0.02 {
			bad := fmt.Sprintf("chaos-bad-%07d", i)
			recs = append(recs, &kgo.Record{Key: []byte(bad), Value: []byte(`{"intentId":"` + bad + `","amount":"-1"}`)})
			want.Invalid[bad] = true
		}
		if i%100 == 50 {
			// Calypso refuses this recipient: the intent fails alone, the
			// rest of its batch is paid.
			ref := fmt.Sprintf("chaos-refused-%07d", i)
			v, _ := json.Marshal(events.PayoutRequested{IntentID: ref, Account: account, Currency: cur,
				Amount: events.MustAmount("1"), Address: RefusedAddresses[rng.IntN(len(RefusedAddresses))]})
			recs = append(recs, &kgo.Record{Key: []byte(ref), Value: v})
			want.Refused[ref] = true
		}
	}
	// Paced in slices, so kills land while intents are still arriving.
	for len(recs) > 0 {
		k := min(len(recs), 200)
		if err := cl.ProduceSync(ctx, recs[:k]...).FirstErr(); err != nil {
			return want, fmt.Errorf("producing intents: %w", err)
		}
		recs = recs[k:]
		select {
		case <-ctx.Done():
			return want, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return want, nil
}

// instance names one process: instance i of a component.
type instance struct {
	component string
	i         int
}

func (in instance) String() string { return fmt.Sprintf("%s-%d", in.component, in.i) }

// fleet is the running component processes.
type fleet struct {
	cfg  Config
	env  Env
	mu   sync.Mutex
	proc map[instance]*process
}

// process is a started component; done closes when it has exited.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (f *fleet) start(component string, i int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.proc == nil {
		f.proc = map[instance]*process{}
	}
	in := instance{component, i}
	name := in.String()
	out, err := os.OpenFile(filepath.Join(f.cfg.LogDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(f.cfg.Binary, f.cfg.Args(component, i, f.env)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); out.Close(); close(p.done) }()
	f.proc[in] = p
	f.cfg.Log.Info("started", "process", name, "pid", cmd.Process.Pid)
	return nil
}

// killRandom SIGKILLs one process and starts it again, as a crash-looping
// pod would be restarted: same instance, same transactional id.
func (f *fleet) killRandom(rng *rand.Rand) error {
	f.mu.Lock()
	all := make([]instance, 0, len(f.proc))
	for in := range f.proc {
		all = append(all, in)
	}
	f.mu.Unlock()
	if len(all) == 0 {
		return nil
	}
	// Sorted, so a seed picks the same victims every run.
	slices.SortFunc(all, func(a, b instance) int { return strings.Compare(a.String(), b.String()) })
	victim := all[rng.IntN(len(all))]
	f.mu.Lock()
	p := f.proc[victim]
	f.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	f.cfg.Log.Info("killed", "process", victim, "pid", p.cmd.Process.Pid)
	return f.start(victim.component, victim.i)
}

func (f *fleet) stopAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.proc {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for in, p := range f.proc {
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		delete(f.proc, in)
	}
}

// waitSettled returns when every valid intent has an outcome on the
// outcomes topic, or ctx ends.
func (f *fleet) waitSettled(ctx context.Context, kafka []kgo.Opt, topics events.Topics, want Expect) {
	topics = topics.WithDefaults()
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, kafka...), kgo.ConsumeTopics(topics.Outcomes),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return
	}
	defer cl.Close()
	resolved := map[string]bool{}
	for ctx.Err() == nil && len(resolved) < len(want.Valid)+len(want.Refused) {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			_, e, err := events.Decode(r)
			if err != nil {
				return
			}
			switch o := e.(type) {
			case events.IntentSettled:
				if want.Valid[o.IntentID] || want.Refused[o.IntentID] {
					resolved[o.IntentID] = true
				}
			case events.IntentFailed:
				if want.Valid[o.IntentID] || want.Refused[o.IntentID] {
					resolved[o.IntentID] = true
				}
			}
		})
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
