package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

// cookieName is the console's session cookie. It holds only a random session id; the
// credential it stands for stays in memory on the server.
const cookieName = "symbi_console"

// session is one browser's sign-in: the credential presented at the login form (re-checked
// by the gateway's authentication on every request) and the identity it mapped to then.
type session struct {
	id       string
	token    string
	identity string
	expires  time.Time
}

// sessions is the in-memory session table. It is bounded: when full, the session that
// expires first makes room. Sessions do not survive a restart (sign in again).
type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	max int
	ttl time.Duration
	now func() time.Time
	key []byte // CSRF token key, random per process
}

func newSessions(max int, ttl time.Duration, now func() time.Time) *sessions {
	return &sessions{m: map[string]*session{}, max: max, ttl: ttl, now: now, key: []byte(rand.Text())}
}

// create starts a session for token's identity and returns it.
func (s *sessions) create(token, identity string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for id, se := range s.m {
		if !now.Before(se.expires) {
			delete(s.m, id)
		}
	}
	for len(s.m) >= s.max {
		var first *session
		for _, se := range s.m {
			if first == nil || se.expires.Before(first.expires) {
				first = se
			}
		}
		delete(s.m, first.id)
	}
	se := &session{id: rand.Text() + rand.Text(), token: token, identity: identity, expires: now.Add(s.ttl)}
	s.m[se.id] = se
	return se
}

// get returns the live session of r's cookie, or nil.
func (s *sessions) get(r *http.Request) *session {
	c, err := r.Cookie(cookieName)
	if err != nil || c.Value == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	se := s.m[c.Value]
	if se == nil {
		return nil
	}
	if !s.now().Before(se.expires) {
		delete(s.m, se.id)
		return nil
	}
	return se
}

func (s *sessions) drop(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

func (s *sessions) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// csrf is the anti-forgery token of a form served to identity in session sid ("" when
// the request authenticated without a console session: a client certificate, a bearer
// header, a loopback client). Another site's page cannot read it, so a form it makes a
// browser submit cannot carry it.
func (s *sessions) csrf(identity, sid string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(identity))
	m.Write([]byte{0})
	m.Write([]byte(sid))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (s *sessions) csrfOK(identity, sid, got string) bool {
	want := s.csrf(identity, sid)
	return subtle.ConstantTimeCompare([]byte(want), []byte(got)) == 1
}

// setCookie sends the session cookie: HttpOnly, SameSite=Strict, limited to /ui, and
// Secure when the console is served over TLS.
func setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: value, Path: "/ui", MaxAge: maxAge,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
}
