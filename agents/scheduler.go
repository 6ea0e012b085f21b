package agents

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// Priority orders queued work: critical before high before normal before low.
type Priority int8

// The priorities, lowest first.
const (
	PriorityLow Priority = iota
	PriorityNormal
	PriorityHigh
	PriorityCritical
	numPriorities
)

var priorityNames = [numPriorities]string{"low", "normal", "high", "critical"}

func (p Priority) String() string {
	if p < 0 || p >= numPriorities {
		return fmt.Sprintf("priority(%d)", int(p))
	}
	return priorityNames[p]
}

// ParsePriority reads "low", "normal", "high" or "critical"; "" is normal.
func ParsePriority(s string) (Priority, error) {
	if s == "" {
		return PriorityNormal, nil
	}
	for i, n := range priorityNames {
		if n == s {
			return Priority(i), nil
		}
	}
	return 0, fmt.Errorf("parse priority %q: want low, normal, high or critical", s)
}

// Resources is an amount of the pool: what a task demands, or what a partition of the
// pool holds. In a capacity, 0 means unlimited for that dimension.
type Resources struct {
	MemoryBytes int64 // bytes
	MilliCPU    int64 // thousandths of a CPU
	Slots       int64 // concurrency units; a task takes one
}

func (r Resources) String() string {
	return fmt.Sprintf("memory=%d cpu=%dm slots=%d", r.MemoryBytes, r.MilliCPU, r.Slots)
}

// Placement chooses the partition of the pool a task runs on.
type Placement int

// Placements.
const (
	// FirstFit places a task on the first partition it fits (in configuration order).
	FirstFit Placement = iota
	// BestFit places a task on the partition it leaves with the least free memory
	// (then CPU, then slots), keeping large holes free for large tasks.
	BestFit
)

// ParsePlacement reads "first_fit" or "best_fit"; "" is first fit.
func ParsePlacement(s string) (Placement, error) {
	switch s {
	case "", "first_fit":
		return FirstFit, nil
	case "best_fit":
		return BestFit, nil
	}
	return 0, fmt.Errorf("parse placement %q: want first_fit or best_fit", s)
}

// TaskState is where a task is in its life.
type TaskState string

// Task states. Queued and running are live; the others are final.
const (
	TaskQueued    TaskState = "queued"
	TaskRunning   TaskState = "running"
	TaskSucceeded TaskState = "succeeded"
	TaskFailed    TaskState = "failed"
	TaskCancelled TaskState = "cancelled"
	// TaskRejected is a queued task pushed out by higher-priority work (or by shutdown)
	// before it ran; its error is a retryable Refusal.
	TaskRejected TaskState = "rejected"
)

// Final reports whether the state is one a task never leaves.
func (s TaskState) Final() bool { return s != TaskQueued && s != TaskRunning }

// Refusal is the scheduler saying no, with a reason: the task was not queued, or was
// pushed out of the queue before it ran. Nothing is dropped silently.
type Refusal struct {
	Reason    string
	Retryable bool
	// RetryAfter suggests when to try again (retryable refusals only).
	RetryAfter time.Duration
}

func (r *Refusal) Error() string {
	if r.Retryable {
		return "scheduler refused the task (retry later): " + r.Reason
	}
	return "scheduler refused the task: " + r.Reason
}

// ErrNotFound is returned for a task id that does not exist, has expired or belongs to
// another owner.
var ErrNotFound = errors.New("task not found")

// Spec is one unit of work to schedule.
type Spec struct {
	Owner    string // identity the task belongs to; fairness is per owner
	Priority Priority
	Demand   Resources // Slots is forced to at least 1
	// Timeout bounds execution; 0 takes the scheduler's MaxExecution.
	Timeout time.Duration
	Label   string // what the task is, for logs (an agent's name, a tool)
	// Run does the work. Its context ends at the timeout, on Cancel and at Close. A
	// panic is recovered and fails the task.
	Run func(ctx context.Context) (any, error)
	// OnDrop, if set, is told when the task ends without having run (cancelled or pushed
	// out while queued, or refused at Close). It is called with the scheduler's lock
	// held: it must not block or call the scheduler.
	OnDrop func(Info)
}

