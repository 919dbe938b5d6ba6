package pgfilter

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"strings"
)

// Type OIDs whose values masking understands.
const (
	oidBool        = 16
	oidBytea       = 17
	oidChar        = 18
	oidName        = 19
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidOID         = 26
	oidJSON        = 114
	oidXML         = 142
	oidFloat4      = 700
	oidFloat8      = 701
	oidUnknown     = 705
	oidBPChar      = 1042
	oidVarchar     = 1043
	oidDate        = 1082
	oidTime        = 1083
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidInterval    = 1186
	oidTimetz      = 1266
	oidNumeric     = 1700
	oidRecord      = 2249
	oidUUID        = 2950
	oidJSONB       = 3802
)

// arrayElem maps the array types masking knows to their element type.
var arrayElem = map[uint32]uint32{
	1000: oidBool, 1001: oidBytea, 1002: oidChar, 1003: oidName, 1016: oidInt8,
	1005: oidInt2, 1007: oidInt4, 1009: oidText, 1028: oidOID, 199: oidJSON,
	143: oidXML, 1021: oidFloat4, 1022: oidFloat8, 1014: oidBPChar,
	1015: oidVarchar, 1182: oidDate, 1183: oidTime, 1115: oidTimestamp,
	1185: oidTimestamptz, 1187: oidInterval, 1231: oidNumeric, 2287: oidRecord,
	2951: oidUUID, 3807: oidJSONB,
}

// rangeElem maps range and multirange types to their element type (those
// whose elements can hold a card number).
var rangeElem = map[uint32]uint32{
	3926: oidInt8, 3906: oidNumeric, // int8range, numrange
}

var multirangeElem = map[uint32]uint32{
	4536: 3926, 4532: 3906, // int8multirange, nummultirange
}

// noPANType reports types that cannot hold a card number (too few digits,
// or no digits a client would read as one).
func noPANType(oid uint32) bool {
	switch oid {
	case oidBool, oidChar, oidInt2, oidInt4, oidOID, oidFloat4, oidDate, oidTime,
		oidTimestamp, oidTimestamptz, oidInterval, oidTimetz, oidUUID,
		3904, 3908, 3910, 3912: // int4range, tsrange, tstzrange, daterange
		return true
	}
	return false
}

var errBadValue = errors.New("malformed binary value")

// numericToText decodes a binary numeric to its text form.
func numericToText(b []byte) (string, error) {
	if len(b) < 8 {
		return "", errBadValue
	}
	ndigits := int(binary.BigEndian.Uint16(b[0:]))
	weight := int(int16(binary.BigEndian.Uint16(b[2:])))
	sign := binary.BigEndian.Uint16(b[4:])
	dscale := int(int16(binary.BigEndian.Uint16(b[6:])))
	if len(b) != 8+2*ndigits || dscale < 0 {
		return "", errBadValue
	}
	switch sign {
	case 0x0000, 0x4000:
	case 0xC000:
		return "NaN", nil
	case 0xD000:
		return "Infinity", nil
	case 0xF000:
		return "-Infinity", nil
	default:
		return "", errBadValue
	}
	digits := make([]int, ndigits)
	for i := range digits {
		d := int(binary.BigEndian.Uint16(b[8+2*i:]))
		if d > 9999 {
			return "", errBadValue
		}
		digits[i] = d
	}
	var sb strings.Builder
	if sign == 0x4000 {
		sb.WriteByte('-')
	}
	if weight < 0 {
		sb.WriteByte('0')
	} else {
		for i := 0; i <= weight; i++ {
			d := 0
			if i < ndigits {
				d = digits[i]
			}
			if i == 0 {
				sb.WriteString(strconv.Itoa(d))
			} else {
				s := strconv.Itoa(d)
				sb.WriteString(strings.Repeat("0", 4-len(s)) + s)
			}
		}
	}
	if dscale > 0 {
		var frac strings.Builder
		for i := weight + 1; frac.Len() < dscale; i++ {
			d := 0
			if i >= 0 && i < ndigits {
				d = digits[i]
			}
			s := strconv.Itoa(d)
			frac.WriteString(strings.Repeat("0", 4-len(s)) + s)
		}
		sb.WriteByte('.')
		sb.WriteString(frac.String()[:dscale])
	}
	return sb.String(), nil
}

// numericFromText encodes a plain decimal ([-]digits[.digits]) as a
// binary numeric.
func numericFromText(s string) ([]byte, error) {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	ip, fp, _ := strings.Cut(s, ".")
	for _, c := range ip + fp {
		if c < '0' || c > '9' {
			return nil, errBadValue
		}
	}
	dscale := len(fp)
	ip = strings.TrimLeft(ip, "0")
	if pad := len(ip) % 4; pad != 0 {
		ip = strings.Repeat("0", 4-pad) + ip
	}
	if pad := len(fp) % 4; pad != 0 {
		fp += strings.Repeat("0", 4-pad)
	}
	all := ip + fp
	groups := make([]uint16, 0, len(all)/4)
	for i := 0; i < len(all); i += 4 {
		n, _ := strconv.Atoi(all[i : i+4])
		groups = append(groups, uint16(n))
	}
	weight := len(ip)/4 - 1
	for len(groups) > 0 && groups[0] == 0 {
		groups = groups[1:]
		weight--
	}
	for len(groups) > 0 && groups[len(groups)-1] == 0 {
		groups = groups[:len(groups)-1]
	}
	if len(groups) == 0 {
		weight = 0
		neg = false
	}
	out := make([]byte, 8+2*len(groups))
	binary.BigEndian.PutUint16(out[0:], uint16(len(groups)))
	binary.BigEndian.PutUint16(out[2:], uint16(int16(weight)))
	if neg {
		binary.BigEndian.PutUint16(out[4:], 0x4000)
	}
	binary.BigEndian.PutUint16(out[6:], uint16(dscale))
	for i, g := range groups {
		binary.BigEndian.PutUint16(out[8+2*i:], g)
	}
	return out, nil
}

// float8Integer returns the decimal text of a float8 that holds an integer
// of up to 19 digits (a PAN stored as a double), or false.
func float8Integer(b []byte) (string, bool) {
	if len(b) != 8 {
		return "", false
	}
	f := math.Float64frombits(binary.BigEndian.Uint64(b))
	if f != math.Trunc(f) || math.Abs(f) < 1e11 || math.Abs(f) >= 1e19 {
		return "", false
	}
	return strconv.FormatFloat(f, 'f', 0, 64), true
}
