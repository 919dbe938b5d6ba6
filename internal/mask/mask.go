package mask

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sync"
)

// Strategy says how a PAN is shown. The names are the ones policy decisions
// use (mask.columns, mask.json_paths, mask.reveal).
type Strategy string

// The strategies. The empty Strategy means the [Masker]'s default.
const (
	// Last4 keeps the last four digits and replaces every other digit with
	// '*'; separators stay in place: "************4242",
	// "**** **** **** 4242". The default.
	Last4 Strategy = "last4"
	// BINLast4 keeps the first six digits (the BIN) and the last four of a
	// PAN of at least 15 digits ("424242******4242"); shorter PANs are shown
	// as Last4, so that at least five digits always stay hidden. Only for a
	// decision that grants it (mask.reveal).
	BINLast4 Strategy = "bin_last4"
	// Redact replaces the PAN with the fixed marker [Redacted], which does
	// not reveal the length.
	Redact Strategy = "redact"
	// Null asks the caller to send NULL for the value (Value and Number
	// return nil; JSON writes null). In free text, which cannot be partly
	// NULL, it behaves as Redact.
	Null Strategy = "null"
	// Drop asks the caller to leave the value out (a JSON member is removed;
	// an array element, a column value or a number becomes NULL/null). In
	// free text it behaves as Redact.
	Drop Strategy = "drop"
	// HMAC replaces the PAN with the lowercase hex HMAC-SHA256 of its digits
	// under the Masker's key: not reversible, and stable across values,
	// rows and replicas sharing the key, so joins still work. Without a key
	// it behaves as Redact.
	HMAC Strategy = "hmac"
)

// Markers written in place of what is removed.
const (
	// Redacted replaces a PAN under Redact (and under Null or Drop in text).
	Redacted = "[REDACTED]"
	// TrackDataRemoved replaces magnetic-stripe track data wherever it is
	// found. Track data is sensitive authentication data: it is never shown,
	// not even masked.
	TrackDataRemoved = "[track data removed]"
)

// MinKeyLen is the shortest HMAC key [New] accepts (256 bits).
const MinKeyLen = 32

// Sentinel errors; test with errors.Is.
var (
	// ErrStrategy: a strategy name is not one of the constants above, or is
	// not allowed where it was given.
	ErrStrategy = errors.New("invalid masking strategy")
	// ErrKey: the HMAC key is shorter than MinKeyLen, or missing where the
	// HMAC strategy needs it.
	ErrKey = errors.New("invalid hmac key")
	// ErrJSON: a body is not valid JSON (or nests deeper than MaxJSONDepth).
	// The caller must not pass it through: it could not be inspected.
	ErrJSON = errors.New("invalid json")
	// ErrJSONPath: a JSON path rule is not in the supported syntax.
	ErrJSONPath = errors.New("invalid json path")
)

// ParseStrategy checks a strategy name coming from configuration or a
// policy decision. The empty string is valid (it means the default).
func ParseStrategy(s string) (Strategy, error) {
	switch st := Strategy(s); st {
	case "", Last4, BINLast4, Redact, Null, Drop, HMAC:
		return st, nil
	}
	return "", fmt.Errorf("%w: %q (want last4, bin_last4, redact, null, drop or hmac)", ErrStrategy, s)
}

// Options configure a [Masker].
type Options struct {
	// Default is the strategy used where none is given (the empty
	// Strategy): for content detection, and for column or path rules that
	// name none. Empty means Last4. BINLast4 is refused: it is shown only
	// where a decision grants it.
	Default Strategy
	// HMACKey keys the HMAC strategy. Optional; when set it must be at
	// least MinKeyLen bytes. Use a key of its own, not the audit
	// fingerprint key, so that what clients see cannot be matched against
	// audit records. New copies it.
	HMACKey []byte
}

// Masker masks PANs and removes sensitive authentication data. It is
// configured once by [New], holds no per-call state, and is safe for
// concurrent use.
type Masker struct {
	def    Strategy
	key    []byte
	hashes sync.Pool // of *hmacState
}

