package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/internal/tracing"
)

// useTracing reads the OTEL_* environment and, when it configures an OTLP endpoint,
// makes gw trace every request and export the spans; the returned closer flushes them
// (at shutdown). With tracing off it does nothing and returns a no-op closer.
func useTracing(ctx context.Context, gw *gateway.Gateway, log *slog.Logger) (func() error, error) {
	cfg, err := tracing.FromEnv(os.Getenv)
	if err != nil {
		return nil, err
	}
	p, err := tracing.Start(ctx, cfg, version)
	if err != nil || p == nil {
		return func() error { return nil }, err
	}
	tracing.SetLogger(log.With("component", "tracing"))
	gw.UseTracing(p.TracerProvider())
	log.Info("tracing on", "exporter", cfg.String())
	return func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return p.Shutdown(sctx)
	}, nil
}

// doctorTracing reports the tracing configuration and, when it is on, whether its
// endpoint answers.
func doctorTracing(ctx context.Context, check func(string, error, string)) {
	cfg, err := tracing.FromEnv(os.Getenv)
	if err != nil {
		check("tracing (OTEL_*)", err, "")
		return
	}
	if !cfg.Enabled {
		check("tracing (OTEL_*)", nil, cfg.String())
		return
	}
	if err := tracing.Reach(ctx, cfg, 3*time.Second); err != nil {
		check("tracing (OTEL_*)", fmt.Errorf("%s: %w", cfg, err), "")
		return
	}
	check("tracing (OTEL_*)", nil, cfg.String()+" (endpoint reachable)")
}
