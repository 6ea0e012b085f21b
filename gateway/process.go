package gateway

import (
	"context"
	"io"
)

// Process is a running upstream command: its stdio carries MCP.
type Process interface {
	Stdin() io.WriteCloser
	Stdout() io.ReadCloser
	// Wait blocks until the process has exited and describes how it ended.
	Wait() error
	// Stop ends the process: stdin is closed first, then it is signalled, then killed.
	// It is idempotent and bounded by ctx.
	Stop(ctx context.Context) error
	// Tier names the sandbox tier the process runs in ("none" for a host process).
	Tier() string
}

// ProcessStats is one sample of a process's resource use.
type ProcessStats struct {
	CPUSeconds  float64
	MemoryBytes uint64
	MemoryLimit uint64
	ReadBytes   uint64
	WriteBytes  uint64
}

// StatsProcess is a Process that can report its resource use (the sandbox tiers).
type StatsProcess interface {
	Process
	Stats(ctx context.Context) (ProcessStats, error)
}

// Launcher starts an upstream's command, on the host or in a sandbox tier.
type Launcher func(ctx context.Context) (Process, error)
