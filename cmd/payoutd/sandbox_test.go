package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/payoutd/payoutd/calypso/sandbox"
)

// The sandbox's inconsistency flags reach its faults.
func TestSandboxFaultFlags(t *testing.T) {
	s := &sandboxCmd{Listen: "127.0.0.1:0", TimeScale: 1, StepDelay: time.Second,
		Accounts: []string{"id=a,key=ka,secret=sa", "id=b,key=kb,secret=sb"}, logFlags: logFlags{Format: "text", Level: "info"},
		inconsistencyFlags: inconsistencyFlags{
			LookupLag: 3 * time.Second, ValidationAfterAmbiguous: 0.25, Totals: "float", TotalsCurrencies: []string{"ETH"},
			AccountLatency: []string{"a=200ms"}, HangAccounts: []string{"b"}, AccountRate: []string{"a=2.5"},
			RefusedAddresses: []string{"0xdead", " "},
		}}
	var p problems
	s.validate(&p)
	if !p.empty() {
		t.Fatalf("problems: %v", p.sorted())
	}
	f := s.cfg.Faults
	got := fmt.Sprint(f.LookupLag, f.ValidationAfterAmbiguous, f.Totals, f.TotalsCurrencies, f.AccountLatency, f.HangAccounts, f.AccountRateLimit, f.RefusedAddresses)
	want := fmt.Sprint(3*time.Second, 0.25, sandbox.TotalsFloat, []string{"ETH"}, map[string]time.Duration{"a": 200 * time.Millisecond},
		map[string]bool{"b": true}, map[string]float64{"a": 2.5}, []string{"0xdead"})
	if got != want {
		t.Fatalf("faults %s, want %s", got, want)
	}
}

// Bad values name their setting and exit 2.
func TestSandboxFaultFlagsRefused(t *testing.T) {
	t.Parallel()
	r := payoutd(t, 10*time.Second, []string{"PAYOUTD_SANDBOX_FAULT_ACCOUNT_RATE=a=fast"}, "sandbox", "--account=id=a,key=k,secret=s",
		"--fault-lookup-lag=-1s", "--fault-validation-after-ambiguous=2", "--fault-account-latency=a=-5ms",
		"--fault-account-latency=ghost=1s", "--fault-hang-account=ghost")
	if r.code != exitUsage {
		t.Fatalf("want exit %d:\n%s", exitUsage, r)
	}
	for _, w := range []string{
		"--fault-lookup-lag (PAYOUTD_SANDBOX_FAULT_LOOKUP_LAG): must not be negative",
		"--fault-validation-after-ambiguous (PAYOUTD_SANDBOX_FAULT_VALIDATION_AFTER_AMBIGUOUS): must be a probability",
		`--fault-account-latency (PAYOUTD_SANDBOX_FAULT_ACCOUNT_LATENCY): "a=-5ms" is not ACCOUNT=DURATION`,
		`--fault-account-latency (PAYOUTD_SANDBOX_FAULT_ACCOUNT_LATENCY): names account "ghost"`,
		`--fault-hang-account (PAYOUTD_SANDBOX_FAULT_HANG_ACCOUNTS): names account "ghost"`,
		`--fault-account-rate (PAYOUTD_SANDBOX_FAULT_ACCOUNT_RATE): "a=fast" is not ACCOUNT=N`,
	} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr does not say %q:\n%s", w, r.stderr)
		}
	}
	r = payoutd(t, 10*time.Second, nil, "sandbox", "--fault-totals=rounded")
	if r.code != exitUsage || !strings.Contains(r.stderr, "--fault-totals") {
		t.Fatalf("unknown totals mode:\n%s", r)
	}
}
