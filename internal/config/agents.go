package config

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/symbi-dev/symbi/internal/cronspec"
)

// Scheduler configures the queue and resource pool that tasks and agent runs share.
type Scheduler struct {
	MaxRunning int      `toml:"max_running"` // 0: 64
	MaxQueued  int      `toml:"max_queued"`  // 0: 10000
	TaskTTL    Duration `toml:"task_ttl"`    // 0: 1h
	// InputTimeout is how long a task may wait for the client's input (status
	// input_required) before it fails and its upstream call is cancelled; 0: 10m.
	InputTimeout Duration `toml:"input_timeout"`
	// MaxExecution caps every task's and run's execution time; 0: 1h.
	MaxExecution Duration `toml:"max_execution"`
	Placement    string   `toml:"placement"` // first_fit (default) or best_fit
	// Pool lists the partitions of the resource pool; none: one with unlimited memory
	// and CPU.
	Pool []PoolPartition `toml:"pool"`
}

// PoolPartition is one partition of the scheduler's resource pool; 0 = unlimited.
type PoolPartition struct {
	Memory Bytes   `toml:"memory"`
	CPUs   float64 `toml:"cpus"`
	Slots  int64   `toml:"slots"`
}

// Agent is one agent definition, in [[agents]] or a file under agents_dir.
type Agent struct {
	Name     string      `toml:"name"`
	Kind     string      `toml:"kind"`     // workflow (default) or container
	Schedule string      `toml:"schedule"` // six-field cron, @descriptor or RFC 3339 time; "" = on demand
	Timezone string      `toml:"timezone"` // IANA zone for the schedule; "" = UTC
	Jitter   Duration    `toml:"jitter"`
	Missed   string      `toml:"missed"`   // skip (default) or run_once
	Priority string      `toml:"priority"` // low, normal (default), high, critical
	Identity string      `toml:"identity"` // "" = agent:<name>
	Limits   AgentLimits `toml:"limits"`
	Steps    []Step      `toml:"steps"`
	// Container agents: a command in an image, run in a sandbox tier with no network,
	// whose stdio is an MCP session into symbi as the agent.
	Image   string            `toml:"image"`
	Command []string          `toml:"command"` // empty: the image's entrypoint
	Sandbox string            `toml:"sandbox"` // docker (default) or gvisor; none runs command on the host (development)
	Env     map[string]string `toml:"env"`

	// File is where the definition came from (not a key).
	File string `toml:"-"`
}

// AgentLimits bound one agent's runs.
type AgentLimits struct {
	Timeout       Duration `toml:"timeout"`        // per run; 0 = [scheduler] max_execution
	Memory        Bytes    `toml:"memory"`         // reserved from the pool per run
	CPUs          float64  `toml:"cpus"`           // reserved from the pool per run
	MaxConcurrent int      `toml:"max_concurrent"` // runs at once; 0 = 1
}

// Step is one tool call of a workflow agent.
type Step struct {
	Tool string `toml:"tool"`
	// Arguments are the call's arguments; string values are text/template templates
	// over the results saved by earlier steps ({{ .doc.text }}).
	Arguments map[string]any `toml:"arguments"`
	Save      string         `toml:"save"`    // name the result is saved under
	When      string         `toml:"when"`    // a template; the step is skipped when it renders empty, false, 0 or no
	Retries   int            `toml:"retries"` // extra attempts after a tool error
	Backoff   Duration       `toml:"backoff"` // before the first retry, doubling; 0 = 1s
	Timeout   Duration       `toml:"timeout"` // per attempt; 0 = the run's
}

// Bytes is a size written "256m", "1g", "512k" or a plain number of bytes.
type Bytes int64

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *Bytes) UnmarshalText(t []byte) error {
	v, err := ParseBytes(string(t))
	if err != nil {
		return err
	}
	*b = Bytes(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (b Bytes) MarshalText() ([]byte, error) { return []byte(strconv.FormatInt(int64(b), 10)), nil }

// ParseBytes reads a size: a number with an optional k, m or g suffix (powers of 1024).
func ParseBytes(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "b")
	mult := int64(1)
	switch {
	case strings.HasSuffix(t, "k"):
		mult, t = 1<<10, t[:len(t)-1]
	case strings.HasSuffix(t, "m"):
		mult, t = 1<<20, t[:len(t)-1]
	case strings.HasSuffix(t, "g"):
		mult, t = 1<<30, t[:len(t)-1]
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("parse size %q: want a number with an optional k, m or g suffix", s)
	}
	return n * mult, nil
}

var (
	agentNameRE = nameRE
	agentKinds  = []string{"workflow", "container"}
	agentTiers  = []string{"docker", "gvisor", "none"}
	priorities  = []string{"", "low", "normal", "high", "critical"}
	toolNameRE  = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)
	saveNameRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// AgentIdentity is the identity an agent acts as.
func (a *Agent) AgentIdentity() string {
	if a.Identity != "" {
		return a.Identity
	}
	return "agent:" + a.Name
}

// agentFile is what a file under agents_dir holds: [[agents]] tables.
type agentFile struct {
	Agents []Agent `toml:"agents"`
}

// LoadAgentsDir reads every *.toml file under dir (not recursively), in name order. Each
// holds [[agents]] tables; every problem is reported with its file and key.
func LoadAgentsDir(dir string) ([]Agent, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.toml"))
	if err != nil {
		return nil, fmt.Errorf("list agents dir %s: %w", dir, err)
	}
	sort.Strings(files)
	var out []Agent
	var probs []Problem
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read agent file: %w", err)
		}
		as, fp := ParseAgentFile(f, data)
		probs = append(probs, fp...)
		out = append(out, as...)
	}
	probs = append(probs, duplicateAgents(out, "")...)
	if len(probs) > 0 {
		return nil, &Error{File: dir, Problems: probs}
	}
	return out, nil
}