// Info is a snapshot of a task.
type Info struct {
	ID       string        `json:"id"`
	Owner    string        `json:"owner"`
	Label    string        `json:"label,omitempty"`
	Priority string        `json:"priority"`
	State    TaskState     `json:"state"`
	Reason   string        `json:"reason,omitempty"`
	Created  time.Time     `json:"created"`
	Started  time.Time     `json:"started,omitzero"`
	Finished time.Time     `json:"finished,omitzero"`
	Result   any           `json:"-"`
	Err      error         `json:"-"`
	Wait     time.Duration `json:"wait_ns,omitempty"`
}

// Options configures a Scheduler; nil or zero fields take the defaults.
type Options struct {
	MaxRunning int // 0: 64
	MaxQueued  int // 0: 10000
	// TaskTTL is how long a finished task stays readable; 0: 1h.
	TaskTTL time.Duration
	// MaxExecution caps every task's execution time (the pool's execution-time
	// resource); 0: 1h.
	MaxExecution time.Duration
	// Pool lists the partitions of the resource pool; nil: one partition with
	// unlimited memory and CPU.
	Pool      []Resources
	Placement Placement
	Logger    *slog.Logger
	// Registerer receives the scheduler's metrics; nil: none.
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Defaults of the scheduler.
const (
	DefaultMaxRunning   = 64
	DefaultMaxQueued    = 10000
	DefaultTaskTTL      = time.Hour
	DefaultMaxExecution = time.Hour
	// fairScan bounds how many owners one decision looks at, so a decision costs the
	// same with ten thousand owners as with ten.
	fairScan = 64
)

type task struct {
	id      string
	spec    Spec
	seq     uint64
	state   TaskState
	reason  string
	result  any
	err     error
	created time.Time
	started time.Time
	ended   time.Time
	node    int
	cancel  context.CancelFunc
	done    chan struct{}
	oq      *ownerQueue // while queued
}

// ownerQueue is one owner's FIFO of queued tasks at one priority. Removed tasks leave a
// nil behind that the head skips.
type ownerQueue struct {
	owner string
	items []*task
	head  int
	live  int
	elem  *list.Element // in the level's ring
}

func (q *ownerQueue) peek() *task {
	for q.head < len(q.items) && q.items[q.head] == nil {
		q.head++
	}
	if q.head == len(q.items) {
		return nil
	}
	return q.items[q.head]
}

func (q *ownerQueue) remove(t *task) {
	for i := len(q.items) - 1; i >= q.head; i-- {
		if q.items[i] == t {
			q.items[i] = nil
			q.live--
			break
		}
	}
	for len(q.items) > q.head && q.items[len(q.items)-1] == nil {
		q.items = q.items[:len(q.items)-1]
	}
	if q.head > 32 && q.head*2 > len(q.items) { // compact
		q.items = append(q.items[:0], q.items[q.head:]...)
		q.head = 0
	}
}

// level is the queue of one priority: a ring of owners with queued work, served round
// robin (per-owner fairness).
type level struct {
	owners map[string]*ownerQueue
	ring   *list.List // of *ownerQueue with live > 0
	cursor *list.Element
	n      int
}

type node struct {
	capacity, used Resources
}

func (n *node) fits(d Resources) bool {
	ok := func(c, u, x int64) bool { return c == 0 || u+x <= c }
	return ok(n.capacity.MemoryBytes, n.used.MemoryBytes, d.MemoryBytes) &&
		ok(n.capacity.MilliCPU, n.used.MilliCPU, d.MilliCPU) &&
		ok(n.capacity.Slots, n.used.Slots, d.Slots)
}

func (n *node) ever(d Resources) bool {
	ok := func(c, x int64) bool { return c == 0 || x <= c }
	return ok(n.capacity.MemoryBytes, d.MemoryBytes) && ok(n.capacity.MilliCPU, d.MilliCPU) && ok(n.capacity.Slots, d.Slots)
}

func free(c, u int64) int64 {
	if c == 0 {
		return 1 << 62
	}
	return c - u
}

// Scheduler queues tasks by priority and runs them on a resource pool. It owns the
// goroutine of every running task; Close ends them within its deadline.
type Scheduler struct {
	o       Options
	log     *slog.Logger
	metrics *schedMetrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	levels   [numPriorities]level
	queued   int
	running  int
	nodes    []node
	tasks    map[string]*task
	finished []*task // in finishing order, for expiry
	seq      uint64
	stats    Stats
}

// Stats counts what the scheduler has done.
type Stats struct {
	Queued     int            `json:"queued"`
	Running    int            `json:"running"`
	ByPriority map[string]int `json:"queued_by_priority"`
	Submitted  uint64         `json:"submitted"`
	Rejected   uint64         `json:"rejected"`
	Preempted  uint64         `json:"preempted"`
	Completed  uint64         `json:"completed"`
	MaxRunning int            `json:"max_running"`
	MaxQueued  int            `json:"max_queued"`
	Pool       []PoolUse      `json:"pool"`
}

// PoolUse is one partition's capacity and what is in use.
type PoolUse struct {
	Capacity Resources `json:"capacity"`
	Used     Resources `json:"used"`
}

// NewScheduler builds a scheduler; opts may be nil.
func NewScheduler(opts *Options) *Scheduler {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.MaxRunning <= 0 {
		o.MaxRunning = DefaultMaxRunning
	}
	if o.MaxQueued <= 0 {
		o.MaxQueued = DefaultMaxQueued
	}
	if o.TaskTTL <= 0 {
		o.TaskTTL = DefaultTaskTTL
	}
	if o.MaxExecution <= 0 {
		o.MaxExecution = DefaultMaxExecution
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if len(o.Pool) == 0 {
		o.Pool = []Resources{{}}
	}
	s := &Scheduler{o: o, log: o.Logger, tasks: map[string]*task{}}
	for _, c := range o.Pool {
		s.nodes = append(s.nodes, node{capacity: c})
	}
	for i := range s.levels {
		s.levels[i] = level{owners: map[string]*ownerQueue{}, ring: list.New()}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.metrics = newSchedMetrics(o.Registerer)
	return s
}

// Submit queues a task and starts it at once if the pool has room. It returns the task's
// id, or a *Refusal.
func (s *Scheduler) Submit(spec Spec) (string, error) {
	if spec.Run == nil {
		return "", errors.New("submit task: no Run function")
	}
	if spec.Priority < 0 || spec.Priority >= numPriorities {
		return "", fmt.Errorf("submit task: invalid priority %d", spec.Priority)
	}
	if spec.Demand.Slots < 1 {
		spec.Demand.Slots = 1
	}
	if spec.Timeout <= 0 || spec.Timeout > s.o.MaxExecution {
		spec.Timeout = s.o.MaxExecution
	}
	now := s.o.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now)
	if s.closed {
		return "", s.refuse(&Refusal{Reason: "scheduler is shutting down", Retryable: true, RetryAfter: 5 * time.Second}, "closed")
	}
	if !s.couldEverFit(spec.Demand) {
		return "", s.refuse(&Refusal{Reason: fmt.Sprintf("demand (%s) exceeds every partition of the pool", spec.Demand)}, "too_large")
	}
	if s.queued >= s.o.MaxQueued && !s.canStartNow(spec) {
		victim := s.lowestBelow(spec.Priority)
		if victim == nil {
			return "", s.refuse(&Refusal{Reason: fmt.Sprintf("queue is full (max_queued %d)", s.o.MaxQueued), Retryable: true, RetryAfter: time.Second}, "queue_full")
		}
		s.unqueue(victim)
		s.stats.Preempted++
		s.metrics.preempted.Inc()
		s.end(victim, TaskRejected, "", &Refusal{Reason: "pushed out of the queue by higher-priority work", Retryable: true, RetryAfter: time.Second}, now)
	}
	s.seq++
	t := &task{id: uuid.NewString(), spec: spec, seq: s.seq, state: TaskQueued, created: now, done: make(chan struct{})}
	s.tasks[t.id] = t
	s.stats.Submitted++
	s.enqueue(t)
	s.dispatch(now)
	return t.id, nil
}

func (s *Scheduler) refuse(r *Refusal, reason string) error {
	s.stats.Rejected++
	s.metrics.rejected.WithLabelValues(reason).Inc()
	return r
}

func (s *Scheduler) couldEverFit(d Resources) bool {
	for i := range s.nodes {
		if s.nodes[i].ever(d) {
			return true
		}
	}
	return false
}

// canStartNow reports whether spec would start at once (so a full queue does not refuse
// it): nothing of its priority or higher waits and the pool has room.
func (s *Scheduler) canStartNow(spec Spec) bool {
	if s.running >= s.o.MaxRunning {
		return false
	}
	for p := spec.Priority; p < numPriorities; p++ {
		if s.levels[p].n > 0 {
			return false
		}
	}
	return s.place(spec.Demand) >= 0
}

func (s *Scheduler) enqueue(t *task) {
	lv := &s.levels[t.spec.Priority]
	q := lv.owners[t.spec.Owner]
	if q == nil {
		q = &ownerQueue{owner: t.spec.Owner}
		lv.owners[t.spec.Owner] = q
	}
	if q.live == 0 {
		q.elem = lv.ring.PushBack(q)
	}
	q.items = append(q.items, t)
	q.live++
	t.oq = q
	lv.n++
	s.queued++
	s.metrics.queued.WithLabelValues(t.spec.Priority.String()).Inc()
}

// unqueue takes a queued task out of its level.
func (s *Scheduler) unqueue(t *task) {
	lv := &s.levels[t.spec.Priority]
	q := t.oq
	q.remove(t)
	t.oq = nil
	lv.n--
	s.queued--
	s.metrics.queued.WithLabelValues(t.spec.Priority.String()).Dec()
	if q.live == 0 {
		if lv.cursor == q.elem {
			lv.cursor = q.elem.Next()
		}
		lv.ring.Remove(q.elem)
		q.elem = nil
		q.items, q.head = q.items[:0], 0
		delete(lv.owners, q.owner)
	}
}

// lowestBelow finds the queued task to push out for work of priority p: at the lowest
// non-empty priority below p, the newest task of the owner with the most queued.
func (s *Scheduler) lowestBelow(p Priority) *task {
	for lp := PriorityLow; lp < p; lp++ {
		lv := &s.levels[lp]
		if lv.n == 0 {
			continue
		}
		var heaviest *ownerQueue
		for e := lv.ring.Front(); e != nil; e = e.Next() {
			if q := e.Value.(*ownerQueue); heaviest == nil || q.live > heaviest.live {
				heaviest = q
			}
		}
		for i := len(heaviest.items) - 1; i >= heaviest.head; i-- {
			if t := heaviest.items[i]; t != nil {
				return t
			}
		}
	}
	return nil
}

// place returns the partition a demand goes to, or -1.
func (s *Scheduler) place(d Resources) int {
	best := -1
	var bestLeft [3]int64
	for i := range s.nodes {
		n := &s.nodes[i]
		if !n.fits(d) {
			continue
		}
		if s.o.Placement == FirstFit {
			return i
		}
		left := [3]int64{
			free(n.capacity.MemoryBytes, n.used.MemoryBytes) - d.MemoryBytes,
			free(n.capacity.MilliCPU, n.used.MilliCPU) - d.MilliCPU,
			free(n.capacity.Slots, n.used.Slots) - d.Slots,
		}
		if best < 0 || left[0] < bestLeft[0] || left[0] == bestLeft[0] && (left[1] < bestLeft[1] || left[1] == bestLeft[1] && left[2] < bestLeft[2]) {
			best, bestLeft = i, left
		}
	}
	return best
}

// dispatch starts queued tasks while the pool has room. Higher priorities go first;
// within a priority, owners take turns. When the highest waiting priority has nothing
// that fits, lower priorities wait too (their work is held back so the pool frees up
// for the more important task).
func (s *Scheduler) dispatch(now time.Time) {
	for s.running < s.o.MaxRunning && s.queued > 0 && !s.closed {
		t, n := s.pick()
		if t == nil {
			return
		}
		s.start(t, n, now)
	}
}

func (s *Scheduler) pick() (*task, int) {
	for p := numPriorities - 1; p >= 0; p-- {
		lv := &s.levels[p]
		if lv.n == 0 {
			continue
		}
		e := lv.cursor
		for i := 0; i < fairScan && i < lv.ring.Len(); i++ {
			if e == nil {
				e = lv.ring.Front()
			}
			q := e.Value.(*ownerQueue)
			next := e.Next()
			if t := q.peek(); t != nil {
				if n := s.place(t.spec.Demand); n >= 0 {
					lv.cursor = next // the next owner goes first next time
					s.unqueue(t)
					return t, n
				}
			}
			e = next
		}
		return nil, -1
	}
	return nil, -1
}

func (s *Scheduler) start(t *task, n int, now time.Time) {
	nd := &s.nodes[n]
	nd.used.MemoryBytes += t.spec.Demand.MemoryBytes
	nd.used.MilliCPU += t.spec.Demand.MilliCPU
	nd.used.Slots += t.spec.Demand.Slots
	t.node, t.state, t.started = n, TaskRunning, now
	s.running++
	s.metrics.running.Inc()
	s.metrics.wait.WithLabelValues(t.spec.Priority.String()).Observe(now.Sub(t.created).Seconds())
	ctx, cancel := context.WithTimeout(s.ctx, t.spec.Timeout)
	t.cancel = cancel
	s.wg.Add(1)
	go func() { // owned by the scheduler: Close waits for it
		defer s.wg.Done()
		res, err := runSafe(ctx, t.spec.Run)
		cause := ctx.Err()
		cancel()
		s.finish(t, res, err, cause)
	}()
}

func runSafe(ctx context.Context, f func(context.Context) (any, error)) (res any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("task panicked: %v", r)
		}
	}()
	return f(ctx)
}

