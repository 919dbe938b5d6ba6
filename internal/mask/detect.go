package mask

import "bytes"

// PAN lengths (ISO/IEC 7812: 12 to 19 digits).
const (
	minPAN = 12
	maxPAN = 19
)

func isDigit(c byte) bool { return c-'0' <= 9 }

func isSep(c byte) bool { return c == ' ' || c == '-' }

func isLetter(c byte) bool { return (c|0x20)-'a' <= 'z'-'a' }

func isAlnum(c byte) bool { return isDigit(c) || isLetter(c) }

func isHex(c byte) bool { return isDigit(c) || (c|0x20)-'a' <= 'f'-'a' }

// glue reports whether c, next to a digit run, makes the run part of a
// longer word: a letter (x4242…, 4242…x, hex and base-n tokens) or '*' (a
// run touching '*' is already masked; this keeps masking idempotent).
func glue(c byte) bool { return isLetter(c) || c == '*' }

// brandRule is one IIN range and the PAN lengths valid for it.
type brandRule struct {
	name   string
	width  int    // number of leading digits compared
	lo, hi int    // inclusive range of those digits
	lens   uint32 // bit L set: length L is valid
}

func lengths(ls ...int) uint32 {
	var b uint32
	for _, l := range ls {
		b |= 1 << l
	}
	return b
}

func lengthRange(lo, hi int) uint32 {
	var b uint32
	for l := lo; l <= hi; l++ {
		b |= 1 << l
	}
	return b
}

// brands is the IIN table of REFERENCE §7. A number is a PAN candidate if any
// rule matches (the ranges overlap: 6011 is Discover and Maestro).
var brands = []brandRule{
	{"visa", 1, 4, 4, lengths(13, 16, 19)},
	{"mastercard", 2, 51, 55, lengths(16)},
	{"mastercard", 4, 2221, 2720, lengths(16)},
	{"amex", 2, 34, 34, lengths(15)},
	{"amex", 2, 37, 37, lengths(15)},
	{"discover", 4, 6011, 6011, lengthRange(16, 19)},
	{"discover", 3, 644, 649, lengthRange(16, 19)},
	{"discover", 2, 65, 65, lengthRange(16, 19)},
	{"discover", 6, 622126, 622925, lengthRange(16, 19)},
	{"jcb", 4, 3528, 3589, lengthRange(16, 19)},
	{"diners", 3, 300, 305, lengthRange(14, 19)},
	{"diners", 4, 3095, 3095, lengthRange(14, 19)},
	{"diners", 2, 36, 36, lengthRange(14, 19)},
	{"diners", 2, 38, 39, lengthRange(14, 19)},
	{"unionpay", 2, 62, 62, lengthRange(16, 19)},
	{"maestro", 2, 50, 50, lengthRange(12, 19)},
	{"maestro", 2, 56, 69, lengthRange(12, 19)},
}

// brandsByDigit lists, for each first digit, the rules that can match.
var brandsByDigit = func() (by [10][]brandRule) {
	for _, r := range brands {
		lo, hi := r.lo, r.hi
		for range r.width - 1 {
			lo, hi = lo/10, hi/10
		}
		for d := lo; d <= hi; d++ {
			by[d] = append(by[d], r)
		}
	}
	return by
}()

// brand returns the name of the first brand whose IIN range and lengths
// admit the digit string d, or "".
func brand(d []byte) string {
	if len(d) < minPAN || len(d) > maxPAN {
		return ""
	}
	rules := brandsByDigit[d[0]-'0']
	if len(rules) == 0 {
		return ""
	}
	var prefix [7]int
	for i := 1; i <= 6; i++ {
		prefix[i] = prefix[i-1]*10 + int(d[i-1]-'0')
	}
	for i := range rules {
		r := &rules[i]
		if p := prefix[r.width]; p >= r.lo && p <= r.hi && r.lens&(1<<len(d)) != 0 {
			return r.name
		}
	}
	return ""
}

// luhnDouble[x] is the Luhn contribution of a doubled digit x.
var luhnDouble = [10]int{0, 2, 4, 6, 8, 1, 3, 5, 7, 9}

