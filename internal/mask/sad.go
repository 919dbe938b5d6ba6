package mask

import "bytes"

// IsSADColumn reports whether a column (or JSON member) name says it holds
// sensitive authentication data: card verification codes, PINs and PIN
// blocks, magnetic-stripe track data. Such values are dropped or nulled,
// never shown, not even masked (PCI DSS 3.3.1).
//
// The name is split into words at anything that is not an ASCII letter or
// digit and at camelCase humps (card_cvv, cardCVV, CVV2, "Card PIN", pinBlock;
// digits stay with the letters before them), and matched case-insensitively:
//
//   - a word that is one of cid, csc, cvd, cvn, cav, pin, pvv, with any
//     trailing digits (cid, csc2, cav2);
//   - a word that starts or ends with cvv or cvc (cvv, cvv2, icvv, cvc2,
//     cardcvv, cvvcode);
//   - the name without separators contains one of securitycode,
//     cardverification, verificationcode, verificationvalue, pinblock,
//     pincode, pinnumber, cardpin, pinoffset, magstripe, magneticstripe,
//     trackdata, fulltrack, track1, track2, track3 (security_code,
//     card_verification_value, pin_block, track_2, mag_stripe_raw).
//
// Words like cid or pin also name unrelated things (a customer id, a pinned
// flag, an Indian postal code): such a column is nulled too. Failing that
// way costs a visible column; failing the other way would show SAD.
func IsSADColumn(name string) bool { return isSADName(name) }

// isSADName is IsSADColumn for a name held in a string or in bytes.
func isSADName[T string | []byte](name T) bool {
	if len(name) < 3 {
		return false
	}
	// low holds the lowercase words of name, each followed by a space;
	// joined the same without the spaces.
	var lowBuf, joinedBuf [64]byte
	low, joined := lowBuf[:0], joinedBuf[:0]
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isAlnum(c) {
			if len(low) > 0 && low[len(low)-1] != ' ' {
				low = append(low, ' ')
			}
			continue
		}
		if isUpper(c) {
			if i > 0 && len(low) > 0 && low[len(low)-1] != ' ' {
				p := name[i-1]
				if isLower(p) || isDigit(p) || (isUpper(p) && i+1 < len(name) && isLower(name[i+1])) {
					low = append(low, ' ')
				}
			}
			c |= 0x20
		}
		low = append(low, c)
		joined = append(joined, c)
	}
	if len(joined) < 3 {
		return false
	}
	for w := low; len(w) > 0; {
		end := 0
		for end < len(w) && w[end] != ' ' {
			end++
		}
		if end > 0 && sadWord(w[:end]) {
			return true
		}
		if end < len(w) {
			end++
		}
		w = w[end:]
	}
	for i := range joined {
		for _, sub := range sadSubstrings[joined[i]] {
			if bytes.HasPrefix(joined[i:], sub) {
				return true
			}
		}
	}
	return false
}

func isUpper(c byte) bool { return c-'A' <= 'Z'-'A' }

func isLower(c byte) bool { return c-'a' <= 'z'-'a' }

// sadSubstrings holds the substrings matched in the name without separators,
// by first byte.
var sadSubstrings = func() (by [256][][]byte) {
	for _, s := range []string{
		"securitycode", "cardverification", "verificationcode", "verificationvalue",
		"pinblock", "pincode", "pinnumber", "cardpin", "pinoffset",
		"magstripe", "magneticstripe", "trackdata", "fulltrack", "track1", "track2", "track3",
	} {
		by[s[0]] = append(by[s[0]], []byte(s))
	}
	return by
}()

// sadWord matches one lowercase word.
func sadWord(w []byte) bool {
	if hasPrefix3(w, "cvv") || hasPrefix3(w, "cvc") {
		return true
	}
	for len(w) > 0 && isDigit(w[len(w)-1]) {
		w = w[:len(w)-1]
	}
	if n := len(w); n >= 3 && (hasPrefix3(w[n-3:], "cvv") || hasPrefix3(w[n-3:], "cvc")) {
		return true
	}
	if len(w) != 3 {
		return false
	}
	switch string(w) {
	case "cid", "csc", "cvd", "cvn", "cav", "pin", "pvv":
		return true
	}
	return false
}

func hasPrefix3(w []byte, p string) bool {
	return len(w) >= 3 && w[0] == p[0] && w[1] == p[1] && w[2] == p[2]
}
