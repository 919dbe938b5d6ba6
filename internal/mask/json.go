package mask

import (
	"fmt"
	"unicode/utf8"
)

// MaxJSONDepth is the deepest nesting of arrays and objects JSON accepts;
// deeper documents are refused with ErrJSON (fail closed).
const MaxJSONDepth = 1000

// sadRule is the internal strategy of a member named like sensitive
// authentication data: its value becomes null unless it is true, false,
// null or a string without digits.
const sadRule Strategy = "\x00sad"

// JSON masks a JSON document (an HTTP body, a json or jsonb value).
//
// paths maps path rules (see ValidJSONPath for the syntax) to strategies;
// the empty strategy is the default. A rule applies to the selected value:
// to a string as [Masker.Value] does, to a number as [Masker.Number] with
// byRule, and to every string and number inside a selected object or array.
// Null makes the selected value null; Drop removes a selected object member
// (an array element or the document itself becomes null). When several
// rules select a value (directly or through a parent), the most restrictive
// one wins (drop, null, redact, hmac, last4, bin_last4, in that order).
//
// With detect set, every other string (object keys included) is masked as
// [Masker.Text] does with the default strategy, and every other number as
// [Masker.Number] does without byRule.
//
// Always, whatever detect says, the value of a member whose name
// [IsSADColumn] recognises (cvv, pin, track2, …) becomes null unless it is
// true, false, null or a string without digits: sensitive authentication
// data is never shown, not even masked. It counts as SAD.
//
// The output is valid JSON whenever the input is. Strings are decoded
// before inspection, so a PAN written with \u escapes is found too; strings
// that change are written back with only the escapes JSON requires; all
// other bytes, whitespace included, are copied unchanged. When nothing
// changes, JSON returns src itself.
//
// Invalid JSON (by the rules of encoding/json's Valid), nesting deeper than
// MaxJSONDepth and invalid path rules are errors (ErrJSON, ErrJSONPath,
// ErrStrategy): the caller must not pass such a body through.
func (m *Masker) JSON(src []byte, paths map[string]Strategy, detect bool) ([]byte, Counts, error) {
	ps, err := compilePaths(paths)
	if err != nil {
		return nil, Counts{}, err
	}
	for i := range ps {
		ps[i].s = m.resolve(ps[i].s)
	}
	w := jsonWriter{m: m, src: src, paths: ps, detect: detect, def: m.resolve("")}
	i := w.ws(0)
	rule := Strategy("")
	if len(ps) > 0 {
		rule = w.match()
	}
	if rule == Drop {
		rule = Null
	}
	end, err := w.value(i, rule, 0, true)
	if err != nil {
		return nil, Counts{}, err
	}
	if end = w.ws(end); end != len(src) {
		return nil, Counts{}, w.fail(end, "data after the document")
	}
	if w.out == nil {
		return src, w.c, nil
	}
	return append(w.out, src[w.copied:]...), w.c, nil
}

// jsonWriter rewrites a document: out holds the output up to src[copied:],
// and is nil as long as nothing changed.
type jsonWriter struct {
	m      *Masker
	src    []byte
	paths  []jsonPath
	detect bool
	def    Strategy

	out     []byte
	copied  int
	c       Counts
	path    []pathElem
	scratch []byte
	dec     []byte
}

func (w *jsonWriter) fail(i int, why string) error {
	return fmt.Errorf("%w: %s at offset %d", ErrJSON, why, i)
}

// replace writes repl in place of src[a:b]. Calls come in increasing order.
func (w *jsonWriter) replace(a, b int, repl []byte) {
	if w.out == nil {
		w.out = make([]byte, 0, len(w.src)+len(repl))
	}
	w.out = append(w.out, w.src[w.copied:a]...)
	w.out = append(w.out, repl...)
	w.copied = b
}

