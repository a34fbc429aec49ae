package console_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/payoutd/payoutd/internal/console"
	"github.com/payoutd/payoutd/internal/status"
	"github.com/payoutd/payoutd/pipeline"
)

type fakeSource struct {
	sum       status.Summary
	timelines map[string]status.Timeline
	reads     atomic.Int64
}

func (f *fakeSource) Summarize(context.Context) (status.Summary, error) {
	f.reads.Add(1)
	return f.sum, nil
}

func (f *fakeSource) Follow(_ context.Context, q string) (status.Timeline, error) {
	if tl, ok := f.timelines[q]; ok {
		return tl, nil
	}
	return status.Timeline{Query: q}, nil
}

func openPayouts(n int, at time.Time) []status.OpenPayout {
	out := make([]status.OpenPayout, n)
	for i := range out {
		out[i] = status.OpenPayout{PayoutID: fmt.Sprintf("p%06d", i), BatchID: fmt.Sprintf("b%06d", i), Account: "acc",
			Currency: "USDT_TRX", State: "IN_PROGRESS", Since: at, Age: time.Minute}
	}
	return out
}

func get(t testing.TB, srv *httptest.Server, path string) string {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", path, resp.Status, b)
	}
	return string(b)
}

func TestOverviewAnswersWhatIsStuckAndWhatFailed(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	src := &fakeSource{sum: status.Summary{At: now, OpenPayouts: openPayouts(120, now), OpenByState: map[string]int{"IN_PROGRESS": 120},
		Batches:  []status.WaitingBatch{{BatchID: "b-undecided", State: "UNDECIDED", Reason: "create timed out", NextTry: "2026-11-25T10:05:00Z", Since: now}},
		DLQ:      map[string]int{"precision": 2},
		Rejected: []status.Step{{At: now, IntentID: "<script>alert(1)</script>", Detail: "amount: at most 6 decimals"}}}}
	health := pipeline.NewHealth()
	health.NotReady("submitter/lane/acc", "Calypso answers 003 (wrong sign): check the API secret")
	c, err := console.New(console.Config{Source: src, Health: health, PageSize: 50, Now: func() time.Time { return now },
		Lag: func(context.Context) map[string]int64 { return map[string]int64{"payoutd-submitter": 3} }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	defer srv.Close()

	page := get(t, srv, "/")
	for _, want := range []string{"not ready", "submitter/lane/acc", "wrong sign", "Open payouts: 120", "IN_PROGRESS 120",
		"p000000", "p000049", "Page 1 of 3", "b-undecided", "UNDECIDED", "create timed out", "precision 2",
		"amount: at most 6 decimals", "payoutd-submitter"} {
		if !strings.Contains(page, want) {
			t.Errorf("overview lacks %q", want)
		}
	}
	if strings.Contains(page, "p000050") || strings.Contains(page, "<script>alert") {
		t.Errorf("overview lists page 2 on page 1, or does not escape an intent id")
	}
	page = get(t, srv, "/?page=3")
	if !strings.Contains(page, "p000119") || strings.Contains(page, "p000049") || !strings.Contains(page, "Page 3 of 3") {
		t.Errorf("page 3 is not the last 20 payouts")
	}
	if n := src.reads.Load(); n != 1 {
		t.Errorf("the topics were read %d times for two pages within MaxAge, want once", n)
	}
}

func TestFollowPageShowsTheTimeline(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	src := &fakeSource{timelines: map[string]status.Timeline{"inv 1": {Query: "inv 1", Kind: "intent", Outcome: "SETTLED",
		Intents: []string{"inv 1"}, Payouts: []string{"9001"}, Steps: []status.Step{
			{At: at, What: "payout.requested.v1", IntentID: "inv 1", Topic: "payouts.requests"},
			{At: at.Add(time.Minute), What: "intent.settled.v1", IntentID: "inv 1", PayoutID: "9001", State: "COMPLETED", Topic: "payouts.outcomes", Offset: 7},
		}}}}
	c, err := console.New(console.Config{Source: src})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	defer srv.Close()
	page := get(t, srv, "/follow?q=inv+1")
	for _, want := range []string{`id="outcome" class="ok">SETTLED`, "payout.requested.v1", "intent.settled.v1", "payouts.outcomes[0]@7",
		`href="follow?q=9001"`} {
		if !strings.Contains(page, want) {
			t.Errorf("follow page lacks %q:\n%s", want, page)
		}
	}
	if page := get(t, srv, "/follow?q=nobody"); !strings.Contains(page, "Nothing found for nobody") {
		t.Errorf("an unknown id is not said to be unknown")
	}
}

// BenchmarkOverviewWith100kOpenPayouts renders a page of the overview with
// 100k open payouts in the read model: the page lists one page, not all.
func BenchmarkOverviewWith100kOpenPayouts(b *testing.B) {
	now := time.Now()
	src := &fakeSource{sum: status.Summary{At: now, OpenPayouts: openPayouts(100_000, now), OpenByState: map[string]int{"IN_PROGRESS": 100_000}}}
	c, err := console.New(console.Config{Source: src, MaxAge: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "/?page=1000", nil)
	for b.Loop() {
		w := httptest.NewRecorder()
		c.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatal(w.Code)
		}
	}
}
