package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// FormatVersion is the version of the record encoding, the "v" member of
// every record.
const FormatVersion = 1

// HashSize is the size of a record hash (SHA-256).
const HashSize = sha256.Size

// Hash is the SHA-256 hash of a record, chained to the one before it.
type Hash [HashSize]byte

// String returns the lowercase hex form used in records.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// timeLayout is the canonical time format: UTC, always nine fractional
// digits, so that a time has exactly one encoding.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// Kind is the type of an attribute value.
type Kind uint8

// The attribute value kinds.
const (
	KindString Kind = iota + 1
	KindInt
	KindBool
	KindStrings
)

// Value is an attribute value: a string, an integer, a boolean or a list of
// strings. The zero Value is the empty string.
type Value struct {
	kind Kind
	s    string
	i    int64
	b    bool
	l    []string
}

// Kind returns the value's kind.
func (v Value) Kind() Kind {
	if v.kind == 0 {
		return KindString
	}
	return v.kind
}

// Str returns the value of a string attribute.
func (v Value) Str() string { return v.s }

// Int returns the value of an integer attribute.
func (v Value) Int() int64 { return v.i }

// Bool returns the value of a boolean attribute.
func (v Value) Bool() bool { return v.b }

// Strings returns the value of a list attribute.
func (v Value) Strings() []string { return v.l }

// String formats the value for display (CSV cells, messages).
func (v Value) String() string {
	switch v.Kind() {
	case KindInt:
		return strconv.FormatInt(v.i, 10)
	case KindBool:
		return strconv.FormatBool(v.b)
	case KindStrings:
		b, _ := json.Marshal(v.l)
		return string(b)
	}
	return v.s
}

// Attr is one attribute of a record: a semantic-convention or custos.* key
// and its value.
type Attr struct {
	Key   string
	Value Value
}

// String returns a string attribute.
func String(key, v string) Attr { return Attr{Key: key, Value: Value{kind: KindString, s: v}} }

// Int returns an integer attribute.
func Int(key string, v int64) Attr { return Attr{Key: key, Value: Value{kind: KindInt, i: v}} }

// Bool returns a boolean attribute.
func Bool(key string, v bool) Attr { return Attr{Key: key, Value: Value{kind: KindBool, b: v}} }

// Strings returns a list-of-strings attribute.
func Strings(key string, v []string) Attr {
	return Attr{Key: key, Value: Value{kind: KindStrings, l: slices.Clone(v)}}
}

// Record is one journal record as stored: the event with its place in the
// chain.
type Record struct {
	Seq      uint64
	PrevHash Hash
	Hash     Hash
	Time     time.Time
	Name     string // the OTel EventName
	Severity Severity
	TraceID  string // 32 lowercase hex digits, or empty
	SpanID   string // 16 lowercase hex digits, or empty
	Attrs    []Attr // sorted by key, keys unique
}

// Attr returns the value of the attribute key and whether it is present.
func (r *Record) Attr(key string) (Value, bool) {
	i, ok := slices.BinarySearchFunc(r.Attrs, key, func(a Attr, k string) int {
		switch {
		case a.Key < k:
			return -1
		case a.Key > k:
			return 1
		}
		return 0
	})
	if !ok {
		return Value{}, false
	}
	return r.Attrs[i].Value, true
}

// Errors of record decoding; test with errors.Is.
var (
	// ErrMalformed: a line is not a record in the canonical encoding.
	ErrMalformed = errors.New("malformed audit record")
	// ErrHashMismatch: a record's hash is not the hash of its content: the
	// record was edited.
	ErrHashMismatch = errors.New("audit record hash mismatch")
)

// hashSuffixLen is the length of `,"hash":"<64 hex>"}`, the end of a line.
const hashSuffixLen = len(`,"hash":"`) + 2*HashSize + len(`"}`)

