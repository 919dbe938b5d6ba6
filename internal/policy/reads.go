package policy

import (
	"maps"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// inputReads is what a loaded policy reads of the input beyond the parts
// every cache key covers (makeCacheKey): the session's fields, the token's
// email and claims, the HTTP headers. A decision is cached under a key that
// also holds each of those the policy reads, so that a policy deciding on
// the client's address or a claim is never answered with a decision made
// for another address or claim.
//
// A policy that reads the input as a whole (json.marshal(input), a
// computed path such as input[k]) or calls a builtin whose result changes
// from one evaluation to the next (time.now_ns, http.send, rand.intn…) runs
// without the cache.
type inputReads struct {
	session map[string]bool // fields of input.session read; "*" for all
	email   bool
	claims  bool
	headers bool
	// uncacheable says why decisions of this policy cannot be cached; ""
	// when they can.
	uncacheable string
}

// analyzeReads walks the parsed modules for every reference to the input
// (the compiler would hide them behind local variables).
func analyzeReads(modules []*ast.Module) inputReads {
	r := inputReads{session: map[string]bool{}}
	for _, m := range modules {
		for _, imp := range m.Imports {
			if ref, ok := imp.Path.Value.(ast.Ref); ok && isInput(ref[0]) {
				r.path(ref[1:])
			}
		}
		var v *ast.GenericVisitor
		v = ast.NewGenericVisitor(func(x any) bool {
			switch x := x.(type) {
			case *ast.Expr:
				if terms, ok := x.Terms.([]*ast.Term); ok && r.call(terms, v) {
					for _, w := range x.With {
						v.Walk(w)
					}
					return true
				}
			case ast.Call:
				return r.call(x, v)
			case ast.Ref:
				if isInput(x[0]) {
					r.path(x[1:])
					for _, t := range x[1:] {
						v.Walk(t)
					}
					return true
				}
			case ast.Var:
				if x.Equal(ast.InputRootDocument.Value) {
					r.whole("it reads the input as a whole")
				}
			}
			return false
		})
		for _, rule := range m.Rules {
			v.Walk(rule)
		}
	}
	return r
}

func isInput(t *ast.Term) bool {
	switch v := t.Value.(type) {
	case ast.Var:
		return v.Equal(ast.InputRootDocument.Value)
	case ast.Ref:
		return len(v) == 1 && isInput(v[0])
	}
	return false
}

var objectGet = ast.MustParseRef("object.get")

// typeChecks are the builtins that tell a value's type only.
var typeChecks = map[string]bool{
	"is_object": true, "is_array": true, "is_set": true, "is_string": true, "is_number": true,
	"is_boolean": true, "is_null": true, "type_name": true,
}

// call notes a builtin call: object.get on the input with a constant path
// reads that path; a nondeterministic builtin makes the policy
// uncacheable. It reports whether it walked the call's operands itself.
func (r *inputReads) call(terms []*ast.Term, v *ast.GenericVisitor) bool {
	if len(terms) == 0 {
		return false
	}
	op, ok := terms[0].Value.(ast.Ref)
	if !ok {
		return false
	}
	if b := ast.BuiltinMap[op.String()]; b != nil && b.Nondeterministic {
		r.whole("it calls " + b.Name + ", whose result changes from one evaluation to the next")
	}
	if typeChecks[op.String()] {
		// A type check of a part of the input reads its type, none of
		// its content.
		for _, t := range terms[1:] {
			if ref, ok := t.Value.(ast.Ref); !ok || !isInput(ref[0]) {
				v.Walk(t)
			}
		}
		return true
	}
	if !op.Equal(objectGet) || len(terms) < 3 || !isInput(terms[1]) {
		return false
	}
	switch p := terms[2].Value.(type) {
	case ast.String:
		r.path([]*ast.Term{terms[2]})
	case *ast.Array:
		var path []*ast.Term
		for i := range p.Len() {
			path = append(path, p.Elem(i))
		}
		r.path(path)
	default:
		r.whole("it reads the input at a computed path")
	}
	for _, t := range terms[2:] {
		v.Walk(t)
	}
	return true
}

// path notes a read of input.<path>; the path's constant prefix is what
// is known of it.
func (r *inputReads) path(path []*ast.Term) {
	var keys []string
	for _, t := range path {
		s, ok := t.Value.(ast.String)
		if !ok {
			break
		}
		keys = append(keys, string(s))
	}
	if len(keys) == 0 {
		r.whole("it reads the input at a computed path")
		return
	}
	sub := ""
	if len(keys) > 1 {
		sub = keys[1]
	}
	switch keys[0] {
	case "session":
		if sub == "" {
			sub = "*"
		}
		r.session[sub] = true
	case "principal":
		switch sub {
		case "":
			r.email, r.claims = true, true
		case "email":
			r.email = true
		case "claims":
			r.claims = true
		}
	case "http":
		if sub == "" || sub == "headers" {
			r.headers = true
		}
	}
}

func (r *inputReads) whole(why string) {
	if r.uncacheable == "" {
		r.uncacheable = why
	}
}

// String lists what the key holds beyond the fixed parts, for the log.
func (r inputReads) String() string {
	var parts []string
	for _, f := range slices.Sorted(maps.Keys(r.session)) {
		parts = append(parts, "session."+f)
	}
	if r.email {
		parts = append(parts, "principal.email")
	}
	if r.claims {
		parts = append(parts, "principal.claims")
	}
	if r.headers {
		parts = append(parts, "http.headers")
	}
	return strings.Join(parts, ", ")
}