// luhn reports whether the digit string d passes the Luhn (mod 10) check.
func luhn(d []byte) bool {
	sum := 0
	double := false
	for i := len(d) - 1; i >= 0; i-- {
		x := int(d[i] - '0')
		if double {
			x = luhnDouble[x]
		}
		sum += x
		double = !double
	}
	return sum%10 == 0
}

// trivial reports the digit strings that pass brand and Luhn checks by
// accident and are never card numbers: one repeated digit, and runs that
// count up or down by one (wrapping 9 to 0), like 0123456789012.
func trivial(d []byte) bool {
	same, up, down := true, true, true
	for i := 1; i < len(d) && (same || up || down); i++ {
		a, b := d[i-1], d[i]
		same = same && a == b
		up = up && (b == a+1 || (a == '9' && b == '0'))
		down = down && (b+1 == a || (a == '0' && b == '9'))
	}
	return same || up || down
}

// validPAN reports whether the digit string d is a PAN: a brand's IIN and
// length, the Luhn check, and not trivial.
func validPAN(d []byte) bool {
	return luhn(d) && brand(d) != "" && !trivial(d)
}

// finding is one thing to mask in src: a PAN candidate (digits and its
// separators) or track data.
type finding struct {
	start, end int
	digits     int // the PAN's length, for PAN findings
	track      bool
}

// group is a maximal run of digits inside a run.
type group struct{ start, end int }

// scanner walks src and reports, run by run, what has to be masked.
//
// A run is a maximal stretch of digits in which single separators (' ' or
// '-') may stand between two digits; its groups are the stretches of digits.
// Candidates are consecutive groups of a run (see run).
//
// A scanner lives on its caller's stack: nothing in it points into itself,
// so that the fast path allocates nothing.
type scanner struct {
	src     []byte
	pos     int  // everything before pos has been examined
	sadOnly bool // report track data only

	// The last hex token inHexToken looked at.
	tokStart, tokEnd int
	tokHex           bool

	// The findings of the current run: the first ones in few, all of them
	// in many once few overflows.
	n    int
	few  [8]finding
	many []finding
}

func (sc *scanner) init(src []byte) { sc.src = src }

func (sc *scanner) add(f finding) {
	switch {
	case sc.n < len(sc.few):
		sc.few[sc.n] = f
	case sc.n == len(sc.few):
		sc.many = append(append(sc.many[:0], sc.few[:]...), f)
	default:
		sc.many = append(sc.many, f)
	}
	sc.n++
}

// found returns the findings of the current run.
func (sc *scanner) found() []finding {
	if sc.n <= len(sc.few) {
		return sc.few[:sc.n]
	}
	return sc.many
}

// next finds the next run holding findings and leaves them, in order and
// possibly overlapping (overlaps are PAN candidates of one run), in
// sc.found().
// It returns false when src holds no more findings.
//
// The fast path: a PAN has at least 12 digits, so any run that holds one
// covers at least 12 bytes, and one of every 12 consecutive bytes is enough
// to see whether a run can be there. next reads the byte 11 ahead of the
// examined frontier; a byte that is no digit, and no separator followed by a
// digit, cannot be inside a run, and the scan jumps past it.
func (sc *scanner) next() bool {
	src := sc.src
	n := len(src)
	i := sc.pos
	for i+minPAN <= n {
		p := i + minPAN - 1
		if c := src[p]; !isDigit(c) {
			if (c != ' ' && c != '-') || p+1 >= n || !isDigit(src[p+1]) {
				i = p + 1
				continue
			}
			p++
		}
		// src[p] is a digit: find the run around it. No run crosses i.
		s := p
		for s > i {
			if isDigit(src[s-1]) {
				s--
			} else if s-2 >= i && isSep(src[s-1]) && isDigit(src[s-2]) {
				s -= 2
			} else {
				break
			}
		}
		e := p + 1
		for e < n {
			if isDigit(src[e]) {
				e++
			} else if e+1 < n && isSep(src[e]) && isDigit(src[e+1]) {
				e += 2
			} else {
				break
			}
		}
		i = e
		if e-s < minPAN {
			continue
		}
		sc.n = 0
		end := sc.run(s, e)
		if sc.n > 0 {
			sc.pos = end
			return true
		}
		i = end
	}
	sc.pos = n
	return false
}

