package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"
)

func TestKafkaClientInfoIsDebugButWarningsStay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		level     slog.Level
		wantInfo  bool
		wantLevel string
	}{
		{slog.LevelInfo, false, "level=WARN"},
		{slog.LevelDebug, true, "level=DEBUG"},
	} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level}))
		kl := kslog.New(kafkaLogger(log))
		kl.Log(kgo.LogLevelInfo, "beginning transaction", "transactional_id", "t")
		kl.Log(kgo.LogLevelWarn, "unable to open connection to broker", "addr", "x")
		out := buf.String()
		if got := strings.Contains(out, "beginning transaction"); got != tc.wantInfo {
			t.Errorf("at %s: client info shown = %v:\n%s", tc.level, got, out)
		}
		if !strings.Contains(out, "unable to open connection") || !strings.Contains(out, tc.wantLevel) {
			t.Errorf("at %s: client warning lost or mislevelled:\n%s", tc.level, out)
		}
		if tc.wantInfo && strings.Contains(out, "level=INFO") {
			t.Errorf("client info kept its level:\n%s", out)
		}
	}
	// payoutd's own info lines are untouched.
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	log.Info("payout submitted")
	if !strings.Contains(buf.String(), "level=INFO") {
		t.Fatalf("own info line: %s", buf.String())
	}
}
