package agents

import "fmt"

// State is an agent's place in its lifecycle (the Symbiont runtime's states).
type State string

// Lifecycle states.
const (
	StateInitializing State = "initializing" // definition loaded, not yet checked
	StateReady        State = "ready"        // idle, waiting for its schedule or a run request
	StateRunning      State = "running"      // at least one run in progress
	StateSuspended    State = "suspended"    // stopped by a policy violation, a limit or an operator
	StateTerminated   State = "terminated"   // stopped for good by an operator
	StateFailed       State = "failed"       // its definition could not be loaded or checked
)

// transitions lists every valid lifecycle change.
var transitions = map[State][]State{
	StateInitializing: {StateReady, StateFailed},
	StateReady:        {StateRunning, StateSuspended, StateTerminated, StateInitializing},
	StateRunning:      {StateReady, StateSuspended, StateTerminated, StateFailed},
	// suspended -> ready: resumed with no run to continue (suspended while idle).
	StateSuspended:  {StateRunning, StateReady, StateTerminated},
	StateFailed:     {StateInitializing, StateTerminated},
	StateTerminated: {},
}

// CanTransition reports whether an agent may go from one state to another.
func CanTransition(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// TransitionError is a lifecycle change that is not allowed.
type TransitionError struct {
	Agent    string
	From, To State
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("agent %s: cannot go from %s to %s", e.Agent, e.From, e.To)
}