// run examines the run src[s:e] and adds its findings. It
// returns where examination ends: e, or the end of track data reaching past
// the run.
//
// Candidates are the sequences of consecutive groups a..b such that
//   - the separators between them are all the same byte;
//   - in a sequence of two or more groups, every group but the last has at
//     least 3 digits (4-4-4-4, 4-6-5, 4-6-4, 4-4-5, 4-3-3-3, 4-4-4-4-3 and
//     any other such grouping; 2-2-… splits of dates and lists are not
//     card numbers);
//   - they hold 12 to 19 digits;
//   - nothing is glued on either side: before the first group (if it starts
//     the run) no letter (but the B of "%B"), '*', '+' (a phone number) or
//     "<digit>." (a decimal fraction); after the last group (if it ends the
//     run) no letter, '*' or ".<digit>";
//   - the digits are a valid PAN (brand IIN and length, Luhn, not trivial);
//   - they are not part of a dash-joined hex token (UUIDs and the like).
//
// Every candidate is a finding; candidates may overlap (a 20-digit grouped
// number can hold two), and the writer masks the union.
func (sc *scanner) run(s, e int) int {
	src := sc.src
	var buf [24]group
	gs := buf[:0]
	digits := 0
	for j := s; j < e; {
		k := j
		for k < e && isDigit(src[k]) {
			k++
		}
		gs = append(gs, group{j, k})
		digits += k - j
		j = k + 1 // skip the separator
	}
	if digits < minPAN {
		return e
	}
	limit := len(gs) // candidates use gs[:limit]
	end := e
	var trk finding
	if e < len(src) && (src[e] == '^' || src[e] == '=') {
		if first, t, ok := sc.track(gs, s, e, digits); ok {
			limit, trk, end = first, t, t.end
		}
	}
	if !sc.sadOnly {
		sc.candidates(gs, s, e, limit)
	}
	if trk.track {
		sc.add(trk)
	}
	return end
}

// candidates adds the valid PAN candidates made of gs[:limit], the groups
// of the run src[s:e].
func (sc *scanner) candidates(gs []group, s, e, limit int) {
	for a := 0; a < limit; a++ {
		if a == 0 && sc.leftGlued(s) {
			continue
		}
		n := 0
		var sep byte
		for b := a; b < limit; b++ {
			if b > a {
				if gs[b-1].end-gs[b-1].start < 3 {
					break
				}
				if sp := sc.src[gs[b].start-1]; b == a+1 {
					sep = sp
				} else if sp != sep {
					break
				}
			}
			n += gs[b].end - gs[b].start
			if n > maxPAN {
				break
			}
			if n < minPAN || (b == len(gs)-1 && sc.rightGlued(e)) {
				continue
			}
			if sc.validGroups(gs[a : b+1]) {
				sc.add(finding{start: gs[a].start, end: gs[b].end, digits: n})
			}
		}
	}
}

// leftGlued reports whether a run starting at s is glued to what precedes it.
func (sc *scanner) leftGlued(s int) bool {
	if s == 0 {
		return false
	}
	c := sc.src[s-1]
	if c == 'B' && s >= 2 && sc.src[s-2] == '%' {
		return false // a track 1 start sentinel, checked for track data first
	}
	return glue(c) || c == '+' || (c == '.' && s >= 2 && isDigit(sc.src[s-2]))
}

// rightGlued reports whether a run ending at e is glued to what follows it.
func (sc *scanner) rightGlued(e int) bool {
	src := sc.src
	if e >= len(src) {
		return false
	}
	c := src[e]
	return glue(c) || (c == '.' && e+1 < len(src) && isDigit(src[e+1]))
}

