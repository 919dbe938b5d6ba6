package audit

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/custos-dev/custos/internal/mask"
)

// Scrubber keeps card numbers out of audit records. A PAN found in text
// (by internal/mask's detection: brand, length, Luhn, boundaries) is
// replaced by a token holding HMAC-SHA256(key, PAN digits) and the last four
// digits, "[PAN hmac-sha256=<64 hex> last4=4242]"; track data is removed.
// The HMAC is mask.Fingerprint's: the same PAN gives the same token under
// one key, so an auditor holding a PAN and the key can find its records,
// and nobody without the key can turn a token back into a PAN (PCI DSS
// 3.5.1). The key must not be the one of the mask HMAC strategy, so that
// what clients see cannot be matched against audit records.
//
// A Scrubber is safe for concurrent use.
type Scrubber struct {
	key []byte
	m   *mask.Masker
}

// NewScrubber returns a Scrubber keyed with key (at least mask.MinKeyLen
// bytes; copied).
func NewScrubber(key []byte) (*Scrubber, error) {
	if len(key) < mask.MinKeyLen {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", mask.ErrKey, len(key), mask.MinKeyLen)
	}
	m, err := mask.New(mask.Options{Default: mask.Last4})
	if err != nil {
		return nil, err
	}
	return &Scrubber{key: append([]byte(nil), key...), m: m}, nil
}

// Fingerprint returns the token of one PAN: "hmac-sha256=<hex> last4=NNNN".
func (s *Scrubber) Fingerprint(pan string) string {
	h, last4 := mask.Fingerprint(s.key, []byte(pan))
	return "hmac-sha256=" + h + " last4=" + last4
}

// Scrub returns text with every PAN replaced by "[PAN <fingerprint>]" and
// track data removed, and the number of PANs and track data items it
// replaced. Text without either comes back as is.
//
// Where masking had to remove track data, or where the PANs' places cannot
// be told apart, the PANs are replaced by mask.Redacted instead (no
// fingerprint): failing towards less information, never towards a clear
// PAN.
func (s *Scrubber) Scrub(text string) (string, int) {
	if !containsPAN(text) {
		return text, 0
	}
	src := []byte(text)
	out, c := s.m.Text(make([]byte, 0, len(src)), src, mask.Last4)
	n := c.PANs + c.SAD
	if c.SAD == 0 && len(out) == len(src) {
		var b strings.Builder
		regions := findPANs(src, out)
		for _, f := range regions {
			b.Write(src[f.prevEnd:f.start])
			b.WriteString("[PAN ")
			b.WriteString(s.fingerprintRegion(src[f.start:f.end], f.last4))
			b.WriteString("]")
		}
		b.Write(src[lastEnd(regions):])
		res := b.String()
		if !mask.Contains([]byte(res)) {
			return res, n
		}
	}
	red, c2 := s.m.Text(nil, src, mask.Redact)
	if mask.Contains(red) { // cannot happen: Text re-scans its output
		return mask.Redacted, n + c2.PANs
	}
	return string(red), n
}

// Fingerprints returns the fingerprints of the PANs found in texts, each
// once, in the order found.
func (s *Scrubber) Fingerprints(texts ...string) []string {
	var out []string
	seen := map[string]bool{}
	for _, t := range texts {
		src := []byte(t)
		if !mask.Contains(src) {
			continue
		}
		masked, c := s.m.Text(make([]byte, 0, len(src)), src, mask.Last4)
		if c.PANs == 0 || len(masked) != len(src) {
			// Track data changes the length; its PAN is SAD-adjacent and is
			// not fingerprinted.
			continue
		}
		for _, f := range findPANs(src, masked) {
			fp := s.fingerprintRegion(src[f.start:f.end], f.last4)
			if !seen[fp] {
				seen[fp] = true
				out = append(out, fp)
			}
		}
	}
	return out
}

// fingerprintRegion fingerprints the digits of region; the last four are
// shown only when masking showed them (last4).
func (s *Scrubber) fingerprintRegion(region []byte, last4 bool) string {
	h, l4 := mask.Fingerprint(s.key, region)
	if !last4 {
		return "hmac-sha256=" + h
	}
	return "hmac-sha256=" + h + " last4=" + l4
}

// panRegion is one PAN found by comparing a text with its Last4 masking.
type panRegion struct {
	prevEnd    int // end of the previous region (where copying resumes)
	start, end int
	last4      bool // the region ends in four digits masking left visible
}

// findPANs finds the PANs of src from masked, its Last4 masking of the same
// length: Last4 turns every digit of a PAN but the last four into '*' and
// leaves separators in place. A region starts at the first hidden digit and
// ends after the four visible digits that follow the last hidden one (the
// union of overlapping PANs in one run is one region).
func findPANs(src, masked []byte) []panRegion {
	var rs []panRegion
	prev := 0
	for i := 0; i < len(src); {
		if masked[i] == src[i] {
			i++
			continue
		}
		start, kept, end := i, 0, i
		for j := i; j < len(src); j++ {
			c := src[j]
			if c >= '0' && c <= '9' {
				if masked[j] != c {
					kept = 0
				} else {
					kept++
				}
				end = j + 1
				if kept == 4 {
					break
				}
				continue
			}
			if (c == ' ' || c == '-') && j+1 < len(src) && src[j+1] >= '0' && src[j+1] <= '9' {
				continue
			}
			break
		}
		rs = append(rs, panRegion{prevEnd: prev, start: start, end: end, last4: kept == 4})
		prev, i = end, end
	}
	return rs
}

