package pgfilter

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/jackc/pgx/v5/pgproto3"
)

func startupBytes(t testing.TB, code uint32, kv ...string) []byte {
	t.Helper()
	var b []byte
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, code)
	for _, s := range kv {
		b = append(b, s...)
		b = append(b, 0)
	}
	if code>>16 == 3 {
		b = append(b, 0)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

func TestParseStartupPacket(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      []byte
		code    uint32
		params  []param
		pq      []string
		wantErr string
	}{
		{name: "startup 3.0", in: startupBytes(t, protocolVersion30, "user", "alice", "database", "payments"),
			code: protocolVersion30, params: []param{{"user", "alice"}, {"database", "payments"}}},
		{name: "startup 3.2 with _pq_", in: startupBytes(t, 3<<16|2, "user", "bob", "_pq_.x", "1"),
			code: 3<<16 | 2, params: []param{{"user", "bob"}}, pq: []string{"_pq_.x"}},
		{name: "ssl request", in: startupBytes(t, sslRequestCode), code: sslRequestCode},
		{name: "gssenc request", in: startupBytes(t, gssEncRequestCode), code: gssEncRequestCode},
		{name: "protocol 2", in: startupBytes(t, 2<<16, "user", "x"), wantErr: "unsupported frontend protocol 2.0"},
		{name: "duplicate parameter", in: startupBytes(t, protocolVersion30, "user", "a", "user", "b"), wantErr: "given twice"},
		{name: "ssl request with trailing bytes", in: append(startupBytes(t, sslRequestCode), 1), wantErr: "trailing bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pkt, err := readStartupPacket(bytes.NewReader(fixLen(tt.in)))
			if err != nil {
				t.Fatalf("readStartupPacket: %v", err)
			}
			req, err := parseStartupPacket(pkt)
			if tt.wantErr != "" {
				if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tt.wantErr)) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req.code != tt.code {
				t.Errorf("code = %d, want %d", req.code, tt.code)
			}
			if len(req.params) != len(tt.params) {
				t.Fatalf("params = %v, want %v", req.params, tt.params)
			}
			for i := range tt.params {
				if req.params[i] != tt.params[i] {
					t.Errorf("param %d = %v, want %v", i, req.params[i], tt.params[i])
				}
			}
			if len(req.pqOptions) != len(tt.pq) {
				t.Errorf("pq options = %v, want %v", req.pqOptions, tt.pq)
			}
		})
	}
}

func fixLen(b []byte) []byte {
	out := bytes.Clone(b)
	binary.BigEndian.PutUint32(out, uint32(len(out)))
	return out
}

func TestReadStartupPacketLimits(t *testing.T) {
	t.Parallel()
	for _, n := range []uint32{0, 4, 7, maxStartupPacket + 1, 1 << 31} {
		var b [8]byte
		binary.BigEndian.PutUint32(b[:], n)
		if _, err := readStartupPacket(bytes.NewReader(b[:])); !errors.Is(err, ErrMalformed) {
			t.Errorf("length %d: err = %v, want ErrMalformed", n, err)
		}
	}
	cancel := fixLen(append(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(make([]byte, 4), cancelRequestCode), 42), 1, 2, 3, 4))
	pkt, err := readStartupPacket(bytes.NewReader(cancel))
	if err != nil {
		t.Fatal(err)
	}
	req, err := parseStartupPacket(pkt)
	if err != nil || req.pid != 42 || !bytes.Equal(req.secret, []byte{1, 2, 3, 4}) {
		t.Fatalf("cancel = %+v, %v", req, err)
	}
}

