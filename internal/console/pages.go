package console

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/policy"
	"github.com/symbi-dev/symbi/schemapin"
)

// loginForm shows the sign-in form. It is open: it shows nothing but the form.
func (c *Console) loginForm(w http.ResponseWriter, r *http.Request) {
	c.render(w, nil, http.StatusOK, "login", "Sign in", map[string]any{})
}

// login checks the posted token with the gateway's authentication, exactly as /mcp
// would check it as a bearer token, and starts a console session for its identity.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		c.render(w, nil, http.StatusBadRequest, "login", "Sign in", map[string]any{"Error": "the form could not be read"})
		return
	}
	token := strings.TrimSpace(r.PostForm.Get("token"))
	if token == "" || strings.ContainsAny(token, " \t\r\n") {
		c.render(w, nil, http.StatusBadRequest, "login", "Sign in", map[string]any{"Error": "enter a token"})
		return
	}
	r2 := r.Clone(r.Context())
	r2.Header.Set("Authorization", "Bearer "+token)
	fw := &failWriter{ResponseWriter: w}
	c.o.Authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := gateway.RequestIdentity(r)
		se := c.sessions.create(token, id.ID)
		setCookie(w, r, se.id, int(c.o.SessionTTL.Seconds()))
		c.record(audit.Event{Type: audit.TypeSessionOpened, Identity: id.ID, IdentityKind: id.Kind, Transport: "console", Source: r.RemoteAddr})
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
	})).ServeHTTP(fw, r2)
	if fw.status != 0 {
		// The gateway's refusal: its status and challenge stay, the form comes back.
		c.render(w, nil, fw.status, "login", "Sign in", map[string]any{"Error": "the token was refused"})
	}
}

// failWriter holds back an error answer (status >= 400) so the caller can replace
// its body; the headers already set (a WWW-Authenticate challenge) stay.
type failWriter struct {
	http.ResponseWriter
	status int
}

func (f *failWriter) WriteHeader(code int) {
	if code >= 400 {
		f.status = code
		return
	}
	f.ResponseWriter.WriteHeader(code)
}

func (f *failWriter) Write(b []byte) (int, error) {
	if f.status != 0 {
		return len(b), nil
	}
	return f.ResponseWriter.Write(b)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, q *request) {
	if !c.sessions.csrfOK(q.identity.ID, q.sid(), r.PostFormValue("csrf")) {
		c.message(w, r, q, http.StatusForbidden, "Refused", csrfRefusal)
		return
	}
	if q.session != nil {
		c.sessions.drop(q.session.id)
		c.record(audit.Event{Type: audit.TypeSessionClosed, Identity: q.identity.ID, IdentityKind: q.identity.Kind, Transport: "console", Source: r.RemoteAddr})
	}
	setCookie(w, r, "", -1)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

const csrfRefusal = "The form's anti-forgery token is missing or stale: it was not sent from this console session. Reload the page and try again."

func (c *Console) upstreamsPage(w http.ResponseWriter, r *http.Request, q *request) {
	var ups []Upstream
	if c.o.Upstreams != nil {
		ups = c.o.Upstreams()
	}
	pending, err := c.o.Quarantine.Pending(r.Context(), "")
	if err != nil {
		c.log.Error("list pending tools", "err", err)
	}
	c.render(w, q, http.StatusOK, "upstreams", "Upstreams", map[string]any{"Upstreams": ups, "Pending": len(pending)})
}

type pendingView struct {
	schemapin.PendingTool
	New bool
}

func (c *Console) pendingPage(w http.ResponseWriter, r *http.Request, q *request) {
	list, err := c.o.Quarantine.Pending(r.Context(), "")
	if err != nil {
		c.log.Error("list pending tools", "err", err)
		c.message(w, r, q, http.StatusInternalServerError, "Error", "the pending tool definitions could not be read")
		return
	}
	views := make([]pendingView, 0, len(list))
	for _, p := range list {
		views = append(views, pendingView{PendingTool: p, New: p.Approved == ""})
	}
	qs := r.URL.Query()
	c.render(w, q, http.StatusOK, "pending", "Pending tool changes", map[string]any{
		"Pending": views, "Done": qs.Get("done"), "DoneTool": qs.Get("tool")})
}

// decide applies an approve or reject form: anti-forgery token, the policy
// (tools/approve, tools/reject), the quarantine (refusing a definition other than the one
// shown), the audit trail, and a re-list of the upstream.
func (c *Console) decide(w http.ResponseWriter, r *http.Request, q *request) {
	if !c.sessions.csrfOK(q.identity.ID, q.sid(), r.PostFormValue("csrf")) {
		c.message(w, r, q, http.StatusForbidden, "Refused", csrfRefusal)
		return
	}
	verb := r.PostFormValue("decision")
	upstream, tool, hash := r.PostFormValue("upstream"), r.PostFormValue("tool"), r.PostFormValue("hash")
	action, typ, past := policy.ActionToolsApprove, audit.TypeToolApproved, "approved"
	switch verb {
	case "approve":
	case "reject":
		action, typ, past = policy.ActionToolsReject, audit.TypeToolRejected, "rejected"
	default:
		c.message(w, r, q, http.StatusBadRequest, "Bad request", "decision must be approve or reject")
		return
	}
	if upstream == "" || tool == "" || hash == "" {
		c.message(w, r, q, http.StatusBadRequest, "Bad request", "the form lacks the upstream, the tool or the definition hash")
		return
	}
	ctx := r.Context()
	list, err := c.o.Quarantine.Pending(ctx, upstream)
	if err != nil {
		c.log.Error("list pending tools", "err", err)
		c.message(w, r, q, http.StatusInternalServerError, "Error", "the pending tool definitions could not be read")
		return
	}
	var found *schemapin.PendingTool
	for i := range list {
		if list[i].Tool == tool {
			found = &list[i]
		}
	}
	if found == nil {
		c.message(w, r, q, http.StatusConflict, "Nothing pending", "No definition of "+upstream+"/"+tool+" is pending: it was decided already, or the upstream listed its approved definition again.")
		return
	}
	d, _ := c.decide1(ctx, q, action, upstream, map[string]any{"change": map[string]any{
		"upstream": upstream, "tool": tool, "hash": hash, "first_seen": found.Approved == ""}})
	if !d.Allow {
		c.message(w, r, q, http.StatusForbidden, "Denied by policy", reasonOf(d))
		return
	}
	if verb == "approve" {
		err = c.o.Quarantine.Approve(ctx, upstream, tool, hash)
	} else {
		err = c.o.Quarantine.Reject(ctx, upstream, tool, hash)
	}
	switch {
	case errors.Is(err, schemapin.ErrPendingChanged):
		c.message(w, r, q, http.StatusConflict, "Changed since you looked", "The upstream changed the definition of "+upstream+"/"+tool+" again after this page was shown. Review the new diff.")
		return
	case errors.Is(err, schemapin.ErrNotPending):
		c.message(w, r, q, http.StatusConflict, "Nothing pending", "No definition of "+upstream+"/"+tool+" is pending any more.")
		return
	case err != nil:
		c.log.Error("quarantine decision", "decision", verb, "upstream", upstream, "tool", tool, "err", err)
		c.message(w, r, q, http.StatusInternalServerError, "Error", "the decision could not be stored")
		return
	}
	c.record(audit.Event{Type: typ, Action: action, Identity: q.identity.ID, IdentityKind: q.identity.Kind, Transport: "console",
		Source: r.RemoteAddr, Upstream: upstream, Tool: tool, Decision: audit.Allow, Outcome: audit.OutcomeOK,
		Detail: map[string]string{"hash": hash, "via": "console"}})
	c.log.Info("quarantine decision from the console", "decision", past, "upstream", upstream, "tool", tool, "identity", q.identity.ID)
	if c.o.Refresh != nil {
		// Re-list now so an approved tool is listed when the page comes back; the
		// decision stands whatever the upstream answers.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if err := c.o.Refresh(rctx, upstream); err != nil {
			c.log.Warn("re-list upstream after a console decision", "upstream", upstream, "err", err)
		}
		cancel()
	}
	http.Redirect(w, r, "/ui/pending?"+url.Values{"done": {past}, "tool": {upstream + "/" + tool}}.Encode(), http.StatusSeeOther)
}

