package pgfilter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// decode is the tests' oracle of PostgreSQL's rules for a Bind: it
// decodes as decodeThrough does and also refuses more than one parameter
// format code but not one per parameter, a parameter length below -1 (-1
// is NULL), and bytes after the result format codes. The gateway's
// callers read only as far as each needs and leave those checks to the
// server. On an error b holds the parts read before it.
func (b *bindMsg) decode(src []byte) error {
	rest, err := b.decodeThrough(src, bindResultFormats)
	if err != nil {
		return err
	}
	np := b.Params.count()
	if nf := b.ParamFormats.count(); nf > 1 && nf != np {
		return fmt.Errorf("%w: %d parameter format codes for %d parameters", errMalformedBind, nf, np)
	}
	if i, l, ok := b.Params.badLength(); ok {
		return fmt.Errorf("%w: parameter %d has length %d", errMalformedBind, i+1, l)
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d bytes after the result format codes", errMalformedBind, len(rest))
	}
	return nil
}

// badLength returns the index and length of the first value whose length
// is below -1.
func (v bindValues) badLength() (int, int32, bool) {
	n := v.count()
	if n == 0 {
		return 0, 0, false
	}
	rest := v[2:]
	for i := range n {
		l := int32(binary.BigEndian.Uint32(rest))
		rest = rest[4:]
		if l < -1 {
			return i, l, true
		}
		if l > 0 {
			rest = rest[l:]
		}
	}
	return 0, 0, false
}

// bindBody is the body of b as pgproto3 encodes it.
func bindBody(tb testing.TB, b *pgproto3.Bind) []byte {
	tb.Helper()
	buf, err := b.Encode(nil)
	if err != nil {
		tb.Fatal(err)
	}
	return buf[5:]
}

// bindWire builds a Bind body from raw parts, for messages pgproto3 does
// not encode: each part is a string (sent with its NUL), a uint16 or
// int16 (sent as 16 bits), an int32 (32 bits) or []byte (as is).
func bindWire(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			b = append(append(b, p...), 0)
		case uint16:
			b = binary.BigEndian.AppendUint16(b, p)
		case int16:
			b = binary.BigEndian.AppendUint16(b, uint16(p))
		case int32:
			b = binary.BigEndian.AppendUint32(b, uint32(p))
		case []byte:
			b = append(b, p...)
		default:
			panic("bindWire: unknown part")
		}
	}
	return b
}

// asPgproto3 is what b decoded, as a pgproto3.Bind (nil lists for none).
func asPgproto3(b *bindMsg) *pgproto3.Bind {
	out := &pgproto3.Bind{DestinationPortal: string(b.Portal), PreparedStatement: string(b.Statement)}
	if b.ParamFormats.count() > 0 {
		out.ParameterFormatCodes = b.ParamFormats.int16s()
	}
	for _, v := range b.Params.all() {
		out.Parameters = append(out.Parameters, v)
	}
	if b.ResultFormats.count() > 0 {
		out.ResultFormatCodes = b.ResultFormats.int16s()
	}
	return out
}

// sameBind reports whether two Binds have the same fields, telling NULL
// from an empty value and ignoring nil against empty lists.
func sameBind(a, b *pgproto3.Bind) bool {
	if a.DestinationPortal != b.DestinationPortal || a.PreparedStatement != b.PreparedStatement ||
		!slices.Equal(a.ParameterFormatCodes, b.ParameterFormatCodes) ||
		!slices.Equal(a.ResultFormatCodes, b.ResultFormatCodes) || len(a.Parameters) != len(b.Parameters) {
		return false
	}
	for i := range a.Parameters {
		if (a.Parameters[i] == nil) != (b.Parameters[i] == nil) || !bytes.Equal(a.Parameters[i], b.Parameters[i]) {
			return false
		}
	}
	return true
}

