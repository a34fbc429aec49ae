package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/payoutd/payoutd/events"
)

// devView shows dev's live summary: redrawn in place on a terminal, one
// plain line per update otherwise (a log file, a pipe, CI).
type devView interface {
	// update shows the summary, and how many of the intents sent reached a
	// terminal outcome.
	update(line, short string, resolved, of int)
	// notice prints a message once, above the live summary.
	notice(msg string)
	// done removes the live summary, before the final one is printed.
	done()
}

// newDevView picks the view for out: a terminal gets a progress bar of
// terminal intents (schollz/progressbar, which handles the terminal's width
// and the redraw) with a short summary; anything else the plain lines.
// intents is the bar's end, -1 for --forever (a spinner).
func newDevView(out io.Writer, intents int) devView {
	f, ok := out.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return plainView{out}
	}
	return newTermView(out, intents, 100*time.Millisecond)
}

func newTermView(out io.Writer, intents int, throttle time.Duration) *termView {
	bar := progressbar.NewOptions(intents,
		progressbar.OptionSetWriter(out),
		progressbar.OptionSetItsString("intents"),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(20),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionShowDescriptionAtLineEnd(),
		progressbar.OptionFullWidth(),
		progressbar.OptionThrottle(throttle),
		progressbar.OptionSetRenderBlankState(true),
	)
	return &termView{out: out, bar: bar}
}

type plainView struct{ out io.Writer }

func (v plainView) update(line, _ string, _, _ int) { fmt.Fprintln(v.out, line) }
func (v plainView) notice(msg string)               { fmt.Fprintln(v.out, msg) }
func (v plainView) done()                           {}

type termView struct {
	out io.Writer
	bar *progressbar.ProgressBar
}

func (v *termView) update(_, short string, resolved, _ int) {
	v.bar.Describe(short)
	_ = v.bar.Set(resolved)
}

func (v *termView) notice(msg string) {
	_ = v.bar.Clear()
	fmt.Fprintln(v.out, msg)
	_ = v.bar.RenderBlank()
}

func (v *termView) done() {
	_ = v.bar.Clear()
}

// lowBalanceNotice says, once per account and currency, that the sandbox
// ran out of balance, and how to top it up.
func lowBalanceNotice(d events.PayoutDeferred, sandboxURL string) string {
	return fmt.Sprintf("payoutd dev: sandbox account %s is out of %s (a batch needs %s, %s left): its batches wait, deferred, until it is topped up:\n"+
		"  curl -X POST %s/sandbox/balance -d '{\"account\":\"%s\",\"currency\":\"%s\",\"amount\":\"1000000000\"}'",
		d.Account, d.Currency, d.Required, d.Available, sandboxURL, d.Account, d.Currency)
}

// withoutDeferralWarnings drops the submitter's "batch deferred" warning,
// one per deferral of every batch, from dev's log: dev reports a sandbox
// out of balance once, with how to fix it (lowBalanceNotice). Production
// logs every deferral.
func withoutDeferralWarnings(log *slog.Logger) *slog.Logger {
	return slog.New(dropMessage{log.Handler(), "batch deferred"})
}

type dropMessage struct {
	slog.Handler
	msg string
}

func (h dropMessage) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h dropMessage) WithAttrs(as []slog.Attr) slog.Handler {
	return dropMessage{h.Handler.WithAttrs(as), h.msg}
}

func (h dropMessage) WithGroup(name string) slog.Handler {
	return dropMessage{h.Handler.WithGroup(name), h.msg}
}
