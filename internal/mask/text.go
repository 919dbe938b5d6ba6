package mask

// Text masks the PANs and removes the track data found in free text (an
// error message, a notification payload, a CSV line, a text column) with
// strategy s (the empty Strategy is the default).
//
// If src holds neither, Text returns src itself and zero Counts, without
// copying and without touching dst, so the caller can pass the original
// bytes on. Otherwise it appends the masked text to dst and returns the
// extended slice; dst must not overlap src.
//
// Under Last4 and BINLast4 only digits change (to '*'), so the text keeps its
// length and layout; Redact, Null and Drop write [Redacted]; HMAC writes 64
// hex digits. Track data is always replaced by [TrackDataRemoved].
func (m *Masker) Text(dst, src []byte, s Strategy) ([]byte, Counts) {
	// Fast paths for a value that is a card number as columns hold one.
	// Each gives exactly what the scanner below finds; Last4 and BINLast4
	// leave no PAN behind, so such a value needs no second pass.
	if n := len(src); n >= minPAN && n <= maxPAN && allDigits(src) {
		// One run of digits: a single candidate with nothing glued to
		// it, a PAN exactly when validPAN says so.
		if !validPAN(src) {
			return src, Counts{}
		}
		if r := m.resolve(s); r == Last4 || r == BINLast4 {
			out := append(dst, src...)
			hide(out[len(dst):], n, r == BINLast4)
			return out, Counts{PANs: 1}
		}
	}
	var d [16]byte
	if grouped16(src, &d) && !validPAN(d[:12]) && !validPAN(d[4:]) {
		// 4-4-4-4 with one separator: the candidates are the whole and
		// the two runs of three groups (no dash-joined hex token is all
		// digits). When the shorter ones are not PANs, the whole decides.
		if !validPAN(d[:]) {
			return src, Counts{}
		}
		if r := m.resolve(s); r == Last4 || r == BINLast4 {
			out := append(dst, src...)
			hide(out[len(dst):], len(d), r == BINLast4)
			return out, Counts{PANs: 1}
		}
	}
	return m.scanText(dst, src, s)
}

// scanText is Text without its fast paths.
func (m *Masker) scanText(dst, src []byte, s Strategy) ([]byte, Counts) {
	var sc scanner
	sc.init(src)
	if !sc.next() {
		return src, Counts{}
	}
	s = m.resolve(s)
	out, c := m.mask(dst, src, &sc, s)
	// Replacing a finding changes the bytes around its neighbours (track
	// data removed next to a run of digits, say), and in rare inputs that
	// exposes a PAN the first pass rightly left alone. Mask the output
	// again until nothing is found, so that no output ever holds a PAN and
	// masking is idempotent. Every pass but HMAC ones hides digits and adds
	// none, so this ends; from the third pass on HMAC becomes Redact.
	for pass := 2; ; pass++ {
		body := out[len(dst):]
		sc = scanner{}
		sc.init(body)
		if !sc.next() {
			return out, c
		}
		if pass >= 3 && s == HMAC {
			s = Redact
		}
		again, c2 := m.mask(make([]byte, 0, len(body)), body, &sc, s)
		out = append(out[:len(dst)], again...)
		c.Add(c2)
	}
}

// mask appends src to dst with the findings of sc, whose first run has been
// found, masked.
func (m *Masker) mask(dst, src []byte, sc *scanner, s Strategy) ([]byte, Counts) {
	out, copied := dst, 0
	var c Counts
	for {
		out, copied = m.writeFindings(out, src, copied, sc.found(), s, &c)
		if !sc.next() {
			break
		}
	}
	return append(out, src[copied:]...), c
}

// writeFindings appends src[copied:] up to and including the findings of one
// run, masked, to out, and returns out and the new copied position.
// Overlapping PAN findings form one cluster: under Last4 and BINLast4 each
// finding hides its own digits (so a digit shows only if every finding
// covering it shows it); under the other strategies the cluster is replaced
// as a whole.
func (m *Masker) writeFindings(out, src []byte, copied int, f []finding, s Strategy, c *Counts) ([]byte, int) {
	for i := 0; i < len(f); {
		if f[i].track {
			out = append(out, src[copied:f[i].start]...)
			out = append(out, TrackDataRemoved...)
			copied = f[i].end
			c.SAD++
			i++
			continue
		}
		cs, ce := f[i].start, f[i].end
		j := i + 1
		for j < len(f) && !f[j].track && f[j].start < ce {
			ce = max(ce, f[j].end)
			j++
		}
		out = append(out, src[copied:cs]...)
		switch s {
		case Last4, BINLast4:
			base := len(out)
			out = append(out, src[cs:ce]...)
			for _, g := range f[i:j] {
				hide(out[base+g.start-cs:base+g.end-cs], g.digits, s == BINLast4)
			}
		case HMAC:
			out = m.appendHMAC(out, src[cs:ce])
		default:
			out = append(out, Redacted...)
		}
		copied = ce
		c.PANs++
		i = j
	}
	return out, copied
}

// hide replaces with '*' the digits of b, one PAN of n digit positions
// (digits, or '*' already masked), except the last four and, when bin is set
// and n is at least 15, the first six.
func hide(b []byte, n int, bin bool) {
	head := 0
	if bin && n >= 15 {
		head = 6
	}
	pos := 0
	for i, c := range b {
		if !isDigit(c) && c != '*' {
			continue
		}
		if pos >= head && pos < n-4 {
			b[i] = '*'
		}
		pos++
	}
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if !isDigit(c) {
			return false
		}
	}
	return true
}

// grouped16 reports whether src is four groups of four digits joined by
// one separator (' ' or '-'), the usual way a 16-digit card number is
// written, and leaves its digits in d.
func grouped16(src []byte, d *[16]byte) bool {
	if len(src) != 19 || (src[4] != ' ' && src[4] != '-') {
		return false
	}
	sep := src[4]
	for i, c := range src {
		if i%5 == 4 {
			if c != sep {
				return false
			}
			continue
		}
		if !isDigit(c) {
			return false
		}
		d[i-i/5] = c
	}
	return true
}
