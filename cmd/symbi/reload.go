package main

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/symbi-dev/symbi/agents"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/internal/config"
)

// liveKeys are the configuration keys a SIGHUP applies to a running symbi, besides the
// upstreams ("upstreams.NAME": added, removed or changed ones are started, stopped or
// restarted) and the agents ("agents.NAME": added, removed or changed ones are loaded,
// dropped or reloaded as for a change under agents_dir). Every other key that changed
// needs a restart, and the reload says so.
var liveKeys = map[string]bool{
	"server.tokens": true,
}

// configDiff is what changed between the configuration in force and the file.
type configDiff struct {
	Live    []string // keys applied on reload
	Restart []string // keys that need a restart to take effect
}

// diffConfig compares the configuration in force with a newly loaded one, key by key:
// the fields of each table ([server], [policy], ...) one by one, each [[upstreams]] by
// name ("upstreams.NAME"), each [[agents]] by name ("agents.NAME"), other lists as a whole. A key not known to be live needs a
// restart, so a key added to config.Config later is never silently ignored.
func diffConfig(old, cur *config.Config) configDiff {
	var d configDiff
	add := func(key string) {
		if liveKeys[key] || strings.HasPrefix(key, "upstreams.") || strings.HasPrefix(key, "agents.") {
			d.Live = append(d.Live, key)
		} else {
			d.Restart = append(d.Restart, key)
		}
	}
	ov, cv := reflect.ValueOf(*old), reflect.ValueOf(*cur)
	t := ov.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name := tomlName(f)
		of, cf := ov.Field(i), cv.Field(i)
		switch {
		case name == "upstreams":
			for _, n := range upstreamChanges(old.Upstreams, cur.Upstreams) {
				add("upstreams." + n)
			}
		case name == "agents":
			added, removed, changed := agentChanges(old.Agents, cur.Agents)
			names := slices.Concat(added, removed, changed)
			slices.Sort(names)
			for _, n := range names {
				add("agents." + n)
			}
		case f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(config.Duration{}):
			for j := range f.Type.NumField() {
				if !reflect.DeepEqual(of.Field(j).Interface(), cf.Field(j).Interface()) {
					add(name + "." + tomlName(f.Type.Field(j)))
				}
			}
		default:
			if !reflect.DeepEqual(of.Interface(), cf.Interface()) {
				add(name)
			}
		}
	}
	return d
}

