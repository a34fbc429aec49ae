package main

import (
	"runtime"
	"testing"
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
