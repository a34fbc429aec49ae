package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/payoutd/payoutd/calypso"
)

// webhookTimeLayout is how Calypso's webhook examples write times: no zone,
// microseconds.
const webhookTimeLayout = "2006-01-02T15:04:05.000000"

type webhookRecord struct {
	WebhookRecord
}

type delivery struct {
	rec     *webhookRecord
	due     time.Time
	attempt int // attempts made so far for this copy
	seq     uint64
}

type envelope struct {
	RequestID   string         `json:"requestId"`
	ID          json.Number    `json:"id"`
	CreatedDate string         `json:"createdDate"`
	Level       string         `json:"level"`
	Service     string         `json:"service"`
	EventType   string         `json:"eventType"`
	Data        map[string]any `json:"data"`
}

// emitLocked records a webhook for p and queues its delivery, applying the
// webhook faults. Envelope ids increase in emission order. s.mu must be held.
func (s *Sandbox) emitLocked(p *payout, event string, st calypso.State, extra map[string]any) {
	s.nextEvent++
	data := map[string]any{
		"type":             event,
		"parentExternalId": json.Number(p.id), // a number, as in Calypso's docs
		"idempotencyKey":   p.key,
		"currency":         p.currency,
		"createdDate":      p.created.UTC().Format(webhookTimeLayout),
	}
	switch event {
	case calypso.EventPayoutChangeStatus, calypso.EventPayoutHashReceived:
		data["payoutStatus"] = st
		data["externalId"] = p.externalID
		data["hash"] = ""
	case calypso.EventPayoutConfirmed:
		data["approved"] = []any{}
	}
	for k, v := range extra {
		data[k] = v
	}
	level := "SUCCESS"
	switch {
	case event == calypso.EventPayoutValidationError, st == calypso.StateFailed, st == calypso.StatePartial:
		level = "WARNING"
	case !st.Terminal():
		level = "INFO"
	}
	env := envelope{
		RequestID:   s.cfg.Webhook.RequestID,
		ID:          json.Number(strconv.FormatInt(s.nextEvent, 10)),
		CreatedDate: s.now().UTC().Format(webhookTimeLayout),
		Level:       level,
		Service:     "PAYOUT",
		EventType:   event,
		Data:        data,
	}
	body, err := json.Marshal(env)
	if err != nil {
		panic(fmt.Sprintf("sandbox: encode webhook: %v", err)) // only our own maps; cannot fail
	}
	rec := &webhookRecord{WebhookRecord{ID: s.nextEvent, EventType: event, PayoutID: p.id, State: st, Body: body}}
	s.webhooks = append(s.webhooks, rec)
	if s.cfg.Webhook.URL == "" {
		return
	}
	f := s.cfg.Faults
	if s.chance(f.DropWebhook) {
		rec.Dropped = true
		return
	}
	due := time.Now() // delivery runs on real timers, whatever Config.Now says
	if s.chance(f.DelayWebhook) {
		rec.Delayed = true
		due = due.Add(s.scaled(f.WebhookDelay))
	}
	if s.chance(f.ReorderWebhook) {
		// Held past the next steps, so later events overtake it.
		rec.Reordered = true
		due = due.Add(s.scaled(3 * s.cfg.StepDelay))
	}
	s.queueLocked(rec, due, 0)
	if s.chance(f.DuplicateWebhook) {
		rec.Duplicated = true
		s.queueLocked(rec, due.Add(s.scaled(s.cfg.StepDelay/2)), 0)
	}
}

func (s *Sandbox) queueLocked(rec *webhookRecord, due time.Time, attempt int) {
	s.nextSeq++
	s.outbox = append(s.outbox, &delivery{rec: rec, due: due, attempt: attempt, seq: s.nextSeq})
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// deliverLoop sends due deliveries one at a time, earliest first (ties in
// emission order), so that without faults webhooks arrive in order.
func (s *Sandbox) deliverLoop() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		var next *delivery
		idx := -1
		for i, d := range s.outbox {
			if next == nil || d.due.Before(next.due) || (d.due.Equal(next.due) && d.seq < next.seq) {
				next, idx = d, i
			}
		}
		var wait time.Duration
		if next != nil {
			wait = time.Until(next.due)
			if wait <= 0 {
				s.outbox = append(s.outbox[:idx], s.outbox[idx+1:]...)
			}
		}
		s.mu.Unlock()

		switch {
		case next == nil:
			select {
			case <-s.wake:
			case <-s.ctx.Done():
				return
			}
		case wait > 0:
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-s.wake:
			case <-s.ctx.Done():
				t.Stop()
				return
			}
			t.Stop()
		default:
			s.deliver(next)
		}
	}
}

func (s *Sandbox) deliver(d *delivery) {
	body := d.rec.Body
	status, err := s.post(body)
	ok := err == nil && status == http.StatusOK
	s.mu.Lock()
	defer s.mu.Unlock()
	a := DeliveryAttempt{At: s.now().UTC(), Status: status}
	if err != nil {
		a.Error = err.Error()
	}
	d.rec.Attempts = append(d.rec.Attempts, a)
	d.attempt++
	s.cfg.Logger.LogAttrs(s.ctx, slog.LevelDebug, "sandbox: webhook delivery",
		slog.Int64("event", d.rec.ID), payoutAttr(d.rec.PayoutID), slog.Int("status", status), slog.Bool("ok", ok))
	if ok {
		d.rec.Delivered = true
		return
	}
	gaps := s.cfg.Webhook.RetryGaps
	if d.attempt > len(gaps) {
		d.rec.GaveUp = true
		return
	}
	s.queueLocked(d.rec, time.Now().Add(s.scaled(gaps[d.attempt-1])), d.attempt)
}

func (s *Sandbox) post(body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Webhook.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.Webhook.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(calypso.HeaderKey, s.cfg.Webhook.PublicKey)
	req.Header.Set(calypso.HeaderSign, calypso.SignBody(s.cfg.Webhook.Secret, body))
	resp, err := s.cfg.Webhook.Client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return resp.StatusCode, nil
}