func lastEnd(rs []panRegion) int {
	if len(rs) == 0 {
		return 0
	}
	return rs[len(rs)-1].end
}

// containsPAN is mask.Contains on a string, without copying it: the
// detector only reads its input.
func containsPAN(s string) bool {
	// A PAN (and so track data) has at least 12 digits: most strings
	// (keys, names, ids) are ruled out by counting.
	digits := 0
	for i := 0; i < len(s); i++ {
		if s[i]-'0' <= 9 {
			digits++
		}
	}
	if digits < 12 {
		return false
	}
	return mask.Contains(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// The attributes of a statement record that hold its captured result: the
// column names, and each row as a JSON array of strings or nulls.
const (
	attrResultColumns = "custos.result.columns"
	attrResultRows    = "custos.result.rows"
)

// dropSAD removes sensitive authentication data (PCI DSS 3.3.1: never
// stored, not even masked) from attrs, in place (a list is copied before
// it changes), and returns how many values it removed:
//
//   - in a captured result, every value of a column named like SAD
//     (mask.IsSADColumn: cvv, pin, track2, ...) becomes null, and JSON
//     values lose (null) their members named like SAD;
//   - an attribute whose own name is SAD-like keeps no value.
//
// Track data anywhere is removed by the PAN scrubbing that follows. This
// is the journal's own check: what custos keeps of results inherits every
// leak of the paths before it, and the journal is append-only.
func (s *Scrubber) dropSAD(attrs []Attr) int {
	dropped := 0
	var cols []string
	rows := -1
	for i := range attrs {
		a := &attrs[i]
		switch {
		case a.Key == attrResultColumns && a.Value.Kind() == KindStrings:
			cols = a.Value.l
		case a.Key == attrResultRows && a.Value.Kind() == KindStrings:
			rows = i
		case sadAttrName(a.Key):
			switch a.Value.Kind() {
			case KindString:
				if a.Value.s != "" {
					a.Value.s = ""
					dropped++
				}
			case KindStrings:
				if len(a.Value.l) > 0 {
					a.Value.l = []string{}
					dropped++
				}
			}
		}
	}
	if rows < 0 {
		return dropped
	}
	sad := make([]bool, len(cols))
	for i, c := range cols {
		sad[i] = mask.IsSADColumn(c)
	}
	a := &attrs[rows]
	var l []string
	for k, row := range a.Value.l {
		nr, n := s.dropSADRow(row, sad)
		if n == 0 {
			continue
		}
		dropped += n
		if l == nil {
			l = slices.Clone(a.Value.l)
		}
		l[k] = nr
	}
	if l != nil {
		a.Value.l = l
	}
	return dropped
}

// sadAttrName reports whether an attribute's name (its last dotted part)
// names sensitive authentication data. Every record asks it of each of its
// keys, and keys are few (custos' own, mostly constants): the answers are
// kept, up to sadNamesMax of them.
func sadAttrName(key string) bool {
	if v, ok := sadNames.Load(key); ok {
		return v.(bool)
	}
	name := key
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		name = name[i+1:]
	}
	sad := mask.IsSADColumn(name)
	if sadNamesN.Load() < sadNamesMax {
		if _, loaded := sadNames.LoadOrStore(strings.Clone(key), sad); !loaded {
			sadNamesN.Add(1)
		}
	}
	return sad
}

// sadNames caches sadAttrName's answers by key.
var (
	sadNames  sync.Map // string -> bool
	sadNamesN atomic.Int64
)

const sadNamesMax = 4096

// dropSADRow nulls a captured row's values in SAD columns and SAD members
// of its JSON values. A row that is not a JSON array of strings is dropped
// whole ("[]"): what cannot be inspected is not kept.
func (s *Scrubber) dropSADRow(row string, sad []bool) (string, int) {
	var vals []*string
	if err := json.Unmarshal([]byte(row), &vals); err != nil {
		return "[]", 1
	}
	n := 0
	for i, v := range vals {
		if v == nil {
			continue
		}
		if i < len(sad) && sad[i] {
			vals[i] = nil
			n++
			continue
		}
		t := strings.TrimSpace(*v)
		if len(t) < 2 || (t[0] != '{' && t[0] != '[') || !json.Valid([]byte(t)) {
			continue
		}
		out, c, err := s.m.JSON([]byte(t), nil, false)
		if err != nil {
			vals[i] = nil
			n++
			continue
		}
		if c.SAD > 0 {
			str := string(out)
			vals[i] = &str
			n += c.SAD
		}
	}
	if n == 0 {
		return row, 0
	}
	b, err := json.Marshal(vals)
	if err != nil {
		return "[]", n
	}
	return string(b), n
}
