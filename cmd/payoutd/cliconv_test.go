package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBarePayoutdPrintsTheCommandList(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {"help"}} {
		r := payoutd(t, 10*time.Second, nil, args...)
		if r.code != exitOK {
			t.Fatalf("payoutd %v:\n%s", args, r)
		}
		for _, c := range commands {
			if !strings.Contains(r.stdout, c) {
				t.Errorf("payoutd %v does not list %s:\n%s", args, c, r.stdout)
			}
		}
	}
}

func TestHelpCommandExplainsOneCommand(t *testing.T) {
	t.Parallel()
	r := payoutd(t, 10*time.Second, nil, "help", "tail")
	if r.code != exitOK || !strings.Contains(r.stdout, "Usage: payoutd tail") {
		t.Fatalf("payoutd help tail:\n%s", r)
	}
}

func TestVersionFlagAndCommandAgree(t *testing.T) {
	t.Parallel()
	flag := payoutd(t, 10*time.Second, nil, "--version")
	cmd := payoutd(t, 10*time.Second, nil, "version")
	if flag.code != exitOK || cmd.code != exitOK {
		t.Fatalf("--version:\n%s\nversion:\n%s", flag, cmd)
	}
	_, commit, _ := buildVersion()
	_ = commit // the test binary's own stamp may differ from the built binary's
	if !strings.HasPrefix(flag.stdout, "payoutd ") || !strings.Contains(flag.stdout, "(commit ") {
		t.Fatalf("--version: %q", flag.stdout)
	}
	if !strings.Contains(cmd.stdout, "commit ") {
		t.Fatalf("version: %q", cmd.stdout)
	}
}

func TestCompletionAnswersFromTheCommandTree(t *testing.T) {
	t.Parallel()
	r := payoutd(t, 10*time.Second, []string{"COMP_LINE=payoutd ta", "COMP_POINT=10"})
	if r.code != exitOK || strings.TrimSpace(r.stdout) != "tail" {
		t.Fatalf("completing 'payoutd ta':\n%s", r)
	}
	r = payoutd(t, 10*time.Second, []string{"COMP_LINE=payoutd tail --no-f", "COMP_POINT=22"})
	if r.code != exitOK || strings.TrimSpace(r.stdout) != "--no-follow" {
		t.Fatalf("completing a flag:\n%s", r)
	}
	r = payoutd(t, 10*time.Second, nil, "completion", "bash")
	if r.code != exitOK || !strings.Contains(r.stdout, "complete -C") {
		t.Fatalf("completion bash:\n%s", r)
	}
}

// The precedence a README promises: flags > PAYOUTD_* variables > the
// config file > defaults.
func TestConfigFilePrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "payoutd.json")
	if err := os.WriteFile(file, []byte(`{"kafka-brokers": "file:9092", "topic_requests": "file.requests",
		"topicDlq": "file.dlq", "log-level": "debug", "limit": 7}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PAYOUTD_TOPIC_REQUESTS", "env.requests")

	var c cli
	parser, err := newParser(&c, &problems{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parser.Parse([]string{"tail", "--config", file, "--kafka-brokers", "flag:9092"}); err != nil {
		t.Fatal(err)
	}
	got := c.Tail
	if b := strings.Join(got.Brokers, ","); b != "flag:9092" {
		t.Errorf("brokers = %q: the flag must win over the file", b)
	}
	if got.Requests != "env.requests" {
		t.Errorf("requests topic = %q: the environment must win over the file", got.Requests)
	}
	if got.DLQ != "file.dlq" || got.Level != "debug" || got.Limit != 7 {
		t.Errorf("from the file: dlq %q, log level %q, limit %d", got.DLQ, got.Level, got.Limit)
	}
}

func TestConfigFileErrorsShowNoContent(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(file, []byte(`{"kafka-sasl-password": "hunter2-very-secret" oops}`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := payoutd(t, 10*time.Second, nil, "topics", "--config", file)
	if r.code != exitUsage || strings.Contains(r.stderr+r.stdout, "hunter2") {
		t.Fatalf("bad config file:\n%s", r)
	}
	r = payoutd(t, 10*time.Second, nil, "topics", "--config", filepath.Join(t.TempDir(), "missing.json"))
	if r.code != exitUsage || !strings.Contains(r.stderr, "missing.json") {
		t.Fatalf("missing config file must be named:\n%s", r)
	}
}

func TestParseErrorsNeverEchoASecret(t *testing.T) {
	t.Parallel()
	// A space instead of a comma makes kong see a stray argument.
	r := payoutd(t, 10*time.Second, nil, "run", "--calypso-account=id=a,key=k", "secret=hunter2-very-secret")
	if r.code != exitUsage || strings.Contains(r.stderr+r.stdout, "hunter2") {
		t.Fatalf("stray secret argument:\n%s", r)
	}
}

// A secret file that cannot be read is named, so an operator can fix it.
func TestMissingSecretFileIsNamed(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "calypso-secret")
	r := payoutd(t, 10*time.Second, nil, "run", "--components=submitter", "--calypso-url=http://127.0.0.1:1",
		"--calypso-account=id=a,key=k,secret-file="+missing)
	if r.code != exitUsage || !strings.Contains(r.stderr, missing) {
		t.Fatalf("missing secret file:\n%s", r)
	}
}
