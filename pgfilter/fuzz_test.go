package pgfilter

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// FuzzStartupPacket feeds arbitrary bytes to the startup-phase decoder the
// proxy runs before authentication: it must never panic and must reject
// what it cannot parse.
func FuzzStartupPacket(f *testing.F) {
	f.Add(startupBytes(f, protocolVersion30, "user", "alice", "database", "payments"))
	f.Add(startupBytes(f, 3<<16|2, "user", "a", "_pq_.opt", "v"))
	f.Add(startupBytes(f, sslRequestCode))
	f.Add(startupBytes(f, gssEncRequestCode))
	f.Add([]byte{0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 1, 0, 0, 0, 2})
	f.Add([]byte{0, 0, 0, 8})
	f.Fuzz(func(t *testing.T, data []byte) {
		pkt, err := readStartupPacket(bytes.NewReader(data))
		if err != nil {
			return
		}
		req, err := parseStartupPacket(pkt)
		if err != nil {
			return
		}
		switch req.code {
		case sslRequestCode, gssEncRequestCode, cancelRequestCode:
		default:
			if req.code>>16 != 3 {
				t.Fatalf("accepted protocol %d", req.code)
			}
			for _, p := range req.params {
				if bytes.IndexByte([]byte(p.name+p.value), 0) >= 0 {
					t.Fatalf("NUL inside parameter %q", p.name)
				}
			}
		}
	})
}

// FuzzClientFrames feeds arbitrary bytes to the relay's frame reader and
// decodes each frame as the client-side message its type names: no panic,
// no frame longer than the limit, and every byte accounted for.
func FuzzClientFrames(f *testing.F) {
	seed := encodeFrontend(f,
		&pgproto3.Query{String: "SELECT 1"},
		&pgproto3.Parse{Name: "s", Query: "SELECT $1", ParameterOIDs: []uint32{25}},
		&pgproto3.Bind{PreparedStatement: "s", Parameters: [][]byte{[]byte("x")}},
		&pgproto3.Execute{},
		&pgproto3.Sync{},
	)
	f.Add(seed)
	f.Add([]byte{'Q', 0, 0, 0, 4})
	f.Add([]byte{'B', 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{'F', 0, 0, 0, 10, 0, 0, 0, 1, 0, 1})
	const limit = 1 << 16
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := newFrameReader(bufio.NewReaderSize(bytes.NewReader(data), 16), limit)
		consumed := 0
		for {
			typ, n, err := fr.header()
			if err != nil {
				if errors.Is(err, io.EOF) && consumed != len(data) {
					t.Fatalf("EOF after %d of %d bytes", consumed, len(data))
				}
				return
			}
			body, err := fr.body(typ, n)
			if err != nil {
				if !errors.Is(err, ErrTooLarge) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(body) != n || n > limit {
				t.Fatalf("body %d bytes, header said %d", len(body), n)
			}
			consumed += 5 + n
			if msg := decodeFrontend(typ); msg != nil {
				_ = msg.Decode(body)
			}
		}
	})
}

// FuzzBindParams feeds arbitrary Bind bodies to the decoder that pins a
// parked statement's parameters: it must never panic, and what it accepts
// must agree with pgproto3's own decoding.
func FuzzBindParams(f *testing.F) {
	for _, b := range []*pgproto3.Bind{
		{},
		{DestinationPortal: "p", PreparedStatement: "s", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{{0, 0, 0, 1}, nil}},
		{Parameters: [][]byte{[]byte("4111 1111 1111 1111"), {}}, ResultFormatCodes: []int16{0, 1}},
	} {
		buf, err := b.Encode(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(buf[5:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		params, err := bindParams(body)
		var want pgproto3.Bind
		if werr := want.Decode(body); werr != nil {
			return // pgproto3 refuses it; the server would too
		}
		if err != nil {
			t.Fatalf("bindParams refused a Bind pgproto3 decodes: %v", err)
		}
		if len(params) != len(want.Parameters)+1 {
			t.Fatalf("%d values pinned, want formats + %d parameters", len(params), len(want.Parameters))
		}
		for i, p := range want.Parameters {
			if (p == nil) != (params[i+1] == nil) || !bytes.Equal(p, params[i+1]) {
				t.Fatalf("parameter %d = %q, want %q", i, params[i+1], p)
			}
		}
	})
}