// upstreamChanges names the upstreams added, removed or changed, in order.
func upstreamChanges(old, cur []config.Upstream) []string {
	byName := func(us []config.Upstream) map[string]config.Upstream {
		m := make(map[string]config.Upstream, len(us))
		for _, u := range us {
			m[u.Name] = u
		}
		return m
	}
	om, cm := byName(old), byName(cur)
	var names []string
	for n, u := range om {
		if c, ok := cm[n]; !ok || !reflect.DeepEqual(u, c) {
			names = append(names, n)
		}
	}
	for n := range cm {
		if _, ok := om[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// agentChanges names the [[agents]] added, removed and changed, each sorted.
func agentChanges(old, cur []config.Agent) (added, removed, changed []string) {
	byName := func(as []config.Agent) map[string]config.Agent {
		m := make(map[string]config.Agent, len(as))
		for _, a := range as {
			m[a.Name] = a
		}
		return m
	}
	om, cm := byName(old), byName(cur)
	for n, a := range om {
		c, ok := cm[n]
		switch {
		case !ok:
			removed = append(removed, n)
		case !reflect.DeepEqual(a, c):
			changed = append(changed, n)
		}
	}
	for n := range cm {
		if _, ok := om[n]; !ok {
			added = append(added, n)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	slices.Sort(changed)
	return added, removed, changed
}

func tomlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

// reloadConfig re-reads the configuration file with the same loader as at start-up.
// A file with problems changes nothing: every problem is logged with its key. Otherwise
// the keys that can change live are applied (the bearer tokens), every changed key that
// needs a restart is named in one warning, and the reload is recorded in the audit trail.
// Only the reload goroutine calls it; a.running is the configuration in force.
func (a *app) reloadConfig(ctx context.Context) { a.reloadConfigAs(ctx, "reload (SIGHUP)") }

// reloadConfigAs is reloadConfig, recorded in the audit trail with reason.
func (a *app) reloadConfigAs(ctx context.Context, reason string) {
	if a.configPath == "" {
		return // built-in defaults: nothing to re-read
	}
	cfg, err := config.Load(a.configPath)
	if err == nil {
		err = checkAgentsDir(cfg)
	}
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			for _, p := range ce.Problems {
				a.log.Error("configuration problem", "file", a.configPath, "key", p.Key, "problem", p.Msg)
			}
		}
		a.log.Error("configuration not reloaded; keeping the one in force", "file", a.configPath, "err", err)
		return
	}
	d := diffConfig(a.running, cfg)
	if slices.Contains(d.Live, "server.tokens") {
		tokens := make(map[string]string, len(cfg.Server.Tokens))
		for _, t := range cfg.Server.Tokens {
			tokens[t.Token] = t.Identity
		}
		a.gw.SetTokens(tokens)
		a.running.Server.Tokens = cfg.Server.Tokens
	}
	ups := a.reloadUpstreams(ctx, cfg)
	ags := a.reloadAgents(ctx, cfg) // after the upstreams their steps call
	if len(d.Live) > 0 {
		a.log.Info("configuration reloaded", "file", a.configPath, "applied", strings.Join(d.Live, ", "))
	} else {
		a.log.Info("configuration reloaded; no live key changed", "file", a.configPath)
	}
	if len(d.Restart) > 0 {
		a.log.Warn("configuration change needs a restart: "+strings.Join(d.Restart, ", "), "file", a.configPath)
	}
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ev := audit.Event{Type: audit.TypeConfigLoaded, Reason: reason, Detail: map[string]string{
		"applied": strings.Join(d.Live, ","), "needs_restart": strings.Join(d.Restart, ","),
		"upstreams_added": strings.Join(ups.added, ","), "upstreams_removed": strings.Join(ups.removed, ","),
		"upstreams_restarted": strings.Join(ups.restarted, ","), "upstreams_failed": strings.Join(ups.failed, ","),
		"agents_added": strings.Join(ags.added, ","), "agents_removed": strings.Join(ags.removed, ","),
		"agents_changed": strings.Join(ags.changed, ","), "agents_failed": strings.Join(ags.failed, ",")}}
	var notApplied []string
	if len(ups.failed) > 0 {
		notApplied = append(notApplied, "upstreams not applied: "+strings.Join(ups.failed, ","))
	}
	if len(ags.failed) > 0 {
		notApplied = append(notApplied, "agents not applied: "+strings.Join(ags.failed, ","))
	}
	if len(notApplied) > 0 {
		ev.Outcome, ev.Error = audit.OutcomeInvalid, strings.Join(notApplied, "; ")
	}
	if err := a.rt.audit.Append(actx, ev); err != nil {
		a.log.Error("append audit event", "type", string(audit.TypeConfigLoaded), "err", err)
	}
}

// upstreamReload is what a reload did to the upstreams, by name.
type upstreamReload struct {
	added, removed, restarted, failed []string
}

// reloadUpstreams makes the running upstreams match cfg: the added ones are started,
// the removed ones stopped (their tools withdrawn) and the changed ones restarted;
// clients are told their lists changed. An upstream that cannot be set up (a sandbox
// tier without an image, a manifest that cannot be fetched) keeps its previous state and
// is reported as failed; a.running records what is in force.
func (a *app) reloadUpstreams(ctx context.Context, cfg *config.Config) upstreamReload {
	var r upstreamReload
	names := upstreamChanges(a.running.Upstreams, cfg.Upstreams)
	if len(names) == 0 {
		return r
	}
	find := func(us []config.Upstream, name string) (config.Upstream, bool) {
		for _, u := range us {
			if u.Name == name {
				return u, true
			}
		}
		return config.Upstream{}, false
	}
	pins := maps.Clone(*a.rt.pins.Load())
	var remove []string
	var add []gateway.UpstreamConfig
	applied := map[string]bool{}
	for _, name := range names {
		old, hadOld := find(a.running.Upstreams, name)
		cur, hasCur := find(cfg.Upstreams, name)
		wasOn, isOn := hadOld && !old.Disabled, hasCur && !cur.Disabled
		if isOn {
			uc, po, err := a.rt.upstreamConfig(ctx, cfg, cur, a.log)
			if err != nil {
				a.log.Error("upstream not applied; keeping it as it was", "upstream", name, "err", err)
				r.failed = append(r.failed, name)
				continue
			}
			add = append(add, uc)
			pins[name] = po
		} else {
			delete(pins, name)
		}
		if wasOn {
			remove = append(remove, name)
		}
		applied[name] = true
		switch {
		case wasOn && isOn:
			r.restarted = append(r.restarted, name)
		case isOn:
			r.added = append(r.added, name)
		case wasOn:
			r.removed = append(r.removed, name)
		}
	}
	// Tiers chosen by risk assessment for the new upstreams.
	for _, ev := range a.rt.tierEvents {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := a.rt.audit.Append(actx, ev); err != nil {
			a.log.Error("append audit event", "type", string(ev.Type), "err", err)
		}
		cancel()
	}
	a.rt.tierEvents = nil
	// The new settings are in place before a new upstream lists its tools.
	a.rt.pins.Store(&pins)
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := a.gw.UpdateUpstreams(sctx, remove, add); err != nil {
		a.log.Error("upstreams not applied", "err", err)
		return upstreamReload{failed: names}
	}
	// What is in force: the new configuration's upstreams, except those not applied,
	// which stay as they were.
	var next []config.Upstream
	for _, u := range cfg.Upstreams {
		if applied[u.Name] || !slices.Contains(names, u.Name) {
			next = append(next, u)
		} else if old, ok := find(a.running.Upstreams, u.Name); ok {
			next = append(next, old)
		}
	}
	for _, u := range a.running.Upstreams {
		if _, ok := find(cfg.Upstreams, u.Name); !ok && !applied[u.Name] {
			next = append(next, u)
		}
	}
	a.running.Upstreams = next
	if len(r.added)+len(r.removed)+len(r.restarted) > 0 {
		a.log.Info("upstreams reloaded", "added", strings.Join(r.added, ","), "removed", strings.Join(r.removed, ","),
			"restarted", strings.Join(r.restarted, ","))
	}
	return r
}

// agentReload is what a reload did to the [[agents]] of the main file, by name.
type agentReload struct {
	added, removed, changed, failed []string
}

// reloadAgents puts the [[agents]] of cfg in force through the agents' runtime, as an
// agents_dir change does: added agents are loaded and their schedules start, removed
// ones are dropped (each recorded as agent.state "removed"), changed ones are reloaded
// keeping a suspended or terminated state. Definitions that cannot be put together
// change nothing and are all reported as failed; an agent that was put in force but
// could not be loaded is failed (its state says why). a.running records what is in force.
func (a *app) reloadAgents(ctx context.Context, cfg *config.Config) agentReload {
	var r agentReload
	r.added, r.removed, r.changed = agentChanges(a.running.Agents, cfg.Agents)
	if len(r.added)+len(r.removed)+len(r.changed) == 0 || a.rt.agents == nil {
		return agentReload{}
	}
	applied, err := a.rt.agents.setAgents(ctx, cfg.Agents)
	if !applied {
		a.log.Error("agents not applied; keeping them as they were", "err", err)
		return agentReload{failed: slices.Sorted(slices.Values(slices.Concat(r.added, r.removed, r.changed)))}
	}
	a.running.Agents = cfg.Agents
	if err != nil {
		a.log.Error("agents reloaded with problems", "err", err)
		touched := slices.Concat(r.added, r.changed)
		for _, st := range a.rt.agents.rt.List() {
			if st.State == agents.StateFailed && slices.Contains(touched, st.Name) {
				r.failed = append(r.failed, st.Name)
			}
		}
		slices.Sort(r.failed)
	}
	a.log.Info("agents reloaded", "added", strings.Join(r.added, ","), "removed", strings.Join(r.removed, ","),
		"changed", strings.Join(r.changed, ","))
	return r
}
