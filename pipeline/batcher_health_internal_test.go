package pipeline

import (
	"strings"
	"testing"
	"time"
)

// Issue 11, scenario 9: a batcher that cannot make progress says so on
// /readyz (its Health part) and in its Ready gauge, with the reason; and is
// ready again once it commits.
func TestBatcherHealthSaysWhyItIsStuck(t *testing.T) {
	health := NewHealth()
	now := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	b, err := NewBatcher(BatcherConfig{Health: health, StallAfter: time.Minute, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	reason := func() (bool, string) {
		_, parts := health.Check()
		for _, p := range parts {
			if p.Part == "batcher" {
				return p.Ready, p.Reason
			}
		}
		t.Fatal("no batcher part")
		return false, ""
	}
	for _, tc := range []struct {
		name        string
		aborts      int64
		sinceCommit time.Duration // when the last window committed
		idle        time.Duration // since the open window's first record
		waiting     bool
		ready       bool
		why         string
	}{
		{"progressing", 0, 0, 0, true, true, ""},
		{"idle with nothing waiting", 0, time.Hour, time.Hour, false, true, ""},
		{"records arrive after an idle hour", 0, time.Hour, time.Second, true, true, ""},
		{"windows keep aborting", 3, 10 * time.Second, 10 * time.Second, true, false, "3 windows in a row aborted"},
		{"records wait, nothing commits", 0, 2 * time.Minute, 2 * time.Minute, true, false, "records wait but nothing committed for 2m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.Stats.AbortsInARow.Store(tc.aborts)
			b.lastCommit = now.Add(tc.idle - tc.sinceCommit)
			w := newWindow()
			if tc.waiting {
				w.records, w.opened = 1, now
			}
			b.reportHealth(now.Add(tc.idle), w)
			ready, why := reason()
			if ready != tc.ready || !strings.Contains(why, tc.why) {
				t.Fatalf("ready %v (%q), want %v (%q)", ready, why, tc.ready, tc.why)
			}
			if gauge := b.Stats.Ready.Load(); (gauge == 1) != tc.ready {
				t.Fatalf("Ready gauge %d while health says ready=%v", gauge, ready)
			}
		})
	}
}
