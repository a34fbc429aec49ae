package main

import (
	"runtime"
	"testing"
	"time"

	"github.com/payoutd/payoutd/calypso"
	"github.com/payoutd/payoutd/pipeline"
)

func TestBuildInfoSaysWhichBuildRuns(t *testing.T) {
	t.Parallel()
	mfs, err := newMetrics().reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	v, commit, _ := buildVersion()
	for _, mf := range mfs {
		if mf.GetName() != "payoutd_build_info" {
			continue
		}
		m := mf.GetMetric()[0]
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if m.GetGauge().GetValue() != 1 || labels["version"] != v || labels["commit"] != commit || labels["goversion"] != runtime.Version() {
			t.Fatalf("payoutd_build_info %v = %v", labels, m.GetGauge().GetValue())
		}
		return
	}
	t.Fatal("no payoutd_build_info")
}

// The submitter's operator metrics are registered and scrapeable.
func TestSubmitterMetricsAreExposed(t *testing.T) {
	cl, err := calypso.NewClient(calypso.Config{BaseURL: "http://calypso.invalid", Account: "a", APIKey: "k", APISecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := pipeline.NewSubmitter(pipeline.SubmitterConfig{}, pipeline.Accounts{"a": cl})
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics()
	m.submitter(sub)
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range families {
		have[f.GetName()] = true
		if f.GetName() == "payoutd_submitter_batches_total" {
			for _, mt := range f.GetMetric() {
				for _, l := range mt.GetLabel() {
					have["result="+l.GetValue()] = true
				}
			}
		}
	}
	for _, want := range []string{
		"payoutd_submitter_batches_total", "result=undecided", "result=quarantined", "result=replanned", "result=skipped",
		"payoutd_submitter_undecided_batches", "payoutd_submitter_deferred_batches", "payoutd_submitter_oldest_undecided_age_seconds", "payoutd_submitter_quarantined_batches",
	} {
		if !have[want] {
			t.Errorf("no %s among the metrics", want)
		}
	}
}

// An operator sees how old the oldest open payout is, and how many batches
// wait deferred or undecided: gauges, not just counters of events.
func TestStuckWorkHasGauges(t *testing.T) {
	cl, err := calypso.NewClient(calypso.Config{BaseURL: "http://calypso.invalid", Account: "a", APIKey: "k", APISecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := pipeline.NewTracker(pipeline.TrackerConfig{}, pipeline.Accounts{"a": cl})
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics()
	m.tracker(tr)
	tr.Stats.OldestOpen.Store(time.Now().Add(-time.Hour).UnixNano())
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "payoutd_tracker_oldest_open_payout_age_seconds" {
			if age := f.GetMetric()[0].GetGauge().GetValue(); age < 3599 || age > 3700 {
				t.Fatalf("oldest open payout age %v, want about an hour", age)
			}
			return
		}
	}
	t.Fatal("no payoutd_tracker_oldest_open_payout_age_seconds")
}
