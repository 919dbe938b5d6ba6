package policy

import "github.com/custos-dev/custos/internal/authn"

// InputVersion is the version of the policy input this package produces.
// Decide fills it in when Input.Version is zero.
const InputVersion = 1

// The kinds of request (Input.Kind).
const (
	KindConnection = "connection"
	KindSQL        = "sql"
	KindHTTP       = "http"
)

// Input is the policy input, data.custos.decision's `input`; every field
// is documented in policies/README.md.
type Input struct {
	Version   int       `json:"version"`
	Kind      string    `json:"kind"`
	Principal Principal `json:"principal"`
	Session   Session   `json:"session"`
	Resource  Resource  `json:"resource"`
	SQL       *SQL      `json:"sql,omitempty"`
	HTTP      *HTTP     `json:"http,omitempty"`
}

// Principal is the verified token's subject.
type Principal struct {
	Sub    string   `json:"sub"`
	Iss    string   `json:"iss"`
	Groups []string `json:"groups"`
	Email  string   `json:"email,omitempty"`
	// Act is the RFC 8693 actor claim, when the token carries one.
	Act    *Actor         `json:"act,omitempty"`
	Claims map[string]any `json:"claims"`
}

// PrincipalOf is the policy input's principal for a verified token: the
// same for every kind of request. Groups and claims are never null in the
// input (an empty list, an empty object), so that a policy's count() or
// iteration over them needs no guard.
func PrincipalOf(p *authn.Principal) Principal {
	in := Principal{Sub: p.Subject, Iss: p.Issuer, Groups: p.Groups, Email: p.Email, Claims: p.Claims}
	if in.Groups == nil {
		in.Groups = []string{}
	}
	if in.Claims == nil {
		in.Claims = map[string]any{}
	}
	if p.Act != nil {
		in.Act = &Actor{Sub: p.Act.Subject}
	}
	return in
}

// Actor names the other party of a delegated token.
type Actor struct {
	Sub string `json:"sub"`
}

// Session describes the client connection a request came over.
type Session struct {
	ID              string `json:"id"`
	ClientAddress   string `json:"client_address"`
	ApplicationName string `json:"application_name"`
	Database        string `json:"database"`
}

// Resource is the configured resource the request is for.
type Resource struct {
	Name   string            `json:"name"`
	Type   string            `json:"type"`
	Labels map[string]string `json:"labels"`
}

// SQL is a batch of statements (kind "sql").
type SQL struct {
	Normalized  string `json:"normalized"`
	Fingerprint string `json:"fingerprint"`
	// Statements is the classification of every statement of the batch, a
	// JSON array of statement objects: pass []sqlclass.Statement, or the JSON
	// itself as a json.RawMessage. It is marshalled with encoding/json, so
	// this package needs no import of sqlclass.
	Statements any `json:"statements"`
}

// HTTP is an HTTP request (kind "http").
type HTTP struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Headers map[string]string   `json:"headers"`
	Query   map[string][]string `json:"query"`
}