// validGroups reports whether the groups gs (at most maxPAN digits) are a
// valid PAN outside a hex token.
func (sc *scanner) validGroups(gs []group) bool {
	var buf [maxPAN]byte
	d := buf[:0]
	for _, g := range gs {
		d = append(d, sc.src[g.start:g.end]...)
	}
	return validPAN(d) && !sc.inHexToken(gs[0]) && !sc.inHexToken(gs[len(gs)-1])
}

// inHexToken reports whether group g is part of a hex token: a maximal
// stretch of letters, digits and dashes whose dash-separated parts are all
// hexadecimal, at most 12 long, and which either holds a hex letter or has
// the 8-4-4-4-12 shape of a UUID. 550e8400-e29b-41d4-a716-446655440000 has a
// 12-digit part that must not be read as a card number; a part longer than
// a UUID's longest is no such id. The answer depends on the token only, not
// on which of its groups asks, so masking one candidate cannot change it for
// another.
func (sc *scanner) inHexToken(g group) bool {
	src := sc.src
	if (g.start == 0 || src[g.start-1] != '-') && (g.end == len(src) || src[g.end] != '-') {
		// Letters touching a candidate's ends reject it before this check,
		// so only a dash can join g to a token of several parts.
		return false
	}
	p := g.start
	if p >= sc.tokStart && p < sc.tokEnd {
		return sc.tokHex
	}
	s, e := p, p
	for s > 0 && (isAlnum(src[s-1]) || src[s-1] == '-') {
		s--
	}
	for e < len(src) && (isAlnum(src[e]) || src[e] == '-') {
		e++
	}
	sc.tokStart, sc.tokEnd, sc.tokHex = s, e, hexToken(src[s:e])
	return sc.tokHex
}

// maxHexPart is the longest part of a hex token (a UUID's last part).
const maxHexPart = 12

// hexToken reports whether tok (letters, digits and dashes) is a hex token.
// Empty parts (leading, trailing or doubled dashes) are ignored.
func hexToken(tok []byte) bool {
	var parts [5]int
	np, letter := 0, false
	for len(tok) > 0 {
		k := bytes.IndexByte(tok, '-')
		if k < 0 {
			k = len(tok)
		}
		part := tok[:k]
		tok = tok[min(k+1, len(tok)):]
		if len(part) == 0 {
			continue
		}
		if len(part) > maxHexPart {
			return false
		}
		for _, c := range part {
			if !isHex(c) {
				return false
			}
			letter = letter || !isDigit(c)
		}
		if np < len(parts) {
			parts[np] = len(part)
		}
		np++
	}
	return np >= 2 && (letter || (np == 5 && parts == [5]int{8, 4, 4, 4, 12}))
}

// Track data (ISO/IEC 7813):
//
//	track 1: %B<PAN>^<NAME>^<YYMM><service code><discretionary data>?<LRC>
//	track 2: ;<PAN>=<YYMM><service code><discretionary data>?<LRC>
const (
	maxTrackName = 45 // the standard allows 26; readers and tests vary
	maxTrack1Rem = 64 // bytes after the second '^'
)