// filter selects audit records; empty fields match everything.
type filter struct {
	Identity, Action, Decision, Type string
	decisionsOnly                    bool
}

func filterOf(r *http.Request) filter {
	v := r.URL.Query()
	return filter{Identity: v.Get("identity"), Action: v.Get("action"), Decision: v.Get("decision"), Type: v.Get("type")}
}

func (f filter) match(ev *audit.Event) bool {
	if f.decisionsOnly && ev.Decision == "" {
		return false
	}
	return contains(ev.Identity, f.Identity) && contains(ev.Action, f.Action) &&
		(f.Decision == "" || string(ev.Decision) == f.Decision) && (f.Type == "" || string(ev.Type) == f.Type)
}

func contains(s, sub string) bool {
	return sub == "" || strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// pageRecords is at most how many records a page shows, newest first.
const pageRecords = 200

func (c *Console) records(f filter) []audit.Record {
	all := c.o.Audit.Recent(1 << 20)
	var out []audit.Record
	for i := len(all) - 1; i >= 0 && len(out) < pageRecords; i-- {
		if f.match(&all[i].Event) {
			out = append(out, all[i])
		}
	}
	return out
}

func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, q *request) {
	if !c.allowed(w, r, q, policy.ActionAuditStream, nil) {
		return
	}
	f := filterOf(r)
	c.render(w, q, http.StatusOK, "audit", "Audit trail", map[string]any{"Filter": f, "Records": c.records(f), "Live": c.o.AuditStream != nil})
}

func (c *Console) auditStream(w http.ResponseWriter, r *http.Request, q *request) {
	if c.o.AuditStream == nil {
		http.NotFound(w, r)
		return
	}
	if !c.allowed(w, r, q, policy.ActionAuditStream, nil) {
		return
	}
	c.o.AuditStream.ServeHTTP(w, r)
}

func (c *Console) decisionsPage(w http.ResponseWriter, r *http.Request, q *request) {
	if !c.allowed(w, r, q, policy.ActionAuditStream, nil) {
		return
	}
	f := filterOf(r)
	f.decisionsOnly = true
	c.render(w, q, http.StatusOK, "decisions", "Policy decisions", map[string]any{"Filter": f, "Records": c.records(f)})
}

func (c *Console) agentsPage(w http.ResponseWriter, r *http.Request, q *request) {
	data := map[string]any{}
	if c.o.Agents != nil {
		data["Agents"] = c.o.Agents(r.Context())
		data["HaveAgents"] = true
	}
	if c.o.Scheduler != nil {
		st := c.o.Scheduler()
		data["Scheduler"] = &st
	}
	if c.o.Tasks != nil {
		data["HaveTasks"] = true
		tasks, err := c.o.Tasks(r.Context(), q.identity.ID)
		if err != nil {
			c.log.Error("list tasks for the console", "identity", q.identity.ID, "err", err)
			data["TasksError"] = "the task store could not be read"
		}
		data["Tasks"] = tasks
	}
	c.render(w, q, http.StatusOK, "agents", "Agents and tasks", data)
}
