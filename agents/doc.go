// Package agents is symbi's runtime half: a scheduler that queues units of work by
// priority and places them on a resource pool, cron schedules that survive restarts,
// and the agents it runs — named units of work with their own identity, a lifecycle
// (initializing, ready, running, suspended, terminated, failed) and limits.
//
// It owns the queue, the pool, the schedules, the agents' state and their runs (kept in
// the SQLite state file it is handed). It does not decide policy, verify tools or write
// the audit trail itself: a workflow agent's tool calls go back through the gateway's
// chain (a ToolCaller the caller supplies), and lifecycle changes are handed to an
// audit Recorder.
package agents