func (s *Scheduler) finish(t *task, res any, err, cause error) {
	now := s.o.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	nd := &s.nodes[t.node]
	nd.used.MemoryBytes -= t.spec.Demand.MemoryBytes
	nd.used.MilliCPU -= t.spec.Demand.MilliCPU
	nd.used.Slots -= t.spec.Demand.Slots
	s.running--
	s.metrics.running.Dec()
	state, reason := TaskSucceeded, ""
	switch {
	case errors.Is(cause, context.DeadlineExceeded):
		state, reason = TaskFailed, fmt.Sprintf("timed out after %s", t.spec.Timeout)
		if err == nil {
			err = context.DeadlineExceeded
		}
	case t.reason != "": // cancelled by Cancel or Close, which set the reason
		state, reason = TaskCancelled, t.reason
		if err == nil {
			err = context.Canceled
		}
	case err != nil:
		state, reason = TaskFailed, err.Error()
	}
	s.end(t, state, reason, err, now)
	t.result = res
	s.dispatch(now)
}

// end makes a task final. The caller holds mu.
func (s *Scheduler) end(t *task, state TaskState, reason string, err error, now time.Time) {
	if reason == "" && err != nil {
		reason = err.Error()
	}
	t.state, t.reason, t.err, t.ended = state, reason, err, now
	s.stats.Completed++
	s.metrics.done.WithLabelValues(string(state)).Inc()
	s.finished = append(s.finished, t)
	close(t.done)
	if t.started.IsZero() && t.spec.OnDrop != nil {
		t.spec.OnDrop(t.info())
	}
}