// New returns a Masker for opts.
func New(opts Options) (*Masker, error) {
	def, err := ParseStrategy(string(opts.Default))
	if err != nil {
		return nil, fmt.Errorf("default: %w", err)
	}
	if def == "" {
		def = Last4
	}
	if def == BINLast4 {
		return nil, fmt.Errorf("default: %w: bin_last4 is only shown where a decision grants it", ErrStrategy)
	}
	if len(opts.HMACKey) > 0 && len(opts.HMACKey) < MinKeyLen {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrKey, len(opts.HMACKey), MinKeyLen)
	}
	if def == HMAC && len(opts.HMACKey) == 0 {
		return nil, fmt.Errorf("default hmac: %w: no key", ErrKey)
	}
	m := &Masker{def: def}
	if len(opts.HMACKey) > 0 {
		m.key = append([]byte(nil), opts.HMACKey...)
		key := m.key
		m.hashes.New = func() any { return &hmacState{h: hmac.New(sha256.New, key)} }
	}
	return m, nil
}

// Default returns the Masker's default strategy.
func (m *Masker) Default() Strategy { return m.def }

// resolve maps s to the strategy actually applied: the empty strategy is the
// default, an unknown one is Redact (fail closed), and HMAC without a key is
// Redact.
func (m *Masker) resolve(s Strategy) Strategy {
	switch s {
	case "":
		if m.def == "" {
			return Last4 // a Masker not made by New
		}
		return m.def
	case Last4, BINLast4, Redact, Null, Drop:
		return s
	case HMAC:
		if m.key == nil {
			return Redact
		}
		return s
	}
	return Redact
}

// Counts says what a call masked or removed.
type Counts struct {
	// PANs is the number of PANs masked (by detection), or of values
	// masked by rule.
	PANs int
	// SAD is the number of sensitive-authentication-data items removed:
	// track data found in text, and JSON members named like a SAD field.
	SAD int
}

// Add adds o to c.
func (c *Counts) Add(o Counts) {
	c.PANs += o.PANs
	c.SAD += o.SAD
}

// IsZero reports whether nothing was masked or removed.
func (c Counts) IsZero() bool { return c.PANs == 0 && c.SAD == 0 }

// hmacState is an HMAC-SHA256 under the Masker's key with its buffers.
type hmacState struct {
	h      hash.Hash
	digits []byte
	sum    []byte
}

// appendHMAC appends the hex HMAC-SHA256 of the digits of src (other bytes
// ignored) under the Masker's key.
func (m *Masker) appendHMAC(dst, src []byte) []byte {
	st := m.hashes.Get().(*hmacState)
	st.digits = appendDigits(st.digits[:0], src)
	st.h.Reset()
	st.h.Write(st.digits)
	st.sum = st.h.Sum(st.sum[:0])
	dst = hex.AppendEncode(dst, st.sum)
	m.hashes.Put(st)
	return dst
}

// hmacSum returns the HMAC-SHA256 of digits under the Masker's key.
func (m *Masker) hmacSum(digits []byte) [sha256.Size]byte {
	st := m.hashes.Get().(*hmacState)
	st.h.Reset()
	st.h.Write(digits)
	st.sum = st.h.Sum(st.sum[:0])
	var sum [sha256.Size]byte
	copy(sum[:], st.sum)
	m.hashes.Put(st)
	return sum
}

// Fingerprint identifies a PAN in audit records without holding it: the hex
// HMAC-SHA256 under key of the PAN's digits (separators and any other
// characters ignored, so "4242 4242 4242 4242" and "4242424242424242" agree),
// and its last four digits (fewer if it has fewer). key must be a secret of
// at least MinKeyLen bytes, distinct from the HMAC strategy's key.
func Fingerprint(key, pan []byte) (hmacHex, last4 string) {
	var buf [64]byte
	digits := appendDigits(buf[:0], pan)
	h := hmac.New(sha256.New, key)
	h.Write(digits)
	hmacHex = hex.EncodeToString(h.Sum(nil))
	if len(digits) > 4 {
		digits = digits[len(digits)-4:]
	}
	return hmacHex, string(digits)
}

// appendDigits appends the ASCII digits of src to dst.
func appendDigits(dst, src []byte) []byte {
	for _, c := range src {
		if isDigit(c) {
			dst = append(dst, c)
		}
	}
	return dst
}
