package tracing

import (
	"context"
	"log/slog"
	"sync/atomic"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// loggingExporter tells the process's logger when exports start to fail and
// when they work again, once each, instead of handing every failed batch to
// otel's global error handler, which prints it unstructured. The spans of a
// failed batch are dropped either way.
type loggingExporter struct {
	sdktrace.SpanExporter
	logger   *slog.Logger
	endpoint string
	failing  atomic.Bool
}

func (e *loggingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	if err != nil {
		if !e.failing.Swap(true) {
			e.logger.Warn("cannot export traces; spans are dropped until the collector answers",
				"otlp_endpoint", e.endpoint, "spans", len(spans), "error", err)
		}
		return nil
	}
	if e.failing.Swap(false) {
		e.logger.Info("exporting traces again", "otlp_endpoint", e.endpoint)
	}
	return nil
}