// appendTail appends the part of a record's body that comes after prev_hash:
// `"time":…,"event":…,"severity":…[,"trace_id":…][,"span_id":…],"attrs":{…}`.
// attrs must be sorted with unique keys.
func appendTail(dst []byte, t time.Time, name string, sev Severity, traceID, spanID string, frags []frag, attrs []Attr) ([]byte, error) {
	dst = append(dst, `"time":"`...)
	dst = t.UTC().AppendFormat(dst, timeLayout)
	dst = append(dst, `","event":`...)
	dst = appendString(dst, name)
	dst = append(dst, `,"severity":`...)
	dst = strconv.AppendInt(dst, int64(sev), 10)
	if traceID != "" {
		dst = append(dst, `,"trace_id":"`...)
		dst = append(dst, traceID...)
		dst = append(dst, '"')
	}
	if spanID != "" {
		dst = append(dst, `,"span_id":"`...)
		dst = append(dst, spanID...)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"attrs":{`...)
	// attrs and the template's encoded frags are each sorted by key: merge.
	i, k := 0, 0
	for n := 0; i < len(frags) || k < len(attrs); n++ {
		if n > 0 {
			dst = append(dst, ',')
		}
		switch {
		case k == len(attrs) || (i < len(frags) && frags[i].key < attrs[k].Key):
			dst = append(dst, frags[i].enc...)
			i++
		case i < len(frags) && frags[i].key == attrs[k].Key:
			return nil, fmt.Errorf("%w: attribute %q set twice", ErrEvent, attrs[k].Key)
		default:
			dst = appendString(dst, attrs[k].Key)
			dst = append(dst, ':')
			dst = appendValue(dst, attrs[k].Value)
			k++
		}
	}
	return append(dst, '}'), nil
}

// appendHead appends `{"v":1,"seq":N,"prev_hash":"<hex>",`.
func appendHead(dst []byte, seq uint64, prev Hash) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, FormatVersion, 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"prev_hash":"`...)
	dst = hex.AppendEncode(dst, prev[:])
	return append(dst, `",`...)
}

// chainHash is hash_n = SHA-256(hash_{n-1} || body).
func chainHash(prev Hash, body []byte) Hash {
	h := sha256.New()
	h.Write(prev[:])
	h.Write(body)
	var out Hash
	h.Sum(out[:0])
	return out
}

// appendLine appends the stored line of a record: body without its closing
// brace, the hash member, the brace and a newline. body must end in '}'.
func appendLine(dst, body []byte, h Hash) []byte {
	dst = append(dst, body[:len(body)-1]...)
	dst = append(dst, `,"hash":"`...)
	dst = hex.AppendEncode(dst, h[:])
	return append(dst, "\"}\n"...)
}

// Body returns the canonical body of r: the bytes its hash covers.
func (r *Record) Body() []byte {
	b := appendHead(nil, r.Seq, r.PrevHash)
	// The attributes of a decoded record are sorted and unique: no error.
	b, _ = appendTail(b, r.Time, r.Name, r.Severity, r.TraceID, r.SpanID, nil, r.Attrs)
	return append(b, '}')
}

// appendValue appends the canonical encoding of v.
func appendValue(dst []byte, v Value) []byte {
	switch v.Kind() {
	case KindInt:
		return strconv.AppendInt(dst, v.i, 10)
	case KindBool:
		return strconv.AppendBool(dst, v.b)
	case KindStrings:
		dst = append(dst, '[')
		for i, s := range v.l {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, s)
		}
		return append(dst, ']')
	}
	return appendString(dst, v.s)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string in the canonical form: '"' and
// '\\' escaped with a backslash, \n \r \t as such, other bytes below 0x20
// as \u00xx (lowercase hex), everything else (valid UTF-8) as is. s must be
// valid UTF-8 (see validUTF8).
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// validUTF8 returns s with invalid UTF-8 sequences replaced by U+FFFD.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return string(bytes.ToValidUTF8([]byte(s), []byte("\uFFFD")))
}

// wireRecord is a record body as JSON, for decoding.
type wireRecord struct {
	V        *int                       `json:"v"`
	Seq      *uint64                    `json:"seq"`
	PrevHash string                     `json:"prev_hash"`
	Time     string                     `json:"time"`
	Event    string                     `json:"event"`
	Severity int                        `json:"severity"`
	TraceID  string                     `json:"trace_id"`
	SpanID   string                     `json:"span_id"`
	Attrs    map[string]json.RawMessage `json:"attrs"`
}

// DecodeRecord decodes one stored line (with or without its newline). It
// accepts only the canonical encoding: a line that decodes but would be
// encoded differently is ErrMalformed. If the content does not match the
// stored hash it returns the record and an error wrapping ErrHashMismatch.
func DecodeRecord(line []byte) (Record, error) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	if len(line) < hashSuffixLen+2 || !bytes.HasPrefix(line[len(line)-hashSuffixLen:], []byte(`,"hash":"`)) ||
		!bytes.HasSuffix(line, []byte(`"}`)) {
		return Record{}, fmt.Errorf("%w: no hash member at the end", ErrMalformed)
	}
	var stored Hash
	hexHash := line[len(line)-hashSuffixLen+len(`,"hash":"`) : len(line)-2]
	if err := decodeHexHash(&stored, hexHash); err != nil {
		return Record{}, fmt.Errorf("%w: hash: %w", ErrMalformed, err)
	}
	body := make([]byte, 0, len(line)-hashSuffixLen+1)
	body = append(append(body, line[:len(line)-hashSuffixLen]...), '}')

	var w wireRecord
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if dec.More() {
		return Record{}, fmt.Errorf("%w: data after the record", ErrMalformed)
	}
	if w.V == nil || *w.V != FormatVersion {
		return Record{}, fmt.Errorf("%w: version is not %d", ErrMalformed, FormatVersion)
	}
	if w.Seq == nil || *w.Seq == 0 {
		return Record{}, fmt.Errorf("%w: no seq", ErrMalformed)
	}
	r := Record{Seq: *w.Seq, Hash: stored, Name: w.Event, Severity: Severity(w.Severity), TraceID: w.TraceID, SpanID: w.SpanID}
	if !isLowerHex(r.TraceID, 32) || !isLowerHex(r.SpanID, 16) {
		return Record{}, fmt.Errorf("%w: trace_id or span_id is not lowercase hex", ErrMalformed)
	}
	if err := decodeHexHash(&r.PrevHash, []byte(w.PrevHash)); err != nil {
		return Record{}, fmt.Errorf("%w: prev_hash: %w", ErrMalformed, err)
	}
	t, err := time.Parse(time.RFC3339Nano, w.Time)
	if err != nil {
		return Record{}, fmt.Errorf("%w: time: %w", ErrMalformed, err)
	}
	r.Time = t.UTC()
	keys := make([]string, 0, len(w.Attrs))
	for k := range w.Attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	r.Attrs = make([]Attr, 0, len(keys))
	for _, k := range keys {
		v, err := decodeValue(w.Attrs[k])
		if err != nil {
			return Record{}, fmt.Errorf("%w: attribute %q: %w", ErrMalformed, k, err)
		}
		r.Attrs = append(r.Attrs, Attr{Key: k, Value: v})
	}
	if !bytes.Equal(r.Body(), body) {
		return Record{}, fmt.Errorf("%w: not in the canonical encoding", ErrMalformed)
	}
	if got := chainHash(r.PrevHash, body); got != stored {
		return r, fmt.Errorf("%w: seq %d: content hashes to %s, record says %s", ErrHashMismatch, r.Seq, got, stored)
	}
	return r, nil
}