// track checks whether the run src[s:e], followed by '^' or '=', ends in the
// PAN field of track data.
//
// With a start sentinel ("%B", "B" or "%" before a track 1 PAN, ';' before a
// track 2 PAN) the whole run is the PAN field and needs only 12-19 digits.
// Without one, the PAN field must be a valid PAN candidate ending the run,
// track 1 must go on with an expiry date or '^', and track 2 with four
// digits. Track 1 then needs a name of at most 45 bytes (26 in the standard)
// and a second '^'.
//
// The finding runs from the sentinel through the end sentinel '?' (the LRC
// byte after it is kept: it cannot be told apart from what follows). Without
// '?', track 1 ends after the last digit or '^' of its remaining data (at
// most 64 bytes of the track character set), track 2 after its digits and
// '='; neither ends between a digit and a decimal fraction. A B that follows
// a letter, digit or dash is kept, so that the word or token it ends looks
// the same after masking. track returns the index of the PAN field's first
// group and the finding.
func (sc *scanner) track(gs []group, s, e, digits int) (first int, f finding, ok bool) {
	src := sc.src
	n := len(src)
	t1 := src[e] == '^'
	start, sentinel := s, false
	if t1 {
		if s >= 1 && src[s-1] == 'B' {
			// The format code, with or without the '%' before it. What
			// comes before does not matter: the decision must not depend
			// on bytes an earlier finding may replace.
			start, sentinel = s-1, true
			switch {
			case s >= 2 && src[s-2] == '%':
				start = s - 2
			case s >= 2 && (isAlnum(src[s-2]) || src[s-2] == '-'):
				// Keep the B: it ends a word or token (glued digits, a hex
				// token) that must look the same in the output.
				start = s
			}
		} else if s >= 1 && src[s-1] == '%' {
			start, sentinel = s-1, true
		}
	} else if s >= 1 && src[s-1] == ';' {
		start, sentinel = s-1, true
	}
	if sentinel {
		if digits > maxPAN {
			return 0, f, false
		}
		first = 0
	} else {
		first = sc.trackPAN(gs, s)
		if first < 0 {
			return 0, f, false
		}
		start = gs[first].start
	}

	j := e + 1
	if t1 {
		k := j
		for k < n && k-j <= maxTrackName && src[k] != '^' && src[k] >= 0x20 && src[k] < 0x7f && src[k] != '?' && src[k] != '%' {
			k++
		}
		if k >= n || src[k] != '^' {
			return 0, f, false
		}
		j = k + 1
		if !sentinel && (j >= n || src[j] != '^') && !digitsAt(src, j, 4) {
			return 0, f, false
		}
		r := j
		for r < n && r-j < maxTrack1Rem && src[r] >= 0x20 && src[r] <= 0x5f && src[r] != '%' && src[r] != '?' {
			r++
		}
		if r < n && src[r] == '?' {
			j = r + 1
		} else {
			// No end sentinel: end after the last digit or '^'.
			for r > j && !isDigit(src[r-1]) && src[r-1] != '^' {
				r--
			}
			j = skipFraction(src, r)
		}
	} else {
		if !digitsAt(src, j, 4) && (!sentinel || j >= n || (src[j] != '=' && src[j] != '?')) {
			return 0, f, false
		}
		for j < n && (isDigit(src[j]) || src[j] == '=') {
			j++
		}
		if j < n && src[j] == '?' {
			j++
		} else {
			j = skipFraction(src, j)
		}
	}
	return first, finding{start: start, end: j, track: true}, true
}

// skipFraction returns the end of the ".<digits>" sequences that follow a
// digit at src[j-1], or j. Track data never ends between a digit and a
// decimal fraction: the fraction's digits are kept out of detection by
// that digit, and removing it would expose them on a second pass.
func skipFraction(src []byte, j int) int {
	for j > 0 && isDigit(src[j-1]) && j+1 < len(src) && src[j] == '.' && isDigit(src[j+1]) {
		j += 2
		for j < len(src) && isDigit(src[j]) {
			j++
		}
	}
	return j
}

// trackPAN returns the first group of the valid PAN candidate that ends the
// run starting at s (the PAN field of track data without a start sentinel),
// or -1.
func (sc *scanner) trackPAN(gs []group, s int) int {
	last := len(gs) - 1
	for a := last; a >= 0; a-- {
		if a < last && gs[a].end-gs[a].start < 3 {
			break
		}
		if a < last-1 && sc.src[gs[a].end] != sc.src[gs[a+1].end] {
			break
		}
		n := 0
		for _, g := range gs[a:] {
			n += g.end - g.start
		}
		if n > maxPAN {
			break
		}
		if n < minPAN || (a == 0 && sc.leftGlued(s)) {
			continue
		}
		if sc.validGroups(gs[a:]) {
			return a
		}
	}
	return -1
}

// digitsAt reports whether src holds k digits from i.
func digitsAt(src []byte, i, k int) bool {
	if i+k > len(src) {
		return false
	}
	for _, c := range src[i : i+k] {
		if !isDigit(c) {
			return false
		}
	}
	return true
}

// Contains reports whether src holds a PAN or track data: whether
// [Masker.Text] would change it.
func Contains(src []byte) bool {
	var sc scanner
	sc.init(src)
	return sc.next()
}