func TestBindDecode(t *testing.T) {
	t.Parallel()
	long := bytes.Repeat([]byte("x"), 70000)
	valid := []struct {
		name string
		bind *pgproto3.Bind
	}{
		{"empty", &pgproto3.Bind{}},
		{"names", &pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "stmtcache_1"}},
		{"zero params, result formats", &pgproto3.Bind{PreparedStatement: "s", ResultFormatCodes: []int16{1}}},
		{"text params", &pgproto3.Bind{PreparedStatement: "s", Parameters: [][]byte{[]byte("42"), []byte("x")}}},
		{"NULL and empty", &pgproto3.Bind{Parameters: [][]byte{nil, {}, nil}}},
		{"one format for all", &pgproto3.Bind{
			ParameterFormatCodes: []int16{1},
			Parameters:           [][]byte{{0, 0, 0, 1}, {0, 0, 0, 2}, nil},
		}},
		{"format per parameter", &pgproto3.Bind{
			ParameterFormatCodes: []int16{0, 1, 0},
			Parameters:           [][]byte{[]byte("a"), {0, 0, 0, 7}, nil},
			ResultFormatCodes:    []int16{0, 1, 1, 0},
		}},
		{"one format, no params", &pgproto3.Bind{ParameterFormatCodes: []int16{1}}},
		{"format codes the server checks", &pgproto3.Bind{
			ParameterFormatCodes: []int16{7},
			Parameters:           [][]byte{nil},
			ResultFormatCodes:    []int16{-1},
		}},
		{"large value", &pgproto3.Bind{Parameters: [][]byte{long}}},
	}
	for _, tc := range valid {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := bindBody(t, tc.bind)
			var b bindMsg
			if err := b.decode(body); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if got := asPgproto3(&b); !sameBind(got, tc.bind) {
				t.Fatalf("decoded %+v, want %+v", got, tc.bind)
			}
			if b.Params.count() != len(tc.bind.Parameters) {
				t.Fatalf("%d parameters, want %d", b.Params.count(), len(tc.bind.Parameters))
			}
			if f := b.ResultFormats.int16s(); f == nil {
				t.Fatal("result formats nil, want a slice")
			}
		})
	}

	malformed := []struct {
		name string
		body []byte
	}{
		{"empty body", nil},
		{"portal without NUL", []byte("portal")},
		{"statement without NUL", []byte("p\x00stmt")},
		{"no parameter format count", bindWire("p", "s")},
		{"half a parameter format count", bindWire("p", "s", []byte{0})},
		{"parameter format count past the end", bindWire("", "", uint16(2), int16(1))},
		{"no parameter count", bindWire("", "", uint16(0))},
		{"parameter count past the end", bindWire("", "", uint16(0), uint16(2), int32(1), []byte("a"))},
		{"half a parameter length", bindWire("", "", uint16(0), uint16(1), []byte{0, 0})},
		{"value past the end", bindWire("", "", uint16(0), uint16(1), int32(5), []byte("abc"), uint16(0))},
		{"value length overflows", bindWire("", "", uint16(0), uint16(1), int32(0x7fffffff), uint16(0))},
		{"length -2", bindWire("", "", uint16(0), uint16(1), int32(-2), uint16(0))},
		{"length minimum int32", bindWire("", "", uint16(0), uint16(1), int32(-0x80000000), uint16(0))},
		{"two formats, three parameters", bindWire("", "", uint16(2), int16(0), int16(1),
			uint16(3), int32(-1), int32(-1), int32(-1), uint16(0))},
		{"two formats, no parameters", bindWire("", "", uint16(2), int16(0), int16(1), uint16(0), uint16(0))},
		{"no result format count", bindWire("", "", uint16(0), uint16(0))},
		{"result format count past the end", bindWire("", "", uint16(0), uint16(0), uint16(3), int16(1), int16(1))},
		{"trailing byte", bindWire("", "", uint16(0), uint16(0), uint16(0), []byte{0})},
		{"trailing after values", bindWire("", "s", uint16(1), int16(1), uint16(1), int32(1), []byte{9},
			uint16(1), int16(1), []byte("junk"))},
	}
	for _, tc := range malformed {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var b bindMsg
			err := b.decode(tc.body)
			if err == nil {
				t.Fatal("decode accepted a Bind PostgreSQL refuses")
			}
			if !errors.Is(err, errMalformedBind) {
				t.Fatalf("error %v does not wrap errMalformedBind", err)
			}
		})
	}
}

