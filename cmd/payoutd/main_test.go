package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/payoutd/payoutd/events"
	"github.com/payoutd/payoutd/internal/kafkatest"
)

// binary is the payoutd built once for every CLI test: the tests run what a
// user runs.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "payoutd-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "payoutd")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building payoutd:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is a finished payoutd run.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", r.code, r.stdout, r.stderr)
}

// payoutd runs the binary to its end (bounded by timeout) with extra env.
func payoutd(t *testing.T, timeout time.Duration, env []string, args ...string) result {
	t.Helper()
	p := startPayoutd(t, env, args...)
	return p.wait(t, timeout)
}

// proc is a payoutd running in the background.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{}
	res            result
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func startPayoutd(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, args...)
	// A clean environment: the developer's PAYOUTD_* must not leak in.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	p := &proc{cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	if os.Getenv("PAYOUTD_TEST_LOG") != "" {
		cmd.Stdout, cmd.Stderr = io2(p.stdout, os.Stderr), io2(p.stderr, os.Stderr)
	} else {
		cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting payoutd %v: %v", args, err)
	}
	go func() {
		_ = cmd.Wait()
		p.res = result{code: cmd.ProcessState.ExitCode(), stdout: p.stdout.String(), stderr: p.stderr.String()}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) wait(t *testing.T, timeout time.Duration) result {
	t.Helper()
	select {
	case <-p.done:
		return p.res
	case <-time.After(timeout):
		_ = p.cmd.Process.Signal(syscall.SIGQUIT) // goroutine dump on stderr
		<-p.done
		t.Fatalf("payoutd %v did not finish within %s:\n%s", p.cmd.Args[1:], timeout, p.res)
		return result{}
	}
}

func (p *proc) signal(sig os.Signal) { _ = p.cmd.Process.Signal(sig) }

// waitOutput waits until the process's stdout or stderr contains s.
func (p *proc) waitOutput(t *testing.T, timeout time.Duration, s string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.stdout.String()+p.stderr.String(), s) {
		select {
		case <-p.done:
			t.Fatalf("payoutd %v ended before printing %q:\n%s", p.cmd.Args[1:], s, p.res)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("payoutd %v did not print %q within %s:\nstdout:\n%s\nstderr:\n%s", p.cmd.Args[1:], s, timeout, p.stdout, p.stderr)
		}
	}
}

type teeWriter struct {
	a, b interface{ Write([]byte) (int, error) }
}

func (w teeWriter) Write(p []byte) (int, error) { _, _ = w.b.Write(p); return w.a.Write(p) }

func io2(a, b interface{ Write([]byte) (int, error) }) teeWriter { return teeWriter{a, b} }

// testTopics are topic names of this test's own, on the shared broker, and
// the flags that select them.
type testTopics struct {
	events.Topics
}

func newTestTopics(t *testing.T) testTopics {
	t.Helper()
	return testTopics{kafkatest.Topics(t)}
}

func (tt testTopics) flags() []string {
	return []string{"--topic-requests=" + tt.Requests, "--topic-dlq=" + tt.DLQ, "--topic-batches=" + tt.Batches,
		"--topic-intents=" + tt.Intents, "--topic-outcomes=" + tt.Outcomes, "--topic-webhooks-raw=" + tt.WebhooksRaw,
		"--topic-batch-states=" + tt.BatchStates, "--topic-tracker-state=" + tt.TrackerState}
}

// ensure creates the topics and deletes them when the test ends.
func (tt testTopics) ensure(t *testing.T, c *kafkatest.Cluster, partitions int32) {
	t.Helper()
	adm := c.Admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := tt.Ensure(ctx, adm, 0, partitions, 1); err != nil {
		t.Fatal(err)
	}
	tt.cleanup(t, c)
}

func (tt testTopics) cleanup(t *testing.T, c *kafkatest.Cluster) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = c.Admin(t).DeleteTopics(ctx, tt.Requests, tt.DLQ, tt.Batches, tt.Intents, tt.Outcomes, tt.WebhooksRaw)
	})
}

func brokersFlag(c *kafkatest.Cluster) string { return "--kafka-brokers=" + strings.Join(c.Seeds, ",") }
