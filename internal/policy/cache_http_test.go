package policy

import (
	"context"
	"testing"
)

// TestHTTPDecisionsCached: a repeated request of one principal is decided
// once; another method, path or query is decided again, headers are not
// part of the key.
func TestHTTPDecisionsCached(t *testing.T) {
	t.Parallel()
	e := newEngine(t, Options{})
	ctx := context.Background()
	in := func(method, path string, query map[string][]string, headers map[string]string) *Input {
		return &Input{Kind: KindHTTP, Principal: Principal{Sub: "a", Iss: "https://issuer.example", Groups: agents},
			Resource: Resource{Name: "api", Type: "http"},
			HTTP:     &HTTP{Method: method, Path: path, Query: query, Headers: headers}}
	}
	first := e.Decide(ctx, in("GET", "/v1/cards", nil, map[string]string{"x-request-id": "1"}))
	if first.Cached || !first.Allow {
		t.Fatalf("first decision: %+v", first)
	}
	again := e.Decide(ctx, in("GET", "/v1/cards", nil, map[string]string{"x-request-id": "2"}))
	if !again.Cached || again.ID == first.ID || again.Allow != first.Allow {
		t.Fatalf("repeated request: %+v (first %+v)", again, first)
	}
	for _, other := range []*Input{
		in("POST", "/v1/cards", nil, nil),
		in("GET", "/v1/cards/7", nil, nil),
		in("GET", "/v1/cards", map[string][]string{"page": {"2"}}, nil),
	} {
		if d := e.Decide(ctx, other); d.Cached {
			t.Errorf("%s %s %v came from the cache", other.HTTP.Method, other.HTTP.Path, other.HTTP.Query)
		}
	}
	post := e.Decide(ctx, in("POST", "/v1/cards", nil, nil))
	if !post.Cached || post.RequireApproval == nil {
		t.Errorf("repeated POST: %+v", post)
	}
}
