package main

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/internal/config"
)

// liveKeys are the configuration keys a SIGHUP applies to a running symbi. Every other
// key that changed needs a restart, and the reload says so.
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
// name ("upstreams.NAME"), other lists as a whole. A key not known to be live needs a
// restart, so a key added to config.Config later is never silently ignored.
func diffConfig(old, cur *config.Config) configDiff {
	var d configDiff
	add := func(key string) {
		if liveKeys[key] {
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
func (a *app) reloadConfig(ctx context.Context) {
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
	ev := audit.Event{Type: audit.TypeConfigLoaded, Reason: "reload (SIGHUP)", Detail: map[string]string{
		"applied": strings.Join(d.Live, ","), "needs_restart": strings.Join(d.Restart, ",")}}
	if err := a.rt.audit.Append(actx, ev); err != nil {
		a.log.Error("append audit event", "type", string(audit.TypeConfigLoaded), "err", err)
	}
}
