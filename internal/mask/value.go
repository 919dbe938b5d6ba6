package mask

import "crypto/sha256"

// Value masks a text value that a rule marks as cardholder data (a column
// named by the decision's mask.columns, a JSON string selected by a path).
// The value is masked by its shape, whether or not it passes the PAN checks:
// the rule says it is a PAN, and a value that fails them (a typo, a test
// number with a bad check digit, a PAN with a note) must not get through.
//
//   - Null, Drop: nil (send NULL).
//   - Redact: [Redacted] (an empty value stays empty).
//   - Last4, BINLast4: track data is removed, then every digit of the value
//     is hidden but the last four (and the first six under BINLast4 when the
//     value has at least 15 digits), counting '*' as an already hidden digit
//     so that masking twice changes nothing. Other bytes stay:
//     "4242-4242-4242-4242" gives "****-****-****-4242".
//   - HMAC: track data is removed, then the value becomes the hex
//     HMAC-SHA256 of its digits ("4242 4242 4242 4242" and
//     "4242424242424242" agree).
//
// A value with nothing to hide comes back as src itself. Counts.PANs is 1
// when digits were hidden or the value replaced, Counts.SAD the number of
// tracks removed. For numeric columns use
// [Masker.Number], for json and jsonb values [Masker.JSON].
func (m *Masker) Value(src []byte, s Strategy) ([]byte, Counts) {
	s = m.resolve(s)
	switch s {
	case Null, Drop:
		if len(src) == 0 {
			return nil, Counts{}
		}
		return nil, Counts{PANs: 1}
	case Redact:
		if len(src) == 0 || string(src) == Redacted {
			return src, Counts{}
		}
		return []byte(Redacted), Counts{PANs: 1}
	}
	var c Counts
	v := src
	if hasTrackStart(src) {
		v, c = m.tracks(src)
	}
	n := 0
	for _, ch := range v {
		if isDigit(ch) || ch == '*' {
			n++
		}
	}
	if s == HMAC {
		if !hasDigit(v) {
			return v, c
		}
		c.PANs = 1
		return m.appendHMAC(make([]byte, 0, 2*sha256.Size), v), c
	}
	if !needsHide(v, n, s == BINLast4) {
		return v, c
	}
	if len(v) > 0 && &v[0] == &src[0] {
		v = append([]byte(nil), v...)
	}
	hide(v, n, s == BINLast4)
	c.PANs = 1
	return v, c
}

// needsHide reports whether hide would change b.
func needsHide(b []byte, n int, bin bool) bool {
	head := 0
	if bin && n >= 15 {
		head = 6
	}
	pos := 0
	for _, c := range b {
		if isDigit(c) {
			if pos >= head && pos < n-4 {
				return true
			}
			pos++
		} else if c == '*' {
			pos++
		}
	}
	return false
}

// hasTrackStart is a quick test for a byte that can end a track's PAN field.
func hasTrackStart(b []byte) bool {
	for _, c := range b {
		if c == '^' || c == '=' {
			return true
		}
	}
	return false
}

// tracks removes the track data in src (and nothing else). It returns src
// when there is none.
func (m *Masker) tracks(src []byte) ([]byte, Counts) {
	var sc scanner
	sc.init(src)
	sc.sadOnly = true
	if !sc.next() {
		return src, Counts{}
	}
	return m.mask(nil, src, &sc, Redact)
}

