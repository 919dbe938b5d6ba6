package pgfilter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
)

// errMalformedBind is what every error of the Bind decoder wraps.
var errMalformedBind = errors.New("malformed Bind message")

// bindPart is a part of a Bind message, in the order the parts are sent.
type bindPart uint8

const (
	bindNames         bindPart = iota // the portal and prepared statement names
	bindParameters                    // the parameter format codes and values
	bindResultFormats                 // the result format codes
)

// bindMsg is a Bind message decoded in place: every field aliases the body
// it was decoded from, which the relay reuses for the next message, so a
// caller that keeps a part copies it (a string conversion does). Decoding
// a well-formed message allocates nothing.
//
// It is not pgproto3.Bind. Its Decode accepts what PostgreSQL accepts and
// aliases src for the parameter values, but it copies both names and
// allocates the format code lists and the list of values on every call,
// also for a caller that needs only the names (every Bind of every
// extended statement reaches policyHook.bind); and it always reads the
// whole message, where each caller here reads only as far as it needs.
type bindMsg struct {
	Portal        []byte
	Statement     []byte
	ParamFormats  formatCodes // none (all text), one for all, or one per parameter
	Params        bindValues
	ResultFormats formatCodes // none (all text), one for all, or one per column
}

// decodeThrough decodes the parts of src in order up to and including
// last, and returns the bytes that follow it, unread; the later parts are
// left empty. It refuses only what leaves the message's layout unknown: a
// name without its NUL, a count or length that runs past the end of src.
// A parameter length below -1 reads as NULL (no value bytes follow), as -1
// does; the server refuses such a Bind.
func (b *bindMsg) decodeThrough(src []byte, last bindPart) ([]byte, error) {
	*b = bindMsg{}
	i := bytes.IndexByte(src, 0)
	if i < 0 {
		return nil, fmt.Errorf("%w: portal name without its NUL", errMalformedBind)
	}
	b.Portal, src = src[:i:i], src[i+1:]
	i = bytes.IndexByte(src, 0)
	if i < 0 {
		return nil, fmt.Errorf("%w: statement name without its NUL", errMalformedBind)
	}
	b.Statement, src = src[:i:i], src[i+1:]
	if last == bindNames {
		return src, nil
	}

	var err error
	if b.ParamFormats, src, err = readFormatCodes(src, "parameter"); err != nil {
		return nil, err
	}
	if len(src) < 2 {
		return nil, fmt.Errorf("%w: no parameter count", errMalformedBind)
	}
	part := src
	n := int(binary.BigEndian.Uint16(src))
	src = src[2:]
	for k := range n {
		if len(src) < 4 {
			return nil, fmt.Errorf("%w: parameter %d of %d has no length", errMalformedBind, k+1, n)
		}
		l := int32(binary.BigEndian.Uint32(src))
		src = src[4:]
		if l < 0 {
			continue
		}
		if int64(l) > int64(len(src)) {
			return nil, fmt.Errorf("%w: parameter %d of %d has length %d, %d bytes left", errMalformedBind, k+1, n, l, len(src))
		}
		src = src[l:]
	}
	end := len(part) - len(src)
	b.Params = bindValues(part[:end:end])
	if last == bindParameters {
		return src, nil
	}

	if b.ResultFormats, src, err = readFormatCodes(src, "result"); err != nil {
		return nil, err
	}
	return src, nil
}

// readFormatCodes reads a list of format codes (of what) from the start
// of src, and returns it and the bytes after it.
func readFormatCodes(src []byte, what string) (formatCodes, []byte, error) {
	if len(src) < 2 {
		return nil, nil, fmt.Errorf("%w: no %s format count", errMalformedBind, what)
	}
	n := int(binary.BigEndian.Uint16(src))
	end := 2 + 2*n
	if len(src) < end {
		return nil, nil, fmt.Errorf("%w: %d %s format codes, %d bytes left", errMalformedBind, n, what, len(src)-2)
	}
	return formatCodes(src[:end:end]), src[end:], nil
}

// formatCodes is a list of format codes as sent: a 16-bit count, then
// each code, 16-bit, big-endian. Empty, it is a list of none.
type formatCodes []byte

// count is the number of codes.
func (f formatCodes) count() int {
	if len(f) < 2 {
		return 0
	}
	return int(binary.BigEndian.Uint16(f))
}

// at is the i-th code.
func (f formatCodes) at(i int) int16 {
	return int16(binary.BigEndian.Uint16(f[2+2*i:]))
}

// int16s returns the codes in a new slice, which is empty but not nil when
// there are none.
func (f formatCodes) int16s() []int16 {
	codes := make([]int16, f.count())
	for i := range codes {
		codes[i] = f.at(i)
	}
	return codes
}

// bindValues is a Bind's parameter values as sent: a 16-bit count, then
// each value as a 32-bit length (negative for NULL) and that many bytes.
// Empty, it is a list of none.
type bindValues []byte

// count is the number of values.
func (v bindValues) count() int {
	if len(v) < 2 {
		return 0
	}
	return int(binary.BigEndian.Uint16(v))
}

// all yields each value's index and bytes (nil for NULL, empty but not nil
// for a value of length 0).
func (v bindValues) all() iter.Seq2[int, []byte] {
	return func(yield func(int, []byte) bool) {
		n := v.count()
		if n == 0 {
			return
		}
		rest := v[2:]
		for i := range n {
			l := int32(binary.BigEndian.Uint32(rest))
			rest = rest[4:]
			var val []byte
			if l >= 0 {
				val, rest = rest[:l:l], rest[l:]
			}
			if !yield(i, val) {
				return
			}
		}
	}
}