// encodeFrontend concatenates encoded client messages.
func encodeFrontend(t testing.TB, msgs ...pgproto3.FrontendMessage) []byte {
	t.Helper()
	var b []byte
	var err error
	for _, m := range msgs {
		if b, err = m.Encode(b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// TestFrameReaderSplits feeds a message stream one byte at a time and with
// every split point, and checks the frames come out whole and in order.
func TestFrameReaderSplits(t *testing.T) {
	t.Parallel()
	stream := encodeFrontend(t,
		&pgproto3.Query{String: "SELECT 1; SELECT 'x'"},
		&pgproto3.Parse{Name: "s1", Query: "SELECT $1::int8", ParameterOIDs: []uint32{20}},
		&pgproto3.Bind{PreparedStatement: "s1", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{{0, 0, 0, 0, 0, 0, 0, 7}}, ResultFormatCodes: []int16{1}},
		&pgproto3.Describe{ObjectType: 'P'},
		&pgproto3.Execute{MaxRows: 10},
		&pgproto3.Flush{},
		&pgproto3.CopyData{Data: bytes.Repeat([]byte("a,b\n"), 5000)},
		&pgproto3.Sync{},
		&pgproto3.Terminate{},
	)
	want := frames(t, bufio.NewReader(bytes.NewReader(stream)))
	if len(want) != 9 {
		t.Fatalf("got %d frames from the whole stream", len(want))
	}
	got := frames(t, bufio.NewReaderSize(iotest.OneByteReader(bytes.NewReader(stream)), 16))
	assertFrames(t, "one byte", got, want)
	for split := 1; split < len(stream); split += 7 {
		r := io.MultiReader(bytes.NewReader(stream[:split]), bytes.NewReader(stream[split:]))
		got := frames(t, bufio.NewReaderSize(iotest.HalfReader(r), 64))
		assertFrames(t, "split", got, want)
	}
}

type frame struct {
	typ  byte
	body []byte
}

func frames(t testing.TB, r *bufio.Reader) []frame {
	t.Helper()
	fr := newFrameReader(r, 1<<20)
	var out []frame
	for {
		typ, n, err := fr.header()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("header: %v", err)
		}
		body, err := fr.body(typ, n)
		if err != nil {
			t.Fatalf("body: %v", err)
		}
		out = append(out, frame{typ, bytes.Clone(body)})
	}
}

func assertFrames(t *testing.T, what string, got, want []frame) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d frames, want %d", what, len(got), len(want))
	}
	for i := range want {
		if got[i].typ != want[i].typ || !bytes.Equal(got[i].body, want[i].body) {
			t.Fatalf("%s: frame %d differs", what, i)
		}
	}
}

func TestFrameReaderErrors(t *testing.T) {
	t.Parallel()
	// Length below 4.
	fr := newFrameReader(bufio.NewReader(bytes.NewReader([]byte{'Q', 0, 0, 0, 3})), 1<<20)
	if _, _, err := fr.header(); !errors.Is(err, ErrMalformed) {
		t.Errorf("short length: %v", err)
	}
	// Over the limit.
	big := encodeFrontend(t, &pgproto3.Query{String: string(bytes.Repeat([]byte("x"), 2000))})
	fr = newFrameReader(bufio.NewReader(bytes.NewReader(big)), 1000)
	typ, n, err := fr.header()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fr.body(typ, n); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over limit: %v", err)
	}
	// Truncated body.
	fr = newFrameReader(bufio.NewReader(bytes.NewReader(big[:100])), 1<<20)
	typ, n, _ = fr.header()
	if _, err := fr.body(typ, n); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated: %v", err)
	}
}

func TestParseOAuthBearer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, tok string
		err     bool
	}{
		{in: "n,,\x01auth=Bearer abc.def.ghi\x01\x01", tok: "abc.def.ghi"},
		{in: "n,,\x01host=db\x01auth=bearer tok\x01\x01", tok: "tok"},
		{in: "n,,\x01\x01", tok: ""},
		{in: "p=tls-unique,,\x01auth=Bearer x\x01\x01", err: true},
		{in: "n,,\x01auth=Basic x\x01\x01", err: true},
		{in: "n,,auth=Bearer x", err: true},
	}
	for _, tt := range tests {
		tok, err := parseOAuthBearer([]byte(tt.in))
		if (err != nil) != tt.err || tok != tt.tok {
			t.Errorf("parseOAuthBearer(%q) = %q, %v", tt.in, tok, err)
		}
	}
}
