package agents

import (
	"context"
	"errors"
)

// ScheduleCall queues a gateway call (an MCP task tool's upstream call) as a task of
// owner at priority ("" is normal), labelled with the tool: it implements
// gateway.TaskScheduler. run is called when the task starts; dropped when it ends without
// having run (with the scheduler's lock held). cancel ends the task, queued or running.
func (s *Scheduler) ScheduleCall(owner, priority, label string, run func(context.Context), dropped func(error)) (cancel func(), err error) {
	p, err := ParsePriority(priority)
	if err != nil {
		return nil, err
	}
	id, err := s.Submit(Spec{Owner: owner, Priority: p, Label: "tool " + label,
		Run: func(ctx context.Context) (any, error) {
			run(ctx)
			return nil, nil
		},
		OnDrop: func(in Info) {
			err := in.Err
			if err == nil {
				err = errors.New(in.Reason)
			}
			dropped(err)
		},
	})
	if err != nil {
		return nil, err
	}
	return func() { _ = s.Cancel(id, owner, "the call ended") }, nil
}
