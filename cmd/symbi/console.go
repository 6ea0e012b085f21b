package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/symbi-dev/symbi/agents"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/internal/config"
	"github.com/symbi-dev/symbi/internal/console"
)

// mountConsole serves the web console at /ui on the main listener, behind the gateway's
// own authentication (internal/console).
func (rt *runtime) mountConsole(gw *gateway.Gateway, tasks *gateway.SQLTaskStore, log *slog.Logger) error {
	o := console.Options{
		Logger:       log.With("component", "console"),
		Authenticate: gw.Authenticate,
		Policy:       rt.policy,
		Audit:        rt.audit,
		Quarantine:   rt.gate.Quarantine(),
		AuditStream:  rt.audit.Handler(),
		Upstreams:    func() []console.Upstream { return consoleUpstreams(gw) },
		Refresh:      gw.Refresh,
		Tasks:        console.TasksFrom(tasks),
	}
	if ar := rt.agents; ar != nil {
		o.Agents = func(ctx context.Context) []agents.Status {
			list := ar.rt.List()
			for i := range list {
				if st, err := ar.rt.Get(ctx, list[i].Name, 5); err == nil {
					list[i] = st
				}
			}
			return list
		}
		o.Scheduler = ar.sched.Stats
	}
	c, err := console.New(o)
	if err != nil {
		return fmt.Errorf("build web console: %w", err)
	}
	for path, h := range c.Routes() {
		rt.http.Public[path] = h
	}
	return nil
}

// consoleUpstreams is every upstream's status with its tools counted by verification.
func consoleUpstreams(gw *gateway.Gateway) []console.Upstream {
	verif := map[string]map[string]int{}
	for _, t := range gw.ToolList() {
		if t.Builtin {
			continue
		}
		if verif[t.Upstream] == nil {
			verif[t.Upstream] = map[string]int{}
		}
		verif[t.Upstream][t.Verification.Status]++
	}
	var out []console.Upstream
	for _, st := range gw.Status() {
		out = append(out, console.Upstream{UpstreamStatus: st, Verification: verif[st.Name]})
	}
	return out
}

// consoleDoctor describes the web console of cfg for `symbi doctor`: where it is, how a
// browser signs in, and a warning when sign-in would travel in clear.
func consoleDoctor(cfg *config.Config) (detail, warning string) {
	scheme := "http"
	if cfg.Server.TLSCert != "" {
		scheme = "https"
	}
	var how []string
	if len(cfg.Server.Tokens) > 0 {
		how = append(how, "a [[server.tokens]] token")
	}
	if cfg.OAuth.Enabled() {
		how = append(how, "an OAuth access token")
	}
	if cfg.Server.TLSClientCA != "" {
		how = append(how, "a client certificate")
	}
	signIn := "no tokens: local browsers only, no sign-in"
	if len(how) > 0 {
		signIn = "sign in with " + strings.Join(how, " or ")
	}
	detail = fmt.Sprintf("%s://%s/ui/ (symbi serve; %s; policy actions console/view, tools/approve, tools/reject)", scheme, dialable(cfg.Server.Listen), signIn)
	host, _, err := net.SplitHostPort(cfg.Server.Listen)
	ip := net.ParseIP(host)
	loopback := err == nil && (host == "localhost" || (ip != nil && ip.IsLoopback()))
	if scheme == "http" && !loopback {
		warning = "plain HTTP on a non-loopback address: the console's sign-in token and session cookie travel in clear (set server.tls_cert or terminate TLS in front)"
	}
	return detail, warning
}
