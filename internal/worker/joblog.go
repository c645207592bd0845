package worker

import (
	"context"
	"log/slog"
)

// jobLogger returns log with a job's attributes, added when a record is written instead of
// formatted up front as Logger.With does: most attempts write no record, and formatting the
// attributes of every one cost the per-job path about 4% of the worker's CPU.
func jobLogger(log *slog.Logger, attrs ...slog.Attr) *slog.Logger {
	return slog.New(lazyAttrs{h: log.Handler(), attrs: attrs})
}

// lazyAttrs is a handler that adds attrs to each record it handles, as h.WithAttrs(attrs)
// would.
type lazyAttrs struct {
	h     slog.Handler
	attrs []slog.Attr
}

func (l lazyAttrs) Enabled(ctx context.Context, level slog.Level) bool {
	return l.h.Enabled(ctx, level)
}

func (l lazyAttrs) Handle(ctx context.Context, r slog.Record) error {
	return l.h.WithAttrs(l.attrs).Handle(ctx, r)
}

func (l lazyAttrs) WithAttrs(attrs []slog.Attr) slog.Handler {
	return l.h.WithAttrs(l.attrs).WithAttrs(attrs)
}

func (l lazyAttrs) WithGroup(name string) slog.Handler {
	return l.h.WithAttrs(l.attrs).WithGroup(name)
}