// Number masks a number in decimal text form, keeping it a number of the
// same type: for int2/int4/int8 and numeric columns (in text format, or
// decoded from binary by the caller), and JSON numbers. Apart from Redact,
// the result keeps the sign, the number of integer digits and the fraction;
// a number written with an exponent comes back in plain decimal.
//
// With byRule false, Number is detection: it changes src only if its
// integer part (after an exponent, so 4.242424242424242e+15 is seen as
// 4242424242424242) is a valid PAN. With byRule true the value is
// cardholder data by rule and is replaced whatever its digits; a value that
// is not a decimal number (NaN, garbage) is then nil (NULL): fail closed.
//
// Replacements of an integer part of n digits:
//   - Last4: '1', zeros, the last four ("4242424242424242" gives
//     "1000000000004242"). No card brand starts with 1, so the result is
//     never taken for a PAN; parts of four digits or fewer stay.
//   - BINLast4 (n >= 15): the first six, zeros, the last four; the
//     result is made to fail the Luhn check by raising the digit before the
//     last four by one when needed. Shorter numbers are shown as Last4.
//   - HMAC: '1' and n-1 digits taken from the HMAC-SHA256 of the digits
//     (stable, so joins on the column still work; not the same form as the
//     hex the text strategies write).
//   - Redact: 0. Null, Drop: nil.
//
// Last4 and HMAC results are also made to fail the Luhn check. Counts.PANs
// is 1 when the value changed.
func (m *Masker) Number(src []byte, s Strategy, byRule bool) ([]byte, Counts) {
	nm, ok := parseNumber(src)
	if !ok {
		if byRule && len(src) > 0 {
			return nil, Counts{PANs: 1}
		}
		return src, Counts{}
	}
	var buf [maxNumberDigits]byte
	ip := nm.integer(buf[:0])
	for len(ip) > 0 && ip[0] == '0' {
		ip = ip[1:]
	}
	if !byRule && (len(ip) < minPAN || len(ip) > maxPAN || !validPAN(ip)) {
		return src, Counts{}
	}
	s = m.resolve(s)
	switch s {
	case Null, Drop:
		return nil, Counts{PANs: 1}
	case Redact:
		if string(src) == "0" {
			return src, Counts{}
		}
		return []byte("0"), Counts{PANs: 1}
	}
	if len(ip) <= 4 {
		return src, Counts{}
	}
	n := len(ip)
	r := make([]byte, n, n+len(nm.frac)+2)
	switch s {
	case HMAC:
		sum := m.hmacSum(ip)
		r[0] = '1'
		for i := 1; i < n; i++ {
			r[i] = '0'
			if i-1 < len(sum) {
				r[i] = '0' + sum[i-1]%10
			}
		}
		if luhn(r) {
			r[n-1] = bump(r[n-1])
		}
	default:
		head := 1
		r[0] = '1'
		if s == BINLast4 && n >= 15 {
			head = 6
			copy(r, ip[:6])
		}
		for i := head; i < n-4; i++ {
			r[i] = '0'
		}
		copy(r[n-4:], ip[n-4:])
		if luhn(r) {
			r[n-5] = bump(r[n-5])
		}
	}
	out := make([]byte, 0, len(src)+n)
	if nm.neg {
		out = append(out, '-')
	}
	out = append(out, r...)
	if len(nm.frac) > 0 {
		out = append(out, '.')
		out = append(out, nm.frac...)
	}
	if string(out) == string(src) {
		return src, Counts{}
	}
	return out, Counts{PANs: 1}
}

// bump raises a digit by one, 9 to 0; any change of one digit breaks the Luhn
// check.
func bump(d byte) byte {
	if d == '9' {
		return '0'
	}
	return d + 1
}

// maxNumberDigits bounds the integer part Number expands from an exponent.
const maxNumberDigits = 64

// number is a parsed decimal: sign, digits, and where the decimal point
// falls in them.
type number struct {
	neg    bool
	digits []byte // integer and fraction digits as written, without the point
	point  int    // the integer part is digits[:point] (padded with zeros past the end)
	frac   []byte // the fraction digits, when the number has no exponent
}

// parseNumber parses [+-]digits[.digits][(e|E)[+-]digits] (also .5 and 5.).
// It fails on anything else and on exponents that would put the point more
// than maxNumberDigits away.
func parseNumber(b []byte) (number, bool) {
	var nm number
	i := 0
	if i < len(b) && (b[i] == '-' || b[i] == '+') {
		nm.neg = b[i] == '-'
		i++
	}
	is := i
	for i < len(b) && isDigit(b[i]) {
		i++
	}
	ie := i
	fs, fe := i, i
	if i < len(b) && b[i] == '.' {
		i++
		fs = i
		for i < len(b) && isDigit(b[i]) {
			i++
		}
		fe = i
	}
	if ie == is && fe == fs {
		return nm, false
	}
	exp := 0
	hasExp := false
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		hasExp = true
		i++
		eneg := false
		if i < len(b) && (b[i] == '-' || b[i] == '+') {
			eneg = b[i] == '-'
			i++
		}
		es := i
		for i < len(b) && isDigit(b[i]) {
			if exp < 1<<20 {
				exp = exp*10 + int(b[i]-'0')
			}
			i++
		}
		if i == es {
			return nm, false
		}
		if eneg {
			exp = -exp
		}
	}
	if i != len(b) {
		return nm, false
	}
	if !hasExp {
		nm.digits = b[is:ie]
		nm.point = ie - is
		nm.frac = b[fs:fe]
		return nm, true
	}
	// With an exponent, drop leading zeros so that the point's distance is
	// about the significant digits.
	d := make([]byte, 0, (ie-is)+(fe-fs))
	d = append(d, b[is:ie]...)
	d = append(d, b[fs:fe]...)
	point := (ie - is) + exp
	for len(d) > 0 && d[0] == '0' {
		d = d[1:]
		point--
	}
	if len(d) == 0 {
		nm.digits, nm.point = nil, 0
		return nm, true
	}
	if point > maxNumberDigits || point < -maxNumberDigits {
		return nm, false
	}
	nm.digits, nm.point = d, point
	switch {
	case point >= len(d):
		nm.frac = nil
	case point <= 0:
		f := make([]byte, 0, -point+len(d))
		for range -point {
			f = append(f, '0')
		}
		nm.frac = append(f, d...)
	default:
		nm.frac = d[point:]
	}
	return nm, true
}

// integer appends the integer part's digits to dst.
func (nm number) integer(dst []byte) []byte {
	if nm.point <= 0 {
		return dst
	}
	if nm.point <= len(nm.digits) {
		return append(dst, nm.digits[:nm.point]...)
	}
	dst = append(dst, nm.digits...)
	for range nm.point - len(nm.digits) {
		dst = append(dst, '0')
	}
	return dst
}
