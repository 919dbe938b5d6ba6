package policy

import (
	"context"
	"testing"
)

// TestCacheKeyedByWhatThePolicyReads: a policy that decides on a part of
// the input outside the fixed key (the client's address, a claim, a
// header, the application name) is never answered with a decision cached
// for another value of it, whichever way it reads it.
func TestCacheKeyedByWhatThePolicyReads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name, rego string
		// other changes the part the policy reads, to a value it refuses.
		other func(*Input)
		reads string
	}{
		{"client address", `decision := {"allow": startswith(input.session.client_address, "10.0.0.9")}`,
			func(in *Input) { in.Session.ClientAddress = "203.0.113.7" }, "session.client_address"},
		{"client address through object.get", `decision := {"allow": startswith(object.get(input, ["session", "client_address"], ""), "10.0.0.9")}`,
			func(in *Input) { in.Session.ClientAddress = "203.0.113.7" }, "session.client_address"},
		{"session as a whole", `s := input.session
decision := {"allow": s.application_name == "psql"}`,
			func(in *Input) { in.Session.ApplicationName = "other" }, "session.*"},
		{"imported session", `import input.session as s
decision := {"allow": s.database == "payments"}`,
			func(in *Input) { in.Session.Database = "other" }, "session.*"},
		{"claim", `decision := {"allow": input.principal.claims.jti == "j1"}`,
			func(in *Input) { in.Principal.Claims = map[string]any{"jti": "j2"} }, "principal.claims"},
		{"email", `decision := {"allow": endswith(object.get(input.principal, "email", ""), "@example.com")}`,
			func(in *Input) { in.Principal.Email = "x@elsewhere.example" }, "principal.email, principal.claims"},
		{"type checks read nothing", `decision := {"allow": is_object(input.http)} if is_string(input.session.id)`,
			func(in *Input) { in.HTTP = nil }, ""},
		{"header", `decision := {"allow": input.http.headers["x-env"] == "dev"}`,
			func(in *Input) { in.HTTP.Headers = map[string]string{"x-env": "prod"} }, "http.headers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writePolicy(t, dir, map[string]string{"p.rego": "package custos\n\n" + tc.rego + "\n"})
			e := newEngine(t, Options{Dir: dir})
			if got := e.cur.Load().reads.String(); got != tc.reads {
				t.Errorf("reads %q, want %q", got, tc.reads)
			}
			in := sqlInput(agents, stmt(nil))
			in.Principal.Email = "a@example.com"
			in.HTTP = &HTTP{Method: "GET", Path: "/", Headers: map[string]string{"x-env": "dev"}}
			if d := e.Decide(ctx, in); !d.Allow {
				t.Fatalf("first decision refused: %+v", d)
			}
			if d := e.Decide(ctx, in); !d.Cached || !d.Allow {
				t.Errorf("the same input again was not served from the cache: %+v", d)
			}
			other := *in
			otherHTTP := *in.HTTP
			other.HTTP = &otherHTTP
			tc.other(&other)
			if d := e.Decide(ctx, &other); d.Allow || d.Cached {
				t.Errorf("a decision for another value of what the policy reads: %+v", d)
			}
		})
	}
}

// TestUncacheablePolicies: a policy that reads the input as a whole, at a
// computed path, or calls a nondeterministic builtin, is evaluated every
// time.
func TestUncacheablePolicies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, rego := range map[string]string{
		"whole input":      `decision := {"allow": count(json.marshal(input)) > 0}`,
		"computed path":    "k := \"session\"\ndecision := {\"allow\": count(input[k]) >= 0}",
		"object.get whole": "k := [\"session\"]\ndecision := {\"allow\": is_object(object.get(input, k, {}))}",
		"time":             `decision := {"allow": time.now_ns() > 0}`,
		"random":           `decision := {"allow": rand.intn("x", 10) >= 0}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writePolicy(t, dir, map[string]string{"p.rego": "package custos\n\n" + rego + "\n"})
			e := newEngine(t, Options{Dir: dir})
			if e.cur.Load().cache != nil {
				t.Errorf("cached (%q)", e.cur.Load().reads.uncacheable)
			}
			in := sqlInput(agents, stmt(nil))
			if d := e.Decide(ctx, in); !d.Allow {
				t.Fatalf("refused: %+v", d)
			}
			if d := e.Decide(ctx, in); d.Cached {
				t.Errorf("served from the cache: %+v", d)
			}
		})
	}
}

// TestDefaultPolicyReads: what the embedded policy reads outside the fixed
// key (the network rule's client address).
func TestDefaultPolicyReads(t *testing.T) {
	t.Parallel()
	e := newEngine(t, Options{})
	v := e.cur.Load()
	if v.cache == nil || v.reads.uncacheable != "" {
		t.Fatalf("default policy not cached: %q", v.reads.uncacheable)
	}
	// The network rule reads the client's address; nothing reads the
	// claims, email or headers.
	if got := v.reads.String(); got != "session.client_address" {
		t.Errorf("default policy keyed also by %q", got)
	}
}
