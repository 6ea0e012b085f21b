package policy

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/symbi-dev/symbi/policy/secrets"
)

// Refusal is returned when a condition of an allow cannot be met: the request (or its
// result) must not go through. Reason is safe to show the client; Findings (for secret
// conditions) name rules and paths, never secrets, and belong in the audit record.
type Refusal struct {
	Condition  string            // the condition type that refused
	Reason     string            // for the client
	RetryAfter time.Duration     // rate_limit: when a token is available
	Findings   []secrets.Finding // block_secrets: what was found
}

func (r *Refusal) Error() string { return r.Condition + ": " + r.Reason }

// Call is what the gateway knows about a request when it enforces the conditions of an
// allow before forwarding it.
type Call struct {
	Identity  string         // identity id
	Tool      string         // exposed tool name (or resource URI / prompt name), the rate limit key
	Tier      string         // sandbox tier of the upstream that will serve it
	Arguments map[string]any // arguments as the client sent them
}

// Enforcer applies the conditions of a decision that the gateway can apply mechanically:
// require_tier, rate_limit, block_secrets, redact_secrets and redact. require_approval
// is the gateway's own (it needs the client session): see [Decision.Find].
// An Enforcer is safe for concurrent use.
type Enforcer struct {
	Limiter RateLimiter      // nil: rate_limit conditions refuse (fail closed)
	Scanner *secrets.Scanner // nil: secrets.Default()
}

func (e *Enforcer) scanner() *secrets.Scanner {
	if e.Scanner != nil {
		return e.Scanner
	}
	return secrets.Default()
}

func scopes(c Condition, root string) bool {
	if len(c.Paths) == 0 {
		return true
	}
	for _, p := range c.Paths {
		if p == root {
			return true
		}
	}
	return false
}

// BeforeCall enforces the conditions of d on a call about to be forwarded, in this order:
// require_tier, rate_limit (the strictest when there are several; one bucket per identity
// and tool), block_secrets on the arguments, then redact_secrets and redact on them. It
// returns the arguments to forward (a copy where something was masked; the input is not
// modified) and the secret findings for the audit record. A *Refusal error means the call
// must be refused.
func (e *Enforcer) BeforeCall(d Decision, c Call) (map[string]any, []secrets.Finding, error) {
	if !d.Allow {
		return nil, nil, &Refusal{Condition: "deny", Reason: d.Reason}
	}
	var rate *Condition
	for i := range d.Conditions {
		cond := &d.Conditions[i]
		switch cond.Type {
		case CondRequireTier:
			if !TierSatisfies(c.Tier, cond.Tier) {
				have := c.Tier
				if have == "" {
					have = TierNone
				}
				return nil, nil, &Refusal{Condition: CondRequireTier,
					Reason: fmt.Sprintf("policy requires sandbox tier %s or stricter; the upstream runs in %s", cond.Tier, have)}
			}
		case CondRateLimit:
			if rate == nil || cond.PerMinute < rate.PerMinute {
				rate = cond
			}
		}
	}
	if rate != nil {
		if e.Limiter == nil {
			return nil, nil, &Refusal{Condition: CondRateLimit, Reason: "rate limiting is not available"}
		}
		if ok, wait := e.Limiter.Allow(LimitKey(c.Identity, c.Tool), rate.PerMinute, rate.Burst); !ok {
			return nil, nil, &Refusal{Condition: CondRateLimit, RetryAfter: wait,
				Reason: fmt.Sprintf("rate limit of %d per minute exceeded; retry in %s", rate.PerMinute, wait.Round(time.Second)+time.Second)}
		}
	}

	var args any = c.Arguments
	var findings []secrets.Finding
	for _, cond := range d.Conditions {
		if cond.Type == CondBlockSecrets && scopes(cond, "arguments") {
			if found := e.scanner().FindValue(c.Arguments, "arguments"); len(found) > 0 {
				return nil, found, &Refusal{Condition: CondBlockSecrets, Findings: found,
					Reason: "the arguments contain credentials (" + describe(found) + "); the policy forbids sending them"}
			}
		}
	}
	for _, cond := range d.Conditions {
		switch {
		case cond.Type == CondRedactSecrets && scopes(cond, "arguments"):
			var found []secrets.Finding
			args, found = e.scanner().MaskValue(args, "arguments")
			findings = append(findings, found...)
		case cond.Type == CondRedact:
			var err error
			args, _, err = Redact(args, "arguments", cond.Paths, cond.Mode)
			if err != nil {
				return nil, findings, &Refusal{Condition: CondRedact, Reason: "invalid redact condition"}
			}
		}
	}
	out, isMap := args.(map[string]any)
	if !isMap {
		out = map[string]any{} // the whole arguments object was masked
	}
	return out, findings, nil
}