// TestBindDecodeThrough covers what each part of the gateway reads of a
// Bind: a part is refused only when its own layout is broken.
func TestBindDecodeThrough(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body []byte
		// ok is whether decodeThrough accepts body through names,
		// parameters and result formats.
		ok   [3]bool
		rest string // after the result formats, when accepted
	}{
		{"valid", bindWire("p", "s", uint16(0), uint16(1), int32(1), []byte("v"), uint16(1), int16(1)),
			[3]bool{true, true, true}, ""},
		{"names only", bindWire("p", "s"), [3]bool{true, false, false}, ""},
		{"values truncated", bindWire("p", "s", uint16(0), uint16(2), int32(-1)), [3]bool{true, false, false}, ""},
		{"no result formats", bindWire("p", "s", uint16(0), uint16(1), int32(-1)), [3]bool{true, true, false}, ""},
		{"result formats truncated", bindWire("p", "s", uint16(0), uint16(0), uint16(2), int16(0)),
			[3]bool{true, true, false}, ""},
		{"length -2 reads as NULL", bindWire("", "", uint16(0), uint16(2), int32(-2), int32(1), []byte("x"), uint16(0)),
			[3]bool{true, true, true}, ""},
		{"format count mismatch", bindWire("", "", uint16(2), int16(0), int16(0), uint16(1), int32(-1), uint16(0)),
			[3]bool{true, true, true}, ""},
		{"trailing bytes", bindWire("", "", uint16(0), uint16(0), uint16(0), []byte("zz")),
			[3]bool{true, true, true}, "zz"},
		{"no NUL", []byte("p"), [3]bool{false, false, false}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for part := bindNames; part <= bindResultFormats; part++ {
				var b bindMsg
				rest, err := b.decodeThrough(tc.body, part)
				if (err == nil) != tc.ok[part] {
					t.Fatalf("through part %d: error %v, want accepted %v", part, err, tc.ok[part])
				}
				if err == nil && part == bindResultFormats && string(rest) != tc.rest {
					t.Fatalf("rest %q, want %q", rest, tc.rest)
				}
			}
		})
	}

	var b bindMsg
	body := bindWire("", "", uint16(0), uint16(3), int32(-2), int32(0), int32(-1), uint16(0))
	if _, err := b.decodeThrough(body, bindParameters); err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	for _, v := range b.Params.all() {
		got = append(got, v)
	}
	if len(got) != 3 || got[0] != nil || got[1] == nil || len(got[1]) != 0 || got[2] != nil {
		t.Fatalf("values %q, want NULL, empty, NULL", got)
	}
}

// TestBindCallers checks what the three readers of a Bind make of it.
func TestBindCallers(t *testing.T) {
	t.Parallel()
	body := bindBody(t, &pgproto3.Bind{
		DestinationPortal:    "p",
		PreparedStatement:    "s",
		ParameterFormatCodes: []int16{0, 1},
		Parameters:           [][]byte{{}, nil},
		ResultFormatCodes:    []int16{1},
	})
	p, name, ok := parseBind(body)
	if !ok || name != "p" || p.stmt != "s" || !slices.Equal(p.formats, []int16{1}) {
		t.Fatalf("parseBind = %+v, %q, %v", p, name, ok)
	}
	params, err := bindParams(body)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]byte{{0, 2, 0, 0, 0, 1}, {}, nil}
	if len(params) != len(want) {
		t.Fatalf("bindParams = %q, want %q", params, want)
	}
	for i := range want {
		if (params[i] == nil) != (want[i] == nil) || !bytes.Equal(params[i], want[i]) {
			t.Fatalf("bindParams[%d] = %q, want %q", i, params[i], want[i])
		}
	}
	params[1] = append(params[1], 'x')
	if params, _ := bindParams(body); len(params[1]) != 0 {
		t.Fatal("bindParams aliases the message")
	}

	if p, _, ok := parseBind(bindWire("", "", uint16(0), uint16(0), uint16(0))); !ok || p.formats == nil {
		t.Fatalf("parseBind without result formats = %+v, %v; want an empty, non-nil list", p, ok)
	}
	if params, err := bindParams(nil); params != nil || err != nil {
		t.Fatalf("bindParams(nil) = %q, %v", params, err)
	}
	// The client's refusal quotes the error: it says only that the Bind is
	// malformed.
	if _, err := bindParams([]byte("p\x00s")); !errors.Is(err, errMalformedBind) || err.Error() != errMalformedBind.Error() {
		t.Fatalf("bindParams of a truncated Bind: %v, want errMalformedBind", err)
	}
}

