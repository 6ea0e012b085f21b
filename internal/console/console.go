// Package console serves symbi's web console at /ui on the main HTTP listener: the
// upstreams and their state, the tool definitions waiting in the rug-pull quarantine (with
// their diff and approve/reject forms that work without JavaScript), the audit trail with
// filters and a live view, recent policy decisions, and the agents and the scheduler.
//
// It owns the console's pages, its sign-in sessions and its request checks (same origin
// and an anti-forgery token on every POST, a strict Content-Security-Policy). It does not
// authenticate: every page passes the gateway's own authentication (the one /mcp uses), so
// an unauthenticated request gets what /mcp would answer. A browser signs in by posting a
// token to /ui/login; the console keeps it in memory and presents it as a bearer token on
// the browser's later requests, so revoking the token ends the session. Client
// certificates and loopback-only setups need no sign-in. Every page is decided by the
// policy (console/view), the audit pages also as audit/stream, and approvals as
// tools/approve and tools/reject; decisions made here are recorded in the audit trail.
//
// Pages are html/template, server-rendered; the style sheet and one small script (the live
// audit view, optional) are embedded in the binary. Nothing is loaded from elsewhere.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/symbi-dev/symbi/agents"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/policy"
	"github.com/symbi-dev/symbi/schemapin"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Task is one MCP task as the console lists it (no result: that is for tasks/get).
type Task struct {
	ID, Tool, Upstream, Status, Message string
	Created, Updated                    time.Time
}

// TasksFrom lists tasks for the console from the gateway's task store: the newest 50 of
// the identity's tasks still within their TTL.
func TasksFrom(ts *gateway.SQLTaskStore) func(ctx context.Context, identity string) ([]Task, error) {
	return func(ctx context.Context, identity string) ([]Task, error) {
		recs, err := ts.RecentTasks(ctx, identity, 50, time.Now())
		if err != nil {
			return nil, err
		}
		out := make([]Task, len(recs))
		for i, r := range recs {
			out[i] = Task{ID: r.ID, Tool: r.Tool, Upstream: r.Upstream, Status: r.Status, Message: r.Message, Created: r.Created, Updated: r.Updated}
		}
		return out, nil
	}
}

// Upstream is one upstream as the console shows it.
type Upstream struct {
	gateway.UpstreamStatus
	// Verification counts the upstream's listed tools by SchemaPin status.
	Verification map[string]int
}

// Options configures the console. Authenticate, Policy, Audit and Quarantine are
// required; the other sources may be nil (their page then says so).
type Options struct {
	Logger *slog.Logger // nil: discard
	// Authenticate wraps a handler in the gateway's authentication (Gateway.Authenticate).
	Authenticate func(http.Handler) http.Handler
	Policy       policy.Engine
	Audit        *audit.Log
	Quarantine   *schemapin.Quarantine
	// AuditStream is the live audit stream (Log.Handler); the console serves it at
	// /ui/audit/stream after its own checks.
	AuditStream http.Handler
	Upstreams   func() []Upstream
	// Refresh re-lists one upstream after a decision, so an approved tool is listed at
	// once.
	Refresh   func(ctx context.Context, upstream string) error
	Agents    func(ctx context.Context) []agents.Status
	Scheduler func() agents.Stats
	// Tasks lists the newest MCP tasks of one identity: the console shows the signed-in
	// identity its own tasks only, as tasks/get does.
	Tasks func(ctx context.Context, identity string) ([]Task, error)
	// SessionTTL is how long a sign-in lasts; 0: 8h. MaxSessions bounds the session
	// table; 0: 1024.
	SessionTTL  time.Duration
	MaxSessions int
	Now         func() time.Time // nil: time.Now
}

// Console is the web console's handler.
type Console struct {
	o        Options
	log      *slog.Logger
	sessions *sessions
	pages    map[string]*template.Template
	static   http.Handler
	mux      *http.ServeMux
}

// New builds the console.
func New(opts Options) (*Console, error) {
	o := opts
	if o.Authenticate == nil || o.Policy == nil || o.Audit == nil || o.Quarantine == nil {
		return nil, errors.New("console: Authenticate, Policy, Audit and Quarantine are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = 8 * time.Hour
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 1024
	}
	c := &Console{o: o, log: o.Logger, sessions: newSessions(o.MaxSessions, o.SessionTTL, o.Now), pages: map[string]*template.Template{}}
	funcs := template.FuncMap{
		"since":     func(t time.Time) string { return since(o.Now(), t) },
		"stamp":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
		"diffClass": diffClass,
		"join":      strings.Join,
		"verif":     verificationSummary,
		"lines":     func(s string) []string { return strings.Split(strings.TrimSuffix(s, "\n"), "\n") },
	}
	for _, page := range []string{"login", "upstreams", "pending", "audit", "decisions", "agents", "message"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+page+".html")
		if err != nil {
			return nil, fmt.Errorf("console: parse template %s: %w", page, err)
		}
		c.pages[page] = t
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, fmt.Errorf("console: static files: %w", err)
	}
	c.static = http.StripPrefix("/ui/static/", http.FileServerFS(sub))
	c.mux = c.routes()
	return c, nil
}

