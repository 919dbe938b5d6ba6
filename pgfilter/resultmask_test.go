package pgfilter

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/custos-dev/custos/internal/mask"
)

func newTestMasker(t testing.TB) *resultMasker {
	t.Helper()
	m, err := mask.New(mask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return newResultMasker(m, nil, &Session{}, nil)
}

func TestNumericCodec(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"0", "1", "-1", "4242424242424242", "1000000000004242", "12.5", "-0.0001", "9999.9999", "100000000", "3.14159265358979", "0.10"} {
		enc, err := numericFromText(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		got, err := numericToText(enc)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if got != s {
			t.Errorf("round trip %q -> %q", s, got)
		}
	}
	for _, bad := range [][]byte{nil, {0, 1, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0x12, 0x34, 0, 0}} {
		if _, err := numericToText(bad); err == nil {
			t.Errorf("numericToText(%x) accepted", bad)
		}
	}
}

func TestFloat8Integer(t *testing.T) {
	t.Parallel()
	b := binary.BigEndian.AppendUint64(nil, math.Float64bits(4242424242424242))
	if s, ok := float8Integer(b); !ok || s != "4242424242424242" {
		t.Errorf("float8Integer = %q %v", s, ok)
	}
	b = binary.BigEndian.AppendUint64(nil, math.Float64bits(3.5))
	if _, ok := float8Integer(b); ok {
		t.Error("3.5 taken for an integer")
	}
}

func dataRowBody(vals ...[]byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(vals)))
	for _, v := range vals {
		if v == nil {
			b = binary.BigEndian.AppendUint32(b, math.MaxUint32)
			continue
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

func TestDataRowMasking(t *testing.T) {
	t.Parallel()
	rm := newTestMasker(t)
	numeric, _ := numericFromText("4242424242424242")
	int8v := binary.BigEndian.AppendUint64(nil, uint64(5555555555554444))
	arr := binaryArray(oidText, []byte("4242424242424242"), nil, []byte("no pan"))
	fields := []field{
		{oid: oidText}, {oid: oidText, sad: true}, {oid: oidNumeric, format: 1}, {oid: oidInt8, format: 1},
		{oid: oidInt8}, {oid: 1009, format: 1}, {oid: oidJSONB}, {oid: oidInt4}, {oid: oidText},
	}
	m := &Message{Type: 'D', Body: dataRowBody(
		[]byte("4242 4242 4242 4242"), []byte("123"), numeric, int8v,
		[]byte("378282246310005"), arr, []byte(`{"n": 6011111111111117, "s": "x"}`), []byte("42"), nil,
	)}
	if err := rm.dataRow(m, fields, nil); err != nil {
		t.Fatal(err)
	}
	var dr pgproto3.DataRow
	if err := dr.Decode(m.Body); err != nil {
		t.Fatal(err)
	}
	v := dr.Values
	if string(v[0]) != "**** **** **** 4242" {
		t.Errorf("text = %q", v[0])
	}
	if v[1] != nil {
		t.Errorf("cvv = %q, want NULL", v[1])
	}
	if s, _ := numericToText(v[2]); s == "4242424242424242" || len(s) != 16 || s[12:] != "4242" {
		t.Errorf("numeric = %q", s)
	}
	if n := int64(binary.BigEndian.Uint64(v[3])); n == 5555555555554444 || n%10000 != 4444 {
		t.Errorf("int8 = %d", n)
	}
	if s := string(v[4]); s == "378282246310005" || len(s) != 15 {
		t.Errorf("int8 text = %q", s)
	}
	if bytes.Contains(v[5], []byte("4242424242424242")) || !bytes.Contains(v[5], []byte("no pan")) {
		t.Errorf("array = %q", v[5])
	}
	if bytes.Contains(v[6], []byte("6011111111111117")) {
		t.Errorf("jsonb = %q", v[6])
	}
	if string(v[7]) != "42" || v[8] != nil {
		t.Errorf("untouched values changed: %q %q", v[7], v[8])
	}
	if rm.counts.PANs < 6 || rm.counts.SAD != 1 {
		t.Errorf("counts = %+v", rm.counts)
	}

	// A row with nothing to mask is relayed as it came.
	body := dataRowBody([]byte("Ada"), []byte("2026-01-01"))
	m = &Message{Type: 'D', Body: body}
	if err := rm.dataRow(m, []field{{oid: oidText}, {oid: oidText}}, nil); err != nil || &m.Body[0] != &body[0] {
		t.Errorf("clean row rebuilt: %v", err)
	}
}

func binaryArray(elem uint32, vals ...[]byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, 1)
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint32(b, elem)
	b = binary.BigEndian.AppendUint32(b, uint32(len(vals)))
	b = binary.BigEndian.AppendUint32(b, 1)
	for _, v := range vals {
		if v == nil {
			b = binary.BigEndian.AppendUint32(b, math.MaxUint32)
			continue
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

func TestProtocolTracking(t *testing.T) {
	t.Parallel()
	rm := newTestMasker(t)
	ctx := context.Background()
	var sent []pgproto3.FrontendMessage
	c := recordConn{sent: &sent}
	client := func(msg pgproto3.FrontendMessage) {
		t.Helper()
		enc, _ := msg.Encode(nil)
		if _, err := rm.Handle(ctx, ClientToServer, &Message{Type: enc[0], Body: enc[5:]}, c); err != nil {
			t.Fatal(err)
		}
	}
	server := func(msg pgproto3.BackendMessage) (Verdict, *Message) {
		t.Helper()
		enc, _ := msg.Encode(nil)
		m := &Message{Type: enc[0], Body: enc[5:]}
		v, err := rm.Handle(ctx, ServerToClient, m, c)
		if err != nil {
			t.Fatal(err)
		}
		return v, m
	}
	int8Field := pgproto3.FieldDescription{Name: []byte("n"), DataTypeOID: oidInt8, DataTypeSize: 8}
	// pgx style: Parse + Describe S + Sync, then Bind (binary) + Execute + Sync.
	client(&pgproto3.Parse{Name: "s1", Query: "SELECT n"})
	client(&pgproto3.Describe{ObjectType: 'S', Name: "s1"})
	client(&pgproto3.Sync{})
	server(&pgproto3.ParseComplete{})
	server(&pgproto3.ParameterDescription{})
	server(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{int8Field}})
	server(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	client(&pgproto3.Bind{PreparedStatement: "s1", ResultFormatCodes: []int16{1}})
	client(&pgproto3.Execute{})
	client(&pgproto3.Sync{})
	if len(sent) != 0 {
		t.Fatalf("described statement got an extra Describe: %v", sent)
	}
	server(&pgproto3.BindComplete{})
	_, m := server(&pgproto3.DataRow{Values: [][]byte{binary.BigEndian.AppendUint64(nil, 4242424242424242)}})
	var dr pgproto3.DataRow
	_ = dr.Decode(m.Body)
	if n := binary.BigEndian.Uint64(dr.Values[0]); n == 4242424242424242 {
		t.Fatalf("binary int8 PAN passed")
	}
	server(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
	server(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if len(rm.pending) != 0 {
		t.Fatalf("pending = %v", rm.pending)
	}

	// A portal executed with no Describe at all: custos describes it first
	// and swallows the answer.
	client(&pgproto3.Parse{Query: "SELECT n"})
	client(&pgproto3.Bind{ResultFormatCodes: []int16{1}})
	client(&pgproto3.Execute{})
	client(&pgproto3.Sync{})
	if len(sent) != 1 {
		t.Fatalf("no Describe injected: %v", sent)
	}
	server(&pgproto3.ParseComplete{})
	server(&pgproto3.BindComplete{})
	v, _ := server(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("n"), DataTypeOID: oidInt8, Format: 1}}})
	if v != Drop {
		t.Fatal("injected Describe's answer reached the client")
	}
	_, m = server(&pgproto3.DataRow{Values: [][]byte{binary.BigEndian.AppendUint64(nil, 4242424242424242)}})
	_ = dr.Decode(m.Body)
	if n := binary.BigEndian.Uint64(dr.Values[0]); n == 4242424242424242 {
		t.Fatalf("binary int8 PAN passed")
	}
	server(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
	server(&pgproto3.ReadyForQuery{TxStatus: 'I'})

	// An error skips to the Sync.
	client(&pgproto3.Parse{Query: "bad"})
	client(&pgproto3.Bind{})
	client(&pgproto3.Describe{ObjectType: 'P'})
	client(&pgproto3.Execute{})
	client(&pgproto3.Sync{})
	_, m = server(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: `near "4242424242424242"`})
	if bytes.Contains(m.Body, []byte("4242424242424242")) {
		t.Fatal("PAN in an error message passed")
	}
	server(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if len(rm.pending) != 0 {
		t.Fatalf("pending after error = %v", rm.pending)
	}
}

type recordConn struct{ sent *[]pgproto3.FrontendMessage }

func (c recordConn) SendToClient(...pgproto3.BackendMessage) error { return nil }
func (c recordConn) SendToServer(msgs ...pgproto3.FrontendMessage) error {
	*c.sent = append(*c.sent, msgs...)
	return nil
}

// FuzzServerMessages feeds arbitrary server message bodies to the masking
// hook: it must never panic, and a DataRow it accepts must stay a
// well-formed DataRow without a clear test PAN.
func FuzzServerMessages(f *testing.F) {
	f.Add(byte('D'), dataRowBody([]byte("4242424242424242"), nil, []byte("x")), uint32(oidText), int16(0))
	f.Add(byte('D'), dataRowBody(binaryArray(oidInt8, binary.BigEndian.AppendUint64(nil, 4242424242424242))), uint32(1016), int16(1))
	n, _ := numericFromText("378282246310005")
	f.Add(byte('D'), dataRowBody(n), uint32(oidNumeric), int16(1))
	f.Add(byte('E'), []byte("SERROR\x00C22P02\x00Minvalid input \"4242424242424242\"\x00\x00"), uint32(0), int16(0))
	f.Add(byte('A'), []byte("\x00\x00\x00\x01chan\x004242424242424242\x00"), uint32(0), int16(0))
	f.Add(byte('d'), []byte("1\t4242424242424242\n"), uint32(0), int16(0))
	f.Add(byte('V'), []byte("\x00\x00\x00\x104242424242424242"), uint32(0), int16(0))
	f.Fuzz(func(t *testing.T, typ byte, body []byte, oid uint32, format int16) {
		rm := newTestMasker(t)
		rm.simple = []field{{oid: oid, format: format}, {oid: oidText}, {oid: oid, format: 1}}
		m := &Message{Type: typ, Body: bytes.Clone(body)}
		_, err := rm.server(context.Background(), m)
		if typ != 'D' || err != nil {
			return
		}
		var dr pgproto3.DataRow
		if err := dr.Decode(m.Body); err != nil {
			if (&pgproto3.DataRow{}).Decode(body) == nil {
				t.Fatalf("masking broke a valid DataRow: %v", err)
			}
			return
		}
		for _, v := range dr.Values {
			for _, pan := range []string{"4242424242424242", "378282246310005"} {
				if bytes.Contains(v, []byte(pan)) {
					t.Fatalf("clear PAN in %q", v)
				}
			}
		}
	})
}

func BenchmarkMaskDataRow(b *testing.B) {
	rm := newTestMasker(b)
	fields := []field{{oid: oidInt8, format: 1}, {oid: oidText}, {oid: oidText}}
	clean := dataRowBody(binary.BigEndian.AppendUint64(nil, 12345), []byte("Ada Lovelace"), []byte("order 2026-11-26 #100000000001"))
	withPAN := dataRowBody(binary.BigEndian.AppendUint64(nil, 12345), []byte("Ada Lovelace"), []byte("4242424242424242"))
	for _, tc := range []struct {
		name string
		body []byte
	}{{"clean", clean}, {"pan", withPAN}} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(tc.body)))
			b.ReportAllocs()
			for range b.N {
				m := &Message{Type: 'D', Body: tc.body}
				if err := rm.dataRow(m, fields, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