// expire forgets finished tasks older than the TTL. The caller holds mu.
func (s *Scheduler) expire(now time.Time) {
	i := 0
	for ; i < len(s.finished) && now.Sub(s.finished[i].ended) > s.o.TaskTTL; i++ {
		delete(s.tasks, s.finished[i].id)
	}
	if i > 0 {
		s.finished = append(s.finished[:0], s.finished[i:]...)
	}
}

func (t *task) info() Info {
	in := Info{ID: t.id, Owner: t.spec.Owner, Label: t.spec.Label, Priority: t.spec.Priority.String(), State: t.state, Reason: t.reason,
		Created: t.created, Started: t.started, Finished: t.ended, Result: t.result, Err: t.err}
	if !t.started.IsZero() {
		in.Wait = t.started.Sub(t.created)
	}
	return in
}

// Get returns a snapshot of the owner's task.
func (s *Scheduler) Get(id, owner string) (Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(s.o.Now())
	t, ok := s.tasks[id]
	if !ok || t.spec.Owner != owner {
		return Info{}, fmt.Errorf("get task %s: %w", id, ErrNotFound)
	}
	return t.info(), nil
}

// Wait blocks until the owner's task is final or ctx ends.
func (s *Scheduler) Wait(ctx context.Context, id, owner string) (Info, error) {
	s.mu.Lock()
	t, ok := s.tasks[id]
	s.mu.Unlock()
	if !ok || t.spec.Owner != owner {
		return Info{}, fmt.Errorf("wait for task %s: %w", id, ErrNotFound)
	}
	select {
	case <-t.done:
	case <-ctx.Done():
		return Info{}, fmt.Errorf("wait for task %s: %w", id, ctx.Err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return t.info(), nil
}

// Cancel ends the owner's task: a queued one at once, a running one through its
// context (it is final when its Run returns).
func (s *Scheduler) Cancel(id, owner, reason string) error {
	if reason == "" {
		reason = "cancelled"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tasks[id]
	if !ok || t.spec.Owner != owner {
		return fmt.Errorf("cancel task %s: %w", id, ErrNotFound)
	}
	switch t.state {
	case TaskQueued:
		s.unqueue(t)
		s.end(t, TaskCancelled, reason, context.Canceled, s.o.Now())
	case TaskRunning:
		if t.reason == "" {
			t.reason = reason
		}
		t.cancel()
	}
	return nil
}

// Stats reports queue and pool use.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Queued, st.Running, st.MaxRunning, st.MaxQueued = s.queued, s.running, s.o.MaxRunning, s.o.MaxQueued
	st.ByPriority = map[string]int{}
	for p := range s.levels {
		st.ByPriority[Priority(p).String()] = s.levels[p].n
	}
	for _, n := range s.nodes {
		st.Pool = append(st.Pool, PoolUse{Capacity: n.capacity, Used: n.used})
	}
	return st
}

// Close refuses new work, rejects what is queued (retryable), cancels what runs and
// waits for it until ctx ends. It is idempotent.
func (s *Scheduler) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		now := s.o.Now()
		for p := range s.levels {
			lv := &s.levels[p]
			for lv.n > 0 {
				q := lv.ring.Front().Value.(*ownerQueue)
				t := q.peek()
				s.unqueue(t)
				s.end(t, TaskRejected, "", &Refusal{Reason: "scheduler is shutting down", Retryable: true, RetryAfter: 5 * time.Second}, now)
			}
		}
		for _, t := range s.tasks {
			if t.state == TaskRunning && t.reason == "" {
				t.reason = "scheduler is shutting down"
			}
		}
		s.cancel()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { // owned by Close: ends when every task goroutine has
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close scheduler: tasks still running: %w", ctx.Err())
	}
}

// Describe renders a refusal or task error for a client.
func Describe(err error) string {
	var r *Refusal
	if errors.As(err, &r) {
		msg := r.Error()
		if r.RetryAfter > 0 {
			msg += fmt.Sprintf(" (retry after %s)", r.RetryAfter)
		}
		return msg
	}
	return strings.TrimSpace(err.Error())
}

type schedMetrics struct {
	queued    *prometheus.GaugeVec
	running   prometheus.Gauge
	wait      *prometheus.HistogramVec
	rejected  *prometheus.CounterVec
	preempted prometheus.Counter
	done      *prometheus.CounterVec
}

func newSchedMetrics(reg prometheus.Registerer) *schedMetrics {
	m := &schedMetrics{
		queued:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "symbi_scheduler_queued", Help: "Tasks waiting in the scheduler's queue, by priority."}, []string{"priority"}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{Name: "symbi_scheduler_running", Help: "Tasks running."}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "symbi_scheduler_wait_seconds", Help: "Time tasks waited in the queue before they started, by priority.",
			Buckets: []float64{.0001, .001, .01, .1, 1, 10, 60, 600}}, []string{"priority"}),
		rejected:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "symbi_scheduler_rejections_total", Help: "Tasks the scheduler refused, by reason."}, []string{"reason"}),
		preempted: prometheus.NewCounter(prometheus.CounterOpts{Name: "symbi_scheduler_preemptions_total", Help: "Queued tasks pushed out by higher-priority work."}),
		done:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "symbi_scheduler_tasks_total", Help: "Tasks that reached a final state, by state."}, []string{"state"}),
	}
	for _, p := range priorityNames {
		m.queued.WithLabelValues(p)
	}
	if reg != nil {
		reg.MustRegister(m.queued, m.running, m.wait, m.rejected, m.preempted, m.done)
	}
	return m
}
