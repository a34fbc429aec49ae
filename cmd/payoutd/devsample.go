package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/payoutd/payoutd/events"
)

// sampleGenerator sends dev's sample intents: valid ones over the sample
// accounts and currencies, and, in between, a few that must end in the DLQ
// (invalid, and exact duplicates of intents already sent).
type sampleGenerator struct {
	tally   *devTally
	topic   string
	rate    int
	limit   int
	forever bool
	runID   string
}

func (g *sampleGenerator) run(ctx context.Context, base []kgo.Opt) error {
	cl, err := kgo.NewClient(kafkaOpts(base, kgo.DefaultProduceTopic(g.topic), kgo.ProducerLinger(5*time.Millisecond))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	rng := rand.New(rand.NewPCG(42, 7))
	tick, perTick := pace(g.rate)
	t := time.NewTicker(tick)
	defer t.Stop()
	// The last intents sent, to pick duplicates from: bounded, so that
	// --forever runs in constant memory.
	const recent = 1024
	var sent []*kgo.Record
	valid := 0
	for g.forever || valid < g.limit {
		var batch []*kgo.Record
		for i := 0; i < perTick && (g.forever || valid < g.limit); i++ {
			valid++
			rec, id := g.valid(rng, valid)
			batch = append(batch, rec)
			if len(sent) < recent {
				sent = append(sent, rec)
			} else {
				sent[valid%recent] = rec
			}
			g.tally.sentIntent(id)
			if valid%20 == 0 {
				batch = append(batch, g.invalid(rng, valid))
				g.tally.invalidSent()
			}
			if valid%15 == 0 {
				orig := sent[rng.IntN(len(sent))]
				batch = append(batch, &kgo.Record{Key: orig.Key, Value: orig.Value, Headers: orig.Headers})
				g.tally.duplicateSent()
			}
		}
		if err := cl.ProduceSync(ctx, batch...).FirstErr(); err != nil {
			return err
		}
		if g.forever && len(sent) > 10000 {
			sent = sent[len(sent)-1000:]
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
	return nil
}

func (g *sampleGenerator) valid(rng *rand.Rand, n int) (*kgo.Record, string) {
	acc := devAccounts[rng.IntN(len(devAccounts))]
	cur := acc.currencies[rng.IntN(len(acc.currencies))]
	now := time.Now().UTC()
	in := events.PayoutRequested{
		IntentID: fmt.Sprintf("dev-%s-%06d", g.runID, n),
		Account:  acc.id,
		Currency: cur,
		// Four decimals fit every sample currency; built from integers,
		// never from a float.
		Amount:      events.AmountOf(decimal.New(int64(rng.IntN(2_000_000)+1), -4)),
		Address:     fmt.Sprintf("addr-%s-%06d", g.runID, n),
		Comment:     "sample payout",
		RequestedAt: &now,
	}
	rec, err := events.NewRecord(g.topic, "payoutd/dev", in)
	if err != nil {
		panic(err) // a sample with a time always encodes
	}
	return rec, in.IntentID
}

// invalid returns one intent the batcher must refuse, cycling through the
// reasons a newcomer should see in the DLQ.
func (g *sampleGenerator) invalid(rng *rand.Rand, n int) *kgo.Record {
	id := fmt.Sprintf("dev-%s-bad-%06d", g.runID, n)
	doc := map[string]any{"intentId": id, "account": "acme-eu", "currency": "USDT_TRX", "amount": "12.5", "address": "addr-" + id}
	switch (n / 20) % 4 {
	case 0:
		doc["currency"] = "NOPE" // unknown currency
	case 1:
		doc["amount"] = "1.1234567" // more decimals than USDT_TRX's 6
	case 2:
		doc["account"] = "acme-unknown" // not a configured account
	case 3:
		delete(doc, "address") // breaks the schema
	}
	_ = rng
	value, _ := json.Marshal(doc)
	return &kgo.Record{Key: []byte(id), Value: value}
}

// pace spreads rate intents a second over ticks: 50 ms ticks for rates of
// 20/s and more, else one intent per tick of a second/rate, so a low rate is
// kept, not raised to one intent every 50 ms.
func pace(rate int) (time.Duration, int) {
	const tick = 50 * time.Millisecond
	if rate >= 20 {
		return tick, rate * int(tick/time.Millisecond) / 1000
	}
	return time.Second / time.Duration(max(rate, 1)), 1
}