// Routes are the console's paths, to mount among the gateway's unauthenticated routes
// (HTTPOptions.Public): the console authenticates each request itself, through
// Options.Authenticate.
func (c *Console) Routes() map[string]http.Handler {
	return map[string]http.Handler{"/ui": c, "/ui/": c}
}

func (c *Console) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
	})
	mux.Handle("GET /ui/static/", c.static)
	mux.HandleFunc("GET /ui/login", c.loginForm)
	mux.HandleFunc("POST /ui/login", c.login)
	auth := func(page string, h func(http.ResponseWriter, *http.Request, *request)) http.Handler {
		return c.authenticated(page, h)
	}
	mux.Handle("GET /ui/{$}", auth("upstreams", c.upstreamsPage))
	mux.Handle("GET /ui/pending", auth("pending", c.pendingPage))
	mux.Handle("POST /ui/pending", auth("pending", c.decide))
	mux.Handle("GET /ui/audit", auth("audit", c.auditPage))
	mux.Handle("GET /ui/audit/stream", auth("audit", c.auditStream))
	mux.Handle("GET /ui/decisions", auth("decisions", c.decisionsPage))
	mux.Handle("GET /ui/agents", auth("agents", c.agentsPage))
	mux.Handle("POST /ui/logout", auth("logout", c.logout))
	return mux
}

// csp allows nothing but the console's own style sheet and script, forms posting to
// itself, and connections back to itself (the live audit view).
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if !strings.HasPrefix(r.URL.Path, "/ui/static/") {
		h.Set("Cache-Control", "no-store")
	}
	if r.Method == http.MethodPost {
		if err := sameOrigin(r); err != nil {
			c.message(w, r, nil, http.StatusForbidden, "Refused", err.Error())
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	}
	c.mux.ServeHTTP(w, r)
}

// sameOrigin accepts a POST that a browser says comes from the console's own origin:
// Origin names this host, or (a browser that sends no Origin) Sec-Fetch-Site says
// same-origin. Anything else, a request with neither included, is refused.
func sameOrigin(r *http.Request) error {
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
			return fmt.Errorf("this form was not sent from the console (Origin %q)", o)
		}
		return nil
	}
	if r.Header.Get("Sec-Fetch-Site") == "same-origin" {
		return nil
	}
	return errors.New("this form was not sent from the console (no Origin header)")
}

// request is what an authenticated page knows about its caller.
type request struct {
	identity gateway.Identity
	session  *session // nil without a console session
	csrf     string
}

func (q *request) sid() string {
	if q.session == nil {
		return ""
	}
	return q.session.id
}

// authenticated runs h behind the gateway's authentication and the console/view policy
// decision. A console session's token is presented as the request's bearer token (unless
// the request brings its own Authorization); a request the gateway refuses gets its
// answer, with a link to the sign-in form for a browser.
func (c *Console) authenticated(page string, h func(http.ResponseWriter, *http.Request, *request)) http.Handler {
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w = unwrapHint(w)
		id := gateway.RequestIdentity(r)
		se, _ := r.Context().Value(sessionKey{}).(*session)
		if se != nil && se.identity != id.ID {
			// The token now maps to another identity (a reload): sign in again.
			c.sessions.drop(se.id)
			setCookie(w, r, "", -1)
			http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
			return
		}
		q := &request{identity: id, session: se}
		q.csrf = c.sessions.csrf(id.ID, q.sid())
		if page != "logout" && !c.allowed(w, r, q, policy.ActionConsoleView, map[string]any{"console": map[string]any{"page": page}}) {
			return
		}
		h(w, r, q)
	})
	protected := c.o.Authenticate(inner)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if se := c.sessions.get(r); se != nil && r.Header.Get("Authorization") == "" {
			r = r.Clone(context.WithValue(r.Context(), sessionKey{}, se))
			r.Header.Set("Authorization", "Bearer "+se.token)
		}
		protected.ServeHTTP(&loginHint{ResponseWriter: w, html: wantsHTML(r)}, r)
	})
}

type sessionKey struct{}

// allowed asks the policy about action for q's identity and answers 403 (recorded in the
// audit trail) when it denies.
func (c *Console) allowed(w http.ResponseWriter, r *http.Request, q *request, action string, extra map[string]any) bool {
	d, err := c.decide1(r.Context(), q, action, "", extra)
	if err == nil && d.Allow {
		return true
	}
	c.message(w, r, q, http.StatusForbidden, "Denied by policy", reasonOf(d))
	return false
}

