package main

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"time"
)

// The README's compose example pipes a CSV file into `produce -`: stdin has
// no extension, so the format must come from the content.
func TestProduceDetectsTheFormatFromTheContent(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct{ content, want string }{
		"csv header":             {"intentId,account,currency,amount,address\n", "csv"},
		"csv with BOM":           {"\ufeffintentId,account\n", "csv"},
		"json lines":             {`{"intentId":"a"}` + "\n", "jsonl"},
		"json lines after blank": {"\n\n  {\"intentId\":\"a\"}\n", "jsonl"},
		"empty":                  {"", "csv"},
	} {
		t.Run(name, func(t *testing.T) {
			c := &produceCmd{Format: "auto", File: "-"}
			if got := c.format(bufio.NewReader(strings.NewReader(tc.content))); got != tc.want {
				t.Fatalf("format = %s, want %s", got, tc.want)
			}
		})
	}
	c := &produceCmd{Format: "jsonl", File: "intents.csv"}
	if got := c.format(bufio.NewReader(strings.NewReader("a,b\n"))); got != "jsonl" {
		t.Fatalf("an explicit --format must win, got %s", got)
	}
}

func TestProduceExplainsBadRowsInWords(t *testing.T) {
	t.Parallel()
	ir, err := newIntentReader(0)
	if err != nil {
		t.Fatal(err)
	}
	csv := "intentId,account,currency,amount,address,executionDate\n" +
		"a1,demo,USDT_TRX,1.1234567,T1,\n" +
		"a2,demo,USDT_TRX,1e5,T2,\n" +
		"a3,demo,USDT_TRX,5,T 3,\n" +
		"a4,demo,USDT_TRX,5,T4,2026-12-01\n"
	_, bad, err := ir.readFile(bufio.NewReader(strings.NewReader(csv)), "csv")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"line 2: amount: at most 6 decimals for USDT_TRX (got 1.1234567)",
		"line 3: amount: must be a positive decimal such as 12.50",
		"line 4: address: must be the recipient's address",
		"line 5: executionDate: must be an RFC 3339 date-time with a zone, such as 2026-12-01T09:00:00Z (a plain date",
	}
	if len(bad) != len(want) {
		t.Fatalf("bad rows: %v", bad)
	}
	for i, w := range want {
		if got := bad[i].String(); !strings.HasPrefix(got, w) || strings.Contains(got, "pattern") {
			t.Errorf("row %d: %q, want it to start %q", i, got, w)
		}
	}
}

// examples/intents.csv is what the README tells a newcomer to send to the
// compose stack: every row must be valid for the compose sandbox's account.
func TestExampleIntentsAreValidForTheComposeSandbox(t *testing.T) {
	t.Parallel()
	f, err := os.Open("../../examples/intents.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ir, err := newIntentReader(0)
	if err != nil {
		t.Fatal(err)
	}
	rows, bad, err := ir.readFile(bufio.NewReader(f), "csv")
	if err != nil || len(bad) > 0 || len(rows) == 0 {
		t.Fatalf("examples/intents.csv: %d rows, bad %v, err %v", len(rows), bad, err)
	}
	compose, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		funded := "id=" + r.intent.Account + ","
		if !strings.Contains(string(compose), funded) || !strings.Contains(string(compose), "balance="+r.intent.Currency+":") {
			t.Errorf("line %d: account %s / currency %s is not a funded account of the compose sandbox", r.line, r.intent.Account, r.intent.Currency)
		}
	}
}

// A row the schema allows but the batcher would send to the DLQ is reported
// before anything is sent, in words: produce holds the batcher's rules too.
func TestProduceRefusesWhatTheBatcherWouldDLQ(t *testing.T) {
	t.Parallel()
	ir, err := newIntentReader(0)
	if err != nil {
		t.Fatal(err)
	}
	far := time.Now().AddDate(2, 0, 0).UTC().Format(time.RFC3339)
	lines := []string{
		`{"intentId":"b1","account":"demo","currency":"USDT_TRX","amount":"5","address":"T1","comment":"pay\u001b[2Jday"}`,
		`{"intentId":"b2\u200b","account":"demo","currency":"USDT_TRX","amount":"5","address":"T2"}`,
		`{"intentId":"b3","account":"demo","currency":"USDT_TRX","amount":"5","address":"T3","executionDate":"` + far + `"}`,
		`{"intentId":"b4","account":"de\u00a0mo","currency":"USDT_TRX","amount":"5","address":"T4"}`,
		`{"intentId":"b5","account":"demo","currency":"USDT_TRX","amount":"5","address":"T5","executionDate":"1960-01-01T00:00:00Z"}`,
		`{"intentId":"ok","account":"demo","currency":"USDT_TRX","amount":"5","address":"T6"}`,
	}
	rows, bad, err := ir.readFile(bufio.NewReader(strings.NewReader(strings.Join(lines, "\n")+"\n")), "jsonl")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"line 1: comment has U+001B (ESC) at byte 3",
		"line 2: intentId has U+200B",
		"line 3: executionDate " + far + " is more than 8760h0m0s ahead",
		"line 4: account has U+00A0",
		"line 5: executionDate 1960-01-01T00:00:00Z is before 1970",
	}
	if len(rows) != 1 || len(bad) != len(want) {
		t.Fatalf("%d valid, %d invalid, want 1 and %d: %v", len(rows), len(bad), len(want), bad)
	}
	for i, w := range want {
		if !strings.HasPrefix(bad[i].String(), w) {
			t.Errorf("row error %q, want it to start with %q", bad[i], w)
		}
	}
}
