package mask

import (
	"fmt"
	"strconv"
	"strings"
)

// JSON path rules select values in a JSON document with a small subset of
// JSONPath (RFC 9535):
//
//	$                 the whole document
//	.name  ['name']   a member of an object (quoted form for any name; \' \" \\ escapes)
//	[3]               an element of an array
//	.*  [*]           every member or element
//	..name  ..*  ..[3]  the same, at any depth below
//
// For example $.card.number, $.cards[*].pan, $..cvv, $['card-data'].pan.
// Filters, slices, unions and negative indices are not supported.

// maxPathSegments bounds a path's length.
const maxPathSegments = 32

// pathSeg is one step of a path.
type pathSeg struct {
	desc  bool   // preceded by "..": matches at any depth below
	any   bool   // * : any member or element
	index int    // >= 0: this array element; -1: a member name
	key   string // the member name when index < 0 and !any
}

// jsonPath is a compiled path rule.
type jsonPath struct {
	segs []pathSeg
	s    Strategy
}

// ValidJSONPath reports whether p is a path rule JSON accepts, so that a
// policy or configuration can be checked when it is loaded. Errors wrap
// ErrJSONPath.
func ValidJSONPath(p string) error {
	_, err := parsePath(p)
	return err
}

func compilePaths(paths map[string]Strategy) ([]jsonPath, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	out := make([]jsonPath, 0, len(paths))
	for p, s := range paths {
		segs, err := parsePath(p)
		if err != nil {
			return nil, err
		}
		if _, err := ParseStrategy(string(s)); err != nil {
			return nil, fmt.Errorf("json path %q: %w", p, err)
		}
		out = append(out, jsonPath{segs: segs, s: s})
	}
	return out, nil
}

func parsePath(p string) ([]pathSeg, error) {
	bad := func(why string) error { return fmt.Errorf("%w: %q: %s", ErrJSONPath, p, why) }
	if !strings.HasPrefix(p, "$") {
		return nil, bad("must start with $")
	}
	var segs []pathSeg
	i := 1
	for i < len(p) {
		if len(segs) == maxPathSegments {
			return nil, bad("too many segments")
		}
		seg := pathSeg{index: -1}
		switch {
		case strings.HasPrefix(p[i:], ".."):
			seg.desc = true
			i += 2
			if i < len(p) && p[i] == '[' {
				break
			}
			fallthrough
		case p[i] == '.':
			if !seg.desc {
				i++
			}
			if i < len(p) && p[i] == '*' {
				seg.any = true
				i++
				segs = append(segs, seg)
				continue
			}
			j := i
			for j < len(p) && p[j] != '.' && p[j] != '[' {
				j++
			}
			if j == i {
				return nil, bad("empty member name")
			}
			if strings.ContainsAny(p[i:j], "]'\"* \t") {
				return nil, bad("use ['name'] for this member name")
			}
			seg.key = p[i:j]
			i = j
			segs = append(segs, seg)
			continue
		case p[i] == '[':
		default:
			return nil, bad(fmt.Sprintf("unexpected %q at %d", p[i], i))
		}
		// A bracket: [*], [n], ['name'] or ["name"].
		i++
		if i >= len(p) {
			return nil, bad("unterminated [")
		}
		switch c := p[i]; {
		case c == '*':
			seg.any = true
			i++
		case c == '\'' || c == '"':
			var name strings.Builder
			j := i + 1
			for ; j < len(p) && p[j] != c; j++ {
				if p[j] == '\\' && j+1 < len(p) && (p[j+1] == '\'' || p[j+1] == '"' || p[j+1] == '\\') {
					j++
				}
				name.WriteByte(p[j])
			}
			if j >= len(p) {
				return nil, bad("unterminated quoted name")
			}
			seg.key = name.String()
			i = j + 1
		case isDigit(c):
			j := i
			for j < len(p) && isDigit(p[j]) {
				j++
			}
			n, err := strconv.Atoi(p[i:j])
			if err != nil || (j-i > 1 && p[i] == '0') {
				return nil, bad("bad index")
			}
			seg.index = n
			i = j
		default:
			return nil, bad("unsupported selector")
		}
		if i >= len(p) || p[i] != ']' {
			return nil, bad("missing ]")
		}
		i++
		segs = append(segs, seg)
	}
	return segs, nil
}

// pathElem is one step of the path to the current JSON value.
type pathElem struct {
	key   []byte // the member name (decoded); nil for an array element
	index int    // the element index; -1 for a member
}

func (s pathSeg) matches(e pathElem) bool {
	switch {
	case s.any:
		return true
	case s.index >= 0:
		return e.index == s.index
	default:
		return e.index < 0 && string(e.key) == s.key
	}
}

// matchPath reports whether segs select the value at path.
func matchPath(segs []pathSeg, path []pathElem) bool {
	if len(segs) == 0 {
		return len(path) == 0
	}
	s := segs[0]
	if s.desc {
		for k := range path {
			if s.matches(path[k]) && matchPath(segs[1:], path[k+1:]) {
				return true
			}
		}
		return false
	}
	return len(path) > 0 && s.matches(path[0]) && matchPath(segs[1:], path[1:])
}

// rank orders strategies from the most revealing to the most restrictive;
// when several rules select a value, the most restrictive one applies.
func rank(s Strategy) int {
	switch s {
	case "":
		return 0
	case BINLast4:
		return 1
	case Last4:
		return 2
	case HMAC:
		return 3
	case Redact:
		return 4
	case Null:
		return 5
	case Drop:
		return 6
	}
	return 4 // unknown: Redact
}

func stricter(a, b Strategy) Strategy {
	if rank(b) > rank(a) {
		return b
	}
	return a
}