// FuzzBindDecode feeds arbitrary Bind bodies to the decoder, and Binds
// pgproto3 encodes from arbitrary fields: it must never panic, must
// accept exactly the bodies that pgproto3 decodes to fields that encode
// back to the same bytes (with 0, 1 or one parameter format code per
// parameter), and must decode what pgproto3 encodes to the same fields.
func FuzzBindDecode(f *testing.F) {
	for _, b := range []*pgproto3.Bind{
		{},
		{DestinationPortal: "p", PreparedStatement: "s", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{{0, 0, 0, 1}, nil}},
		{Parameters: [][]byte{[]byte("4111 1111 1111 1111"), {}}, ResultFormatCodes: []int16{0, 1}},
	} {
		f.Add(bindBody(f, b), "", "", []byte{}, []byte{})
	}
	f.Add(bindWire("", "", uint16(0), uint16(1), int32(-2), uint16(0)), "p", "s", []byte{0xff, 3, 'a', 'b', 'c'}, []byte{2, 1, 0, 1})
	f.Add([]byte("p\x00s\x00\x00"), "portal", "stmt", []byte{0, 1, 'x', 0xff}, []byte{1, 0, 0, 1})
	f.Fuzz(func(t *testing.T, body []byte, portal, stmt string, values, codes []byte) {
		checkBindBody(t, body)

		// A Bind built from the other inputs.
		want := &pgproto3.Bind{DestinationPortal: portal, PreparedStatement: stmt}
		if bytes.IndexByte([]byte(portal+stmt), 0) >= 0 {
			return // a name cannot hold NUL
		}
		for len(values) > 0 {
			n := int(values[0])
			values = values[1:]
			if n == 0xff {
				want.Parameters = append(want.Parameters, nil)
				continue
			}
			n = min(n%32, len(values))
			want.Parameters = append(want.Parameters, values[:n:n])
			values = values[n:]
		}
		var mode, nr byte
		if len(codes) >= 2 {
			mode, nr, codes = codes[0]%3, codes[1]%8, codes[2:]
		}
		code := func() int16 {
			if len(codes) < 2 {
				return 0
			}
			c := int16(binary.BigEndian.Uint16(codes))
			codes = codes[2:]
			return c
		}
		switch mode {
		case 1:
			want.ParameterFormatCodes = []int16{code()}
		case 2:
			for range want.Parameters {
				want.ParameterFormatCodes = append(want.ParameterFormatCodes, code())
			}
		}
		for range nr {
			want.ResultFormatCodes = append(want.ResultFormatCodes, code())
		}
		enc := bindBody(t, want)
		var b bindMsg
		if err := b.decode(enc); err != nil {
			t.Fatalf("decode refused pgproto3's %x: %v", enc, err)
		}
		if got := asPgproto3(&b); !sameBind(got, want) {
			t.Fatalf("decoded %+v, pgproto3 encoded %+v", got, want)
		}
		checkBindBody(t, enc)
	})
}