// decodeHexHash decodes 64 lowercase hex digits.
func decodeHexHash(dst *Hash, src []byte) error {
	if len(src) != 2*HashSize {
		return fmt.Errorf("%d hex digits, want %d", len(src), 2*HashSize)
	}
	for _, c := range src {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return errors.New("not lowercase hex")
		}
	}
	_, err := hex.Decode(dst[:], src)
	return err
}

// decodeValue decodes one attribute value: a string, an integer, a boolean
// or an array of strings.
func decodeValue(raw json.RawMessage) (Value, error) {
	if len(raw) == 0 {
		return Value{}, errors.New("empty")
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return Value{}, err
		}
		return Value{kind: KindString, s: s}, nil
	case '[':
		var l []string
		if err := json.Unmarshal(raw, &l); err != nil {
			return Value{}, err
		}
		if l == nil {
			return Value{}, errors.New("null list")
		}
		return Value{kind: KindStrings, l: l}, nil
	case 't', 'f':
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return Value{}, err
		}
		return Value{kind: KindBool, b: b}, nil
	}
	i, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return Value{}, errors.New("not a string, integer, boolean or list of strings")
	}
	return Value{kind: KindInt, i: i}, nil
}

// isLowerHex reports whether s is empty or n lowercase hex digits.
func isLowerHex(s string, n int) bool {
	if s == "" {
		return true
	}
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
