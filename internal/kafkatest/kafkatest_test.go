package kafkatest_test

import (
	"os"
	"regexp"
	"testing"

	"github.com/payoutd/payoutd/internal/kafkatest"
)

// The helper says what it got, and it is what was asked for: the cluster
// of KAFKA_BROKERS, or an in-process kfake when nothing else is there.
func TestBrokerKindMatchesItsOrigin(t *testing.T) {
	c := kafkatest.Start(t)
	switch {
	case os.Getenv("KAFKA_BROKERS") != "":
		if c.Origin != "KAFKA_BROKERS" {
			t.Fatalf("KAFKA_BROKERS set, but the broker came from %s", c.Origin)
		}
	case c.Origin == "in-process":
		if c.Kind != kafkatest.Kfake {
			t.Fatalf("in-process broker detected as %s", c.Kind)
		}
	case c.Origin == "testcontainers":
		if c.Kind != kafkatest.Apache {
			t.Fatalf("container broker detected as %s", c.Kind)
		}
	default:
		t.Fatalf("unknown origin %q", c.Origin)
	}
	if os.Getenv("PAYOUTD_REQUIRE_APACHE_KAFKA") == "1" && c.Kind != kafkatest.Apache {
		t.Fatal("unreachable: Start fails first") // Start enforces it; this documents the contract
	}
}

func TestNamesAreUniqueAndSafe(t *testing.T) {
	safe := regexp.MustCompile(`^[a-zA-Z0-9._-]+$`)
	seen := map[string]bool{}
	for range 100 {
		n := kafkatest.Name(t, "payouts.requests")
		if !safe.MatchString(n) || len(n) > 249 {
			t.Fatalf("name %q is not a valid topic name", n)
		}
		if seen[n] {
			t.Fatalf("name %q given twice", n)
		}
		seen[n] = true
	}
	ts := kafkatest.Topics(t)
	if ts.Requests == ts.Intents || ts.Requests == "" {
		t.Fatalf("topics %+v", ts)
	}
}
