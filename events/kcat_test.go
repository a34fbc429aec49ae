package events_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/kafkatest"
)

// kcat returns the kcat binary. CI installs it, so there a missing kcat fails
// the run instead of skipping the interop proof.
func kcat(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("kcat is not installed; .ci/run must install it")
		}
		t.Skip("kcat not installed (apt-get install kcat); CI runs this test")
	}
	return path
}

// kcatRecord is one record in kcat's -J output.
type kcatRecord struct {
	Key     string   `json:"key"`
	Payload string   `json:"payload"`
	Headers []string `json:"headers"`
}

func TestKcatReadsWhatTheCodecWrites(t *testing.T) {
	t.Parallel()
	bin := kcat(t)
	cluster := kafkatest.Start(t)
	topic := cluster.CreateTopic(t, "interop", 1, nil)
	e := sample(t, events.TypePayoutStatusChanged)
	rec, err := events.NewRecord(topic, "payoutd/test", e)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cluster.Client(t).ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}

	out, err := exec.CommandContext(ctx, bin, "-C", "-b", strings.Join(cluster.Seeds, ","), "-t", topic,
		"-o", "beginning", "-c", "1", "-e", "-J", "-q").Output()
	if err != nil {
		t.Fatalf("kcat: %v", err)
	}
	var got kcatRecord
	if err := json.Unmarshal(bytes.TrimSpace(out), &got); err != nil {
		t.Fatalf("kcat output %q: %v", out, err)
	}
	if got.Key != e.Key() || got.Payload != string(rec.Value) {
		t.Fatalf("kcat read key %q value %q, want %q %q", got.Key, got.Payload, e.Key(), rec.Value)
	}
	var want []string
	for _, h := range rec.Headers {
		want = append(want, h.Key, string(h.Value))
	}
	if strings.Join(got.Headers, "\n") != strings.Join(want, "\n") {
		t.Fatalf("kcat read headers %q, want %q", got.Headers, want)
	}
}

func TestCodecReadsWhatKcatWrites(t *testing.T) {
	t.Parallel()
	bin := kcat(t)
	cluster := kafkatest.Start(t)
	topic := cluster.CreateTopic(t, "interop", 1, nil)
	e := sample(t, events.TypeBatchPlanned)
	rec, err := events.NewRecord(topic, "payoutd/test", e)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	args := []string{"-P", "-b", strings.Join(cluster.Seeds, ","), "-t", topic, "-k", string(rec.Key)}
	for _, h := range rec.Headers {
		args = append(args, "-H", h.Key+"="+string(h.Value))
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = bytes.NewReader(rec.Value) // kcat splits on newlines; our values have none
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat: %v: %s", err, out)
	}

	cl := cluster.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	fetches := cl.PollFetches(ctx)
	if err := fetches.Err(); err != nil {
		t.Fatal(err)
	}
	recs := fetches.Records()
	if len(recs) != 1 {
		t.Fatalf("read %d records", len(recs))
	}
	meta, back, err := events.Decode(recs[0])
	if err != nil {
		t.Fatal(err)
	}
	again, _ := json.Marshal(back)
	if string(recs[0].Key) != e.Key() || meta.ID != e.ID() || meta.Type != events.TypeBatchPlanned || string(again) != string(rec.Value) {
		t.Fatalf("decoded key %q meta %+v value %s", recs[0].Key, meta, again)
	}
}