// AfterCall enforces the conditions of d on a result before it goes back to the client.
// result is the JSON-like form of a tools/call result (content, structuredContent), a
// resources/read result (contents), a prompts/get result (messages) or a
// completion/complete result (completion.values). Secret conditions look at text only:
// content[*].text, contents[*].text, messages[*].content.text, completion.values[*] and
// structuredContent; binary blobs are left alone. block_secrets refuses the result (the
// gateway then returns an error result instead); redact_secrets and redact mask.
func (e *Enforcer) AfterCall(d Decision, result map[string]any) (map[string]any, []secrets.Finding, error) {
	var out any = result
	var findings []secrets.Finding
	for _, cond := range d.Conditions {
		if cond.Type == CondBlockSecrets && scopes(cond, "result") {
			var found []secrets.Finding
			forEachText(result, func(path string, v any) (any, bool) {
				found = append(found, e.scanner().FindValue(v, path)...)
				return v, false
			})
			if len(found) > 0 {
				return nil, found, &Refusal{Condition: CondBlockSecrets, Findings: found,
					Reason: "the result contains credentials (" + describe(found) + "); the policy withholds it"}
			}
		}
	}
	for _, cond := range d.Conditions {
		switch {
		case cond.Type == CondRedactSecrets && scopes(cond, "result"):
			m, _ := out.(map[string]any)
			out = forEachText(m, func(path string, v any) (any, bool) {
				nv, found := e.scanner().MaskValue(v, path)
				findings = append(findings, found...)
				return nv, len(found) > 0
			})
		case cond.Type == CondRedact:
			var err error
			out, _, err = Redact(out, "result", cond.Paths, cond.Mode)
			if err != nil {
				return nil, findings, &Refusal{Condition: CondRedact, Reason: "invalid redact condition"}
			}
		}
	}
	m, isMap := out.(map[string]any)
	if !isMap {
		m = map[string]any{} // the whole result was masked
	}
	return m, findings, nil
}

// forEachText calls f on every text-bearing value of an MCP result and rebuilds the
// result (copy on write) with what f returns when f reports a change.
func forEachText(result map[string]any, f func(path string, v any) (any, bool)) map[string]any {
	if result == nil {
		return nil
	}
	out, copied := result, false
	set := func(k string, v any) {
		if !copied {
			out = make(map[string]any, len(result))
			for k2, v2 := range result {
				out[k2] = v2
			}
			copied = true
		}
		out[k] = v
	}
	// textIn reads the string at keys inside list[i].
	textIn := func(list []any, i int, keys ...string) (string, bool) {
		m, ok := list[i].(map[string]any)
		for _, k := range keys[:len(keys)-1] {
			if !ok {
				return "", false
			}
			m, ok = m[k].(map[string]any)
		}
		if !ok {
			return "", false
		}
		s, ok := m[keys[len(keys)-1]].(string)
		return s, ok
	}
	if sc, ok := result["structuredContent"]; ok {
		if nv, changed := f("result.structuredContent", sc); changed {
			set("structuredContent", nv)
		}
	}
	if comp, ok := result["completion"].(map[string]any); ok {
		if vals, ok := comp["values"].([]any); ok {
			var nv []any
			for i, v := range vals {
				s, ok := v.(string)
				if !ok {
					continue
				}
				ns, changed := f(fmt.Sprintf("result.completion.values[%d]", i), s)
				if !changed {
					continue
				}
				if nv == nil {
					nv = append([]any(nil), vals...)
				}
				nv[i] = ns
			}
			if nv != nil {
				c := make(map[string]any, len(comp))
				for k, v := range comp {
					c[k] = v
				}
				c["values"] = nv
				set("completion", c)
			}
		}
	}
	for _, spec := range []struct {
		key  string
		path []string
	}{{"content", []string{"text"}}, {"contents", []string{"text"}}, {"messages", []string{"content", "text"}}} {
		list, ok := result[spec.key].([]any)
		if !ok {
			continue
		}
		var nl []any
		for i := range list {
			text, ok := textIn(list, i, spec.path...)
			if !ok {
				continue
			}
			nt, changed := f(fmt.Sprintf("result.%s[%d].%s", spec.key, i, strings.Join(spec.path, ".")), text)
			if !changed {
				continue
			}
			if nl == nil {
				nl = append([]any(nil), list...)
			}
			nl[i] = withTextMap(list[i], nt, spec.path)
		}
		if nl != nil {
			set(spec.key, nl)
		}
	}
	return out
}

// withTextMap copies the map v with the value at keys replaced by nt.
func withTextMap(v any, nt any, keys []string) any {
	m := v.(map[string]any)
	c := make(map[string]any, len(m))
	for k, x := range m {
		c[k] = x
	}
	if len(keys) == 1 {
		c[keys[0]] = nt
		return c
	}
	c[keys[0]] = withTextMap(m[keys[0]], nt, keys[1:])
	return c
}

// describe summarises findings for a client: rule ids and paths, no secrets.
func describe(found []secrets.Finding) string {
	seen := map[string]bool{}
	var parts []string
	for _, f := range found {
		s := f.RuleID + " at " + f.Path
		if !seen[s] {
			seen[s] = true
			parts = append(parts, s)
		}
	}
	sort.Strings(parts)
	if len(parts) > 5 {
		parts = append(parts[:5], fmt.Sprintf("and %d more", len(parts)-5))
	}
	return strings.Join(parts, ", ")
}