func (w *jsonWriter) ws(i int) int {
	for i < len(w.src) {
		switch w.src[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// match returns the most restrictive rule selecting the current path, or "".
func (w *jsonWriter) match() Strategy {
	var s Strategy
	for _, p := range w.paths {
		if rank(p.s) > rank(s) && matchPath(p.segs, w.path) {
			s = p.s
		}
	}
	return s
}

// childRule returns the rule of the child at the end of w.path, given the
// parent's rule.
func (w *jsonWriter) childRule(parent Strategy) Strategy {
	if len(w.paths) == 0 || parent == Drop {
		return parent
	}
	return stricter(parent, w.match())
}

// value parses the value at i under rule (a strategy, sadRule or "") and
// returns its end. With emit false it only validates.
func (w *jsonWriter) value(i int, rule Strategy, depth int, emit bool) (int, error) {
	src := w.src
	if i >= len(src) {
		return i, w.fail(i, "unexpected end")
	}
	if emit && (rule == Null || rule == Drop) {
		end, err := w.value(i, "", depth, false)
		if err != nil {
			return end, err
		}
		if string(src[i:end]) != "null" {
			w.replace(i, end, []byte("null"))
			w.c.PANs++
		}
		return end, nil
	}
	if emit && rule == sadRule && (src[i] == '{' || src[i] == '[') {
		end, err := w.value(i, "", depth, false)
		if err != nil {
			return end, err
		}
		w.replace(i, end, []byte("null"))
		w.c.SAD++
		return end, nil
	}
	switch c := src[i]; {
	case c == '{':
		return w.object(i, rule, depth+1, emit)
	case c == '[':
		return w.array(i, rule, depth+1, emit)
	case c == '"':
		return w.str(i, rule, emit)
	case c == '-' || isDigit(c):
		return w.number(i, rule, emit)
	case c == 't':
		return w.literal(i, "true")
	case c == 'f':
		return w.literal(i, "false")
	case c == 'n':
		return w.literal(i, "null")
	}
	return i, w.fail(i, "unexpected character")
}

func (w *jsonWriter) literal(i int, lit string) (int, error) {
	if len(w.src)-i < len(lit) || string(w.src[i:i+len(lit)]) != lit {
		return i, w.fail(i, "bad literal")
	}
	return i + len(lit), nil
}

func (w *jsonWriter) object(i int, rule Strategy, depth int, emit bool) (int, error) {
	if depth > MaxJSONDepth {
		return i, w.fail(i, "nested too deeply")
	}
	src := w.src
	i = w.ws(i + 1)
	if i < len(src) && src[i] == '}' {
		return i + 1, nil
	}
	kept := false // a member has been written
	comma := -1   // the comma before the current member
	for {
		if i >= len(src) || src[i] != '"' {
			return i, w.fail(i, "expected a member name")
		}
		keyStart := i
		keyEnd, esc, err := w.scanString(i)
		if err != nil {
			return i, err
		}
		var key, masked []byte
		if emit {
			key = w.content(keyStart, keyEnd, esc)
			if w.detect {
				// Paths and SAD names are matched against the key as
				// the client sees it, so a second pass decides alike.
				if masked = w.maskedText(key); masked != nil {
					key = masked
				}
			}
			if esc || masked != nil {
				key = append([]byte(nil), key...)
			}
		}
		i = w.ws(keyEnd)
		if i >= len(src) || src[i] != ':' {
			return i, w.fail(i, "expected ':'")
		}
		i = w.ws(i + 1)
		if !emit {
			if i, err = w.value(i, "", depth, false); err != nil {
				return i, err
			}
		} else {
			w.path = append(w.path, pathElem{key: key, index: -1})
			child := w.childRule(rule)
			if child != Drop && child != Null && isSADName(key) {
				child = sadRule
			}
			if child == Drop {
				end, err := w.value(i, "", depth, false)
				if err != nil {
					return end, err
				}
				from := keyStart
				if comma >= 0 {
					from = comma
				}
				w.replace(from, end, nil)
				w.c.PANs++
				i = end
			} else {
				if !kept && comma >= 0 {
					w.replace(comma, comma+1, nil) // every member before was dropped
				}
				kept = true
				if masked != nil {
					w.replaceString(keyStart, keyEnd, key)
				}
				if i, err = w.value(i, child, depth, true); err != nil {
					return i, err
				}
			}
			w.path = w.path[:len(w.path)-1]
		}
		i = w.ws(i)
		if i < len(src) && src[i] == ',' {
			comma = i
			i = w.ws(i + 1)
			continue
		}
		if i < len(src) && src[i] == '}' {
			return i + 1, nil
		}
		return i, w.fail(i, "expected ',' or '}'")
	}
}

func (w *jsonWriter) array(i int, rule Strategy, depth int, emit bool) (int, error) {
	if depth > MaxJSONDepth {
		return i, w.fail(i, "nested too deeply")
	}
	src := w.src
	i = w.ws(i + 1)
	if i < len(src) && src[i] == ']' {
		return i + 1, nil
	}
	for n := 0; ; n++ {
		var err error
		if emit {
			w.path = append(w.path, pathElem{index: n})
			child := w.childRule(rule)
			if child == Drop {
				child = Null
			}
			i, err = w.value(i, child, depth, true)
			w.path = w.path[:len(w.path)-1]
		} else {
			i, err = w.value(i, "", depth, false)
		}
		if err != nil {
			return i, err
		}
		i = w.ws(i)
		if i < len(src) && src[i] == ',' {
			i = w.ws(i + 1)
			continue
		}
		if i < len(src) && src[i] == ']' {
			return i + 1, nil
		}
		return i, w.fail(i, "expected ',' or ']'")
	}
}

// scanString validates the string starting at src[i] == '"' and returns its
// end (after the closing quote) and whether it holds escapes.
func (w *jsonWriter) scanString(i int) (int, bool, error) {
	src := w.src
	esc := false
	for j := i + 1; j < len(src); j++ {
		switch c := src[j]; {
		case c == '"':
			return j + 1, esc, nil
		case c == '\\':
			esc = true
			j++
			if j >= len(src) {
				return j, esc, w.fail(j, "unterminated string")
			}
			switch src[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(src) || !isHex(src[j+1]) || !isHex(src[j+2]) || !isHex(src[j+3]) || !isHex(src[j+4]) {
					return j, esc, w.fail(j, "bad \\u escape")
				}
				j += 4
			default:
				return j, esc, w.fail(j, "bad escape")
			}
		case c < 0x20:
			return j, esc, w.fail(j, "control character in string")
		}
	}
	return len(src), esc, w.fail(len(src), "unterminated string")
}

func (w *jsonWriter) str(i int, rule Strategy, emit bool) (int, error) {
	end, esc, err := w.scanString(i)
	if err != nil || !emit {
		return end, err
	}
	switch rule {
	case "":
		if w.detect {
			w.text(i, end, esc)
		}
	case sadRule:
		if hasDigit(w.src[i+1 : end-1]) {
			w.replace(i, end, []byte("null"))
			w.c.SAD++
		}
	default:
		content := w.content(i, end, esc)
		v, c := w.m.Value(content, rule)
		switch {
		case v == nil && c.PANs > 0:
			w.replace(i, end, []byte("null"))
		case !c.IsZero():
			w.replaceString(i, end, v)
		}
		w.c.Add(c)
	}
	return end, nil
}

// content returns the decoded content of the string src[i:end].
func (w *jsonWriter) content(i, end int, esc bool) []byte {
	raw := w.src[i+1 : end-1]
	if !esc {
		return raw
	}
	w.dec = decodeString(w.dec[:0], raw)
	return w.dec
}

// text applies detection to the string src[i:end].
func (w *jsonWriter) text(i, end int, esc bool) {
	if out := w.maskedText(w.content(i, end, esc)); out != nil {
		w.replaceString(i, end, out)
	}
}

// maskedText returns content masked by detection, in a scratch buffer valid
// until the next call, or nil if detection finds nothing. It adds to the
// counts.
func (w *jsonWriter) maskedText(content []byte) []byte {
	out, c := w.m.Text(w.scratch[:0], content, w.def)
	if c.IsZero() {
		return nil
	}
	w.scratch = out[:0]
	w.c.Add(c)
	return out
}

// replaceString writes the string src[i:end] anew with content v.
func (w *jsonWriter) replaceString(i, end int, v []byte) {
	if w.out == nil {
		w.out = make([]byte, 0, len(w.src)+len(v))
	}
	w.out = append(w.out, w.src[w.copied:i]...)
	w.out = appendQuoted(w.out, v)
	w.copied = end
}

func (w *jsonWriter) number(i int, rule Strategy, emit bool) (int, error) {
	src := w.src
	j := i
	if src[j] == '-' {
		j++
	}
	switch {
	case j < len(src) && src[j] == '0':
		j++
	case j < len(src) && isDigit(src[j]):
		for j < len(src) && isDigit(src[j]) {
			j++
		}
	default:
		return j, w.fail(j, "bad number")
	}
	if j < len(src) && src[j] == '.' {
		j++
		if j >= len(src) || !isDigit(src[j]) {
			return j, w.fail(j, "bad number")
		}
		for j < len(src) && isDigit(src[j]) {
			j++
		}
	}
	exp := j < len(src) && (src[j] == 'e' || src[j] == 'E')
	if exp {
		j++
		if j < len(src) && (src[j] == '+' || src[j] == '-') {
			j++
		}
		if j >= len(src) || !isDigit(src[j]) {
			return j, w.fail(j, "bad number")
		}
		for j < len(src) && isDigit(src[j]) {
			j++
		}
	}
	if !emit {
		return j, nil
	}
	tok := src[i:j]
	var (
		v []byte
		c Counts
	)
	switch rule {
	case "":
		if !w.detect || (!exp && j-i < minPAN) {
			return j, nil
		}
		v, c = w.m.Number(tok, w.def, false)
	case sadRule:
		w.replace(i, j, []byte("null"))
		w.c.SAD++
		return j, nil
	default:
		v, c = w.m.Number(tok, rule, true)
	}
	switch {
	case v == nil && c.PANs > 0:
		w.replace(i, j, []byte("null"))
	case !c.IsZero():
		w.replace(i, j, v)
	}
	w.c.Add(c)
	return j, nil
}

func hasDigit(b []byte) bool {
	for _, c := range b {
		if isDigit(c) {
			return true
		}
	}
	return false
}

// decodeString appends the decoded content of a valid JSON string body (the
// bytes between the quotes) to dst. A lone surrogate decodes as U+FFFD, as
// in encoding/json.
func decodeString(dst, s []byte) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		i++
		switch s[i] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(s[i+1 : i+5])
			i += 4
			if r >= 0xd800 && r < 0xdc00 && i+6 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
				if r2 := hex4(s[i+3 : i+7]); r2 >= 0xdc00 && r2 < 0xe000 {
					r = 0x10000 + (r-0xd800)<<10 + (r2 - 0xdc00)
					i += 6
				}
			}
			if r >= 0xd800 && r < 0xe000 {
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
		default: // '"', '\\', '/'
			dst = append(dst, s[i])
		}
	}
	return dst
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		r <<= 4
		switch {
		case isDigit(c):
			r |= rune(c - '0')
		default:
			r |= rune((c|0x20)-'a') + 10
		}
	}
	return r
}

// appendQuoted appends v as a JSON string, escaping only '"', '\\' and
// control characters; other bytes are copied as they are.
func appendQuoted(dst, v []byte) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range v {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}