// decide1 asks the policy and records a denial in the audit trail.
func (c *Console) decide1(ctx context.Context, q *request, action, upstream string, extra map[string]any) (policy.Decision, error) {
	d, err := c.o.Policy.Decide(ctx, &policy.Input{Action: action, Upstream: upstream,
		Identity: policy.Identity{ID: q.identity.ID, Kind: q.identity.Kind, Claims: q.identity.Claims}, Extra: extra})
	if err != nil {
		c.log.Error("policy decision for the console", "action", action, "identity", q.identity.ID, "err", err)
	}
	if err == nil && d.Allow && len(d.Conditions) > 0 {
		// The console has nothing a condition could act on (no arguments to redact, no
		// tier, no call to hold for approval): an allow that carries one is a promise it
		// cannot keep, so it fails closed, as the gateway does for actions that cannot
		// honour a condition.
		d = policy.Decision{Reason: fmt.Sprintf("policy attached condition %q, which %s cannot honour", d.Conditions[0].Type, action)}
	}
	if !d.Allow {
		c.record(audit.Event{Type: audit.TypeDecision, Action: action, Identity: q.identity.ID, IdentityKind: q.identity.Kind,
			Transport: "console", Upstream: upstream, Decision: audit.Deny, Reason: reasonOf(d), Outcome: audit.OutcomeDenied})
	}
	return d, err
}

func reasonOf(d policy.Decision) string {
	if d.Reason == "" {
		return "denied by policy"
	}
	return d.Reason
}

func (c *Console) record(ev audit.Event) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.o.Audit.Append(ctx, ev); err != nil {
		c.log.Error("append audit event", "type", string(ev.Type), "err", err)
	}
}

func wantsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// loginHint passes the gateway's answer through, except that a browser's 401 gets an
// HTML body with a link to the sign-in form instead of the plain-text one (the status and
// the WWW-Authenticate challenge stay).
type loginHint struct {
	http.ResponseWriter
	html    bool
	swallow bool
}

func (l *loginHint) WriteHeader(code int) {
	if code == http.StatusUnauthorized && l.html && !l.swallow {
		l.swallow = true
		h := l.ResponseWriter.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Del("Content-Length")
		l.ResponseWriter.WriteHeader(code)
		_, _ = l.ResponseWriter.Write([]byte(unauthorizedHTML))
		return
	}
	l.ResponseWriter.WriteHeader(code)
}

func (l *loginHint) Write(b []byte) (int, error) {
	if l.swallow {
		return len(b), nil
	}
	return l.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (the live audit stream
// flushes).
func (l *loginHint) Unwrap() http.ResponseWriter { return l.ResponseWriter }

// Flush passes flushes through (the live audit stream).
func (l *loginHint) Flush() {
	if f, ok := l.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// unwrapHint returns the writer under loginHint: an authenticated page answers as it
// likes (a 401 from a page is not the gateway's).
func unwrapHint(w http.ResponseWriter) http.ResponseWriter {
	if l, ok := w.(*loginHint); ok {
		return l.ResponseWriter
	}
	return w
}

const unauthorizedHTML = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>symbi console: sign in</title>` +
	`<link rel="stylesheet" href="/ui/static/style.css"></head><body><main><h1>Not signed in</h1>` +
	`<p>This page needs the same credentials as symbi's MCP endpoint.</p><p><a href="/ui/login">Sign in with a token</a></p></main></body></html>`

// render renders a page with the layout; v is the page's data, to which it adds what
// the layout shows (Title, Page, Identity, CSRF, SignedIn).
func (c *Console) render(w http.ResponseWriter, q *request, status int, page, title string, v map[string]any) {
	var b strings.Builder
	v["Title"], v["Page"] = title, page
	if q != nil {
		v["Identity"], v["CSRF"], v["SignedIn"] = q.identity.ID, q.csrf, q.session != nil
	}
	if err := c.pages[page].Execute(&b, v); err != nil {
		c.log.Error("render console page", "page", page, "err", err)
		http.Error(w, "symbi console: cannot render the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

// message renders a short page with a heading and a text (errors, refusals).
func (c *Console) message(w http.ResponseWriter, r *http.Request, q *request, status int, title, text string) {
	c.render(w, q, status, "message", title, map[string]any{"Text": text})
}

func since(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		return "in " + (-d).String()
	}
	return d.String() + " ago"
}

func diffClass(line string) string {
	switch {
	case strings.HasPrefix(line, "+"):
		return "add"
	case strings.HasPrefix(line, "-"):
		return "del"
	}
	return "same"
}

func verificationSummary(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		name := k
		if name == "" {
			name = "none"
		}
		parts = append(parts, fmt.Sprintf("%d %s", m[k], name))
	}
	return strings.Join(parts, ", ")
}