// checkBindBody checks the decoder on one body against pgproto3 and
// against the gateway's readers of a Bind.
func checkBindBody(t *testing.T, body []byte) {
	t.Helper()
	var b bindMsg
	err := b.decode(body)
	if err != nil && !errors.Is(err, errMalformedBind) {
		t.Fatalf("error %v does not wrap errMalformedBind", err)
	}

	var pg pgproto3.Bind
	canonical := pg.Decode(bytes.Clone(body)) == nil &&
		(len(pg.ParameterFormatCodes) <= 1 || len(pg.ParameterFormatCodes) == len(pg.Parameters)) &&
		bytes.Equal(bindBody(t, &pg), body)
	if (err == nil) != canonical {
		t.Fatalf("decode error %v; pgproto3 decodes it to %+v, canonical %v", err, pg, canonical)
	}
	if err == nil {
		if got := asPgproto3(&b); !sameBind(got, &pg) {
			t.Fatalf("decoded %+v, pgproto3 %+v", got, &pg)
		}
	}

	// Each part reads only what precedes it: a Bind accepted through a
	// part is accepted through the earlier ones, with the same fields.
	var through [3]bindMsg
	var ok [3]bool
	for part := bindNames; part <= bindResultFormats; part++ {
		_, perr := through[part].decodeThrough(body, part)
		ok[part] = perr == nil
		if perr != nil && !errors.Is(perr, errMalformedBind) {
			t.Fatalf("error %v does not wrap errMalformedBind", perr)
		}
		if part > bindNames && ok[part] && !ok[part-1] {
			t.Fatalf("accepted through part %d, refused through %d", part, part-1)
		}
	}
	if err == nil && !ok[bindResultFormats] {
		t.Fatal("decode accepted a Bind decodeThrough refuses")
	}
	if ok[bindResultFormats] {
		r := through[bindResultFormats]
		if !bytes.Equal(r.Portal, through[bindNames].Portal) || !bytes.Equal(r.Params, through[bindParameters].Params) {
			t.Fatal("parts differ with how far the Bind is read")
		}
	}

	p, name, pok := parseBind(body)
	if pok != ok[bindResultFormats] {
		t.Fatalf("parseBind accepted %v, decodeThrough %v", pok, ok[bindResultFormats])
	}
	if pok && (name != string(through[bindNames].Portal) || p.stmt != string(through[bindNames].Statement) || p.formats == nil) {
		t.Fatalf("parseBind = %+v, %q", p, name)
	}
	params, perr := bindParams(body)
	if (perr == nil) != ok[bindParameters] {
		t.Fatalf("bindParams error %v, decodeThrough accepted %v", perr, ok[bindParameters])
	}
	if perr == nil {
		if len(params) != 1+through[bindParameters].Params.count() {
			t.Fatalf("%d values pinned for %d parameters", len(params), through[bindParameters].Params.count())
		}
		if pg := through[bindParameters].ParamFormats; !bytes.Equal(params[0], pg) {
			t.Fatalf("formats pinned %x, want %x", params[0], pg)
		}
	}
}

func BenchmarkBindDecode(b *testing.B) {
	body := bindBody(b, &pgproto3.Bind{
		PreparedStatement:    "stmtcache_8f3c2a1b9e7d4c6a5b0f1e2d3c4b5a69788796a5",
		ParameterFormatCodes: []int16{1, 0, 0, 1},
		Parameters: [][]byte{
			{0, 0, 0, 0, 0, 0, 0x30, 0x39},
			[]byte("alice@example.com"),
			nil,
			{0, 0, 0, 7},
		},
		ResultFormatCodes: []int16{1},
	})
	b.Run("names", func(b *testing.B) { // policyHook.bind
		b.ReportAllocs()
		for b.Loop() {
			var m bindMsg
			if _, err := m.decodeThrough(body, bindNames); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var m bindMsg
			if err := m.decode(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parseBind", func(b *testing.B) { // resultMasker.client
		b.ReportAllocs()
		for b.Loop() {
			if _, _, ok := parseBind(body); !ok {
				b.Fatal("refused")
			}
		}
	})
	b.Run("bindParams", func(b *testing.B) { // policyHook.park
		b.ReportAllocs()
		for b.Loop() {
			if _, err := bindParams(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pgproto3", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var m pgproto3.Bind
			if err := m.Decode(body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