// ParseAgentFile decodes and checks one agents file; problems name the file and key.
func ParseAgentFile(file string, data []byte) ([]Agent, []Problem) {
	var af agentFile
	base := filepath.Base(file)
	probs, ok := decodeAll(data, &af)
	for i := range probs {
		probs[i].Key = base + ": " + probs[i].Key
	}
	if !ok {
		return nil, probs
	}
	for i := range af.Agents {
		af.Agents[i].File = file
		probs = append(probs, validateAgent(fmt.Sprintf("%s: agents[%d]", base, i), &af.Agents[i])...)
	}
	return af.Agents, probs
}

func duplicateAgents(as []Agent, prefix string) []Problem {
	var probs []Problem
	seen := map[string]int{}
	for i, a := range as {
		if j, dup := seen[a.Name]; dup && a.Name != "" {
			where := fmt.Sprintf("agents[%d]", j)
			if as[j].File != "" {
				where = filepath.Base(as[j].File)
			}
			key := fmt.Sprintf("%sagents[%d].name", prefix, i)
			if a.File != "" {
				key = filepath.Base(a.File) + ": name " + a.Name
			}
			probs = append(probs, Problem{Key: key, Msg: fmt.Sprintf("duplicates the agent in %s", where)})
			continue
		}
		seen[a.Name] = i
	}
	return probs
}

