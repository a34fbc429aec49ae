package main

import (
	"context"
	"log/slog"
)

// clientChatter demotes a library's info lines to debug. franz-go logs
// three info lines per transaction (and one per connection, group join and
// metadata refresh): at the default level they were 65–90% of payoutd's
// lines and drowned the one line per business event. Its warnings and
// errors keep their level.
type clientChatter struct{ slog.Handler }

func (h clientChatter) level(l slog.Level) slog.Level {
	if l == slog.LevelInfo {
		return slog.LevelDebug
	}
	return l
}

func (h clientChatter) Enabled(ctx context.Context, l slog.Level) bool {
	return h.Handler.Enabled(ctx, h.level(l))
}

func (h clientChatter) Handle(ctx context.Context, r slog.Record) error {
	r.Level = h.level(r.Level)
	return h.Handler.Handle(ctx, r)
}

func (h clientChatter) WithAttrs(as []slog.Attr) slog.Handler {
	return clientChatter{h.Handler.WithAttrs(as)}
}

func (h clientChatter) WithGroup(name string) slog.Handler {
	return clientChatter{h.Handler.WithGroup(name)}
}

// kafkaLogger is the logger franz-go writes to.
func kafkaLogger(log *slog.Logger) *slog.Logger {
	return slog.New(clientChatter{log.Handler()}).With("component", "kafka")
}
