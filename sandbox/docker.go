package sandbox

import (
	"context"
	"fmt"

	"github.com/moby/moby/client"
)

type dockerRunner struct {
	cli  *client.Client
	opts Options
}

func newDockerRunner(o Options) (*dockerRunner, error) {
	return nil, fmt.Errorf("connect docker: not implemented: %w", ErrUnavailable)
}

func (d *dockerRunner) Start(ctx context.Context, spec Spec) (Process, error) {
	return nil, ErrUnavailable
}
func (d *dockerRunner) available(ctx context.Context, tier Tier) error { return ErrUnavailable }
func (d *dockerRunner) reap(ctx context.Context, own bool) (int, error) {
	return 0, ErrUnavailable
}