// validateAgents checks [scheduler] and [[agents]].
func (c *Config) validateAgents() []Problem {
	var probs []Problem
	add := func(key, format string, args ...any) {
		probs = append(probs, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	s := c.Scheduler
	if s.MaxRunning < 0 {
		add("scheduler.max_running", "must not be negative")
	}
	if s.MaxQueued < 0 {
		add("scheduler.max_queued", "must not be negative")
	}
	if s.TaskTTL.Duration < 0 {
		add("scheduler.task_ttl", "must not be negative")
	}
	if s.MaxExecution.Duration < 0 {
		add("scheduler.max_execution", "must not be negative")
	}
	if s.InputTimeout.Duration < 0 {
		add("scheduler.input_timeout", "must not be negative")
	}
	if s.Placement != "" && s.Placement != "first_fit" && s.Placement != "best_fit" {
		add("scheduler.placement", `must be "first_fit" or "best_fit"`)
	}
	for i, p := range s.Pool {
		if p.CPUs < 0 {
			add(fmt.Sprintf("scheduler.pool[%d].cpus", i), "must not be negative")
		}
		if p.Slots < 0 {
			add(fmt.Sprintf("scheduler.pool[%d].slots", i), "must not be negative")
		}
	}
	for i := range c.Agents {
		probs = append(probs, validateAgent(fmt.Sprintf("agents[%d]", i), &c.Agents[i])...)
	}
	probs = append(probs, duplicateAgents(c.Agents, "")...)
	probs = append(probs, c.AgentIdentityProblems(c.Agents)...)
	return probs
}

func validateAgent(key string, a *Agent) []Problem {
	var probs []Problem
	add := func(k, format string, args ...any) {
		probs = append(probs, Problem{Key: key + k, Msg: fmt.Sprintf(format, args...)})
	}
	if !agentNameRE.MatchString(a.Name) {
		add(".name", "must match [a-z0-9_-]{1,32} (got %q)", a.Name)
	}
	if a.Kind == "" {
		a.Kind = "workflow"
	}
	if !slices.Contains(agentKinds, a.Kind) {
		add(".kind", `must be "workflow" or "container"`)
	}
	if a.Kind == "container" {
		if a.Sandbox != "" && !slices.Contains(agentTiers, a.Sandbox) {
			add(".sandbox", `must be "docker", "gvisor" or "none"`)
		}
		if a.Image == "" && a.Sandbox != "none" {
			add(".image", "a container agent needs an image")
		}
		if a.Sandbox == "none" && len(a.Command) == 0 {
			add(".command", `is required with sandbox = "none"`)
		}
		if len(a.Steps) > 0 {
			add(".steps", "a container agent has no steps")
		}
		for k := range a.Env {
			if k == "" || strings.ContainsAny(k, "=\x00") || strings.HasPrefix(k, "SYMBI_") {
				add(".env", "invalid name %q (SYMBI_* names are set by symbi)", k)
			}
		}
	} else if a.Image != "" || len(a.Command) > 0 || a.Sandbox != "" || len(a.Env) > 0 {
		add(".kind", `image, command, sandbox and env are for kind = "container"`)
	}
	if a.Schedule != "" {
		if _, err := cronspec.Parse(a.Schedule, a.Timezone); err != nil {
			add(".schedule", "%v", err)
		}
	} else if a.Timezone != "" || a.Jitter.Duration != 0 || a.Missed != "" {
		add(".schedule", "is required with timezone, jitter or missed")
	}
	if a.Jitter.Duration < 0 {
		add(".jitter", "must not be negative")
	}
	if a.Missed != "" && a.Missed != "skip" && a.Missed != "run_once" {
		add(".missed", `must be "skip" or "run_once"`)
	}
	if !slices.Contains(priorities, a.Priority) {
		add(".priority", "must be low, normal, high or critical")
	}
	if a.Identity != "" && strings.TrimSpace(a.Identity) != a.Identity {
		add(".identity", "must not start or end with spaces")
	}
	if a.Limits.Timeout.Duration < 0 {
		add(".limits.timeout", "must not be negative")
	}
	if a.Limits.CPUs < 0 {
		add(".limits.cpus", "must not be negative")
	}
	if a.Limits.MaxConcurrent < 0 {
		add(".limits.max_concurrent", "must not be negative")
	}
	if a.Kind == "workflow" && len(a.Steps) == 0 {
		add(".steps", "a workflow agent needs at least one step")
	}
	saved := map[string]bool{}
	for i, st := range a.Steps {
		sk := fmt.Sprintf(".steps[%d]", i)
		if st.Tool == "" {
			add(sk+".tool", "is required")
		} else if !toolNameRE.MatchString(st.Tool) {
			add(sk+".tool", "is not a tool name (got %q)", st.Tool)
		}
		if st.Save != "" && !saveNameRE.MatchString(st.Save) {
			add(sk+".save", "must be a template identifier [A-Za-z_][A-Za-z0-9_]* (got %q)", st.Save)
		} else if saved[st.Save] {
			add(sk+".save", "reuses the name %q of an earlier step", st.Save)
		}
		if st.Save != "" {
			saved[st.Save] = true
		}
		if st.When != "" {
			if _, err := template.New("when").Option("missingkey=error").Parse(st.When); err != nil {
				add(sk+".when", "%v", err)
			}
		}
		for _, p := range templateProblems(st.Arguments, sk+".arguments") {
			probs = append(probs, Problem{Key: key + p.Key, Msg: p.Msg})
		}
		if st.Retries < 0 || st.Retries > 10 {
			add(sk+".retries", "must be between 0 and 10")
		}
		if st.Backoff.Duration < 0 {
			add(sk+".backoff", "must not be negative")
		}
		if st.Timeout.Duration < 0 {
			add(sk+".timeout", "must not be negative")
		}
	}
	return probs
}

func templateProblems(v any, key string) []Problem {
	switch x := v.(type) {
	case string:
		if strings.Contains(x, "{{") {
			if _, err := template.New("arg").Option("missingkey=error").Parse(x); err != nil {
				return []Problem{{Key: key, Msg: err.Error()}}
			}
		}
	case map[string]any:
		var out []Problem
		for _, k := range slices.Sorted(func(yield func(string) bool) {
			for k := range x {
				if !yield(k) {
					return
				}
			}
		}) {
			out = append(out, templateProblems(x[k], key+"."+k)...)
		}
		return out
	case []any:
		var out []Problem
		for i, e := range x {
			out = append(out, templateProblems(e, fmt.Sprintf("%s[%d]", key, i))...)
		}
		return out
	}
	return nil
}

// AgentIdentityProblems reports agents that would act as the identity of a client token,
// so that policy and audit can never mistake one for the other.
func (c *Config) AgentIdentityProblems(as []Agent) []Problem {
	clients := map[string]bool{}
	for _, t := range c.Server.Tokens {
		clients[t.Identity] = true
	}
	var probs []Problem
	for i, a := range as {
		if id := a.AgentIdentity(); clients[id] {
			key := fmt.Sprintf("agents[%d].identity", i)
			if a.File != "" {
				key = filepath.Base(a.File) + ": name " + a.Name + ": identity"
			}
			probs = append(probs, Problem{Key: key, Msg: fmt.Sprintf("%q is the identity of a server.tokens client", id)})
		}
	}
	return probs
}
