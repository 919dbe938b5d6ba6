package pgfilter

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
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

// serverEncodingModel resolves an encoding name the way PostgreSQL's C
// pg_char_to_encoding does, given whether the server's locale calls a
// byte of 0x80 or above alphanumeric (isalnum depends on LC_CTYPE): ""
// for a name it does not know.
func serverEncodingModel(name string, highAlnum bool) string {
	if i := strings.IndexByte(name, 0); i >= 0 {
		name = name[:i] // a C string ends at NUL
	}
	if name == "" || len(name) >= 64 {
		return ""
	}
	var key []byte
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'A' && c <= 'Z':
			key = append(key, c+'a'-'A')
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c >= 0x80 && highAlnum:
			key = append(key, c)
		}
	}
	return encodingAliases[string(key)]
}

// FuzzEncodingName checks the encoding name canonicaliser against a model
// of the server's resolution: whatever the server's locale, a name custos
// accepts resolves on the server to the same encoding, and custos never
// accepts a name the server resolves to an encoding it would refuse.
func FuzzEncodingName(f *testing.F) {
	for _, s := range []string{"UTF8", "utf-8", "Shift_JIS", "SJIS", "s\xe9jis", "sj\x00is", "u.t.f.8", "win932", "MS_Kanji",
		"latin1", "gb-18030", strings.Repeat("_", 59) + "utf8", strings.Repeat("_", 60) + "utf8", "UNICODE", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got, ok := canonicalEncoding(name)
		lo, hi := serverEncodingModel(name, false), serverEncodingModel(name, true)
		if ok {
			if got != lo || got != hi {
				t.Fatalf("custos resolves %q to %s, the server to %q (C locale) / %q (8-bit locale)", name, got, lo, hi)
			}
		}
		if _, err := safeClientEncoding(name); err == nil {
			if !ok || !safeEncodingSet[lo] {
				t.Fatalf("%q accepted, resolves to %q on the server", name, lo)
			}
		}
		ascii := true
		for i := 0; i < len(name); i++ {
			ascii = ascii && name[i] != 0 && name[i] < 0x80
		}
		if ascii && got != lo {
			t.Fatalf("ASCII name %q: custos %q, server %q", name, got, lo)
		}
	})
}

// FuzzStartupParams runs arbitrary startup packets through the decoder and
// the parameter checks the proxy runs before authentication: no panic, and
// what passes names an allowed parameter set with a safe client encoding,
// the one the server would resolve the client's name to.
func FuzzStartupParams(f *testing.F) {
	f.Add(startupBytes(f, protocolVersion30, "user", "alice", "database", "payments"))
	f.Add(startupBytes(f, protocolVersion30, "user", "alice", "client_encoding", "SJIS"))
	f.Add(startupBytes(f, protocolVersion30, "user", "alice", "client_encoding", "latin-1"))
	f.Add(startupBytes(f, protocolVersion30, "user", "alice", "CLIENT_ENCODING", "utf8", "client_encoding", "win932"))
	f.Add(startupBytes(f, protocolVersion30, "user", "alice", "options", "-c client_encoding=BIG5"))
	f.Add(startupBytes(f, protocolVersion30, "user", "alice", "application_name", "x", "timezone", "UTC"))
	allowed := map[string]bool{"client_encoding": true, "application_name": true}
	for _, canon := range allowedParams {
		allowed[canon] = true
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pkt, err := readStartupPacket(bytes.NewReader(data))
		if err != nil {
			return
		}
		req, err := parseStartupPacket(pkt)
		if err != nil || req.code>>16 != 3 {
			return
		}
		sp, err := checkStartupParams(req.params)
		if err != nil {
			var pe *paramError
			var ce *clientError
			if !errors.As(err, &pe) || !errors.As(err, &ce) || ce.resp.Severity != "FATAL" {
				t.Fatalf("refusal %v is not a FATAL for the client", err)
			}
			return
		}
		if sp.user == "" || sp.database == "" {
			t.Fatalf("accepted without user/database: %+v", sp)
		}
		for k := range sp.params {
			if !allowed[k] {
				t.Fatalf("parameter %q passed upstream", k)
			}
		}
		enc := sp.params["client_encoding"]
		if !safeEncodingSet[enc] {
			t.Fatalf("client_encoding %q passed upstream", enc)
		}
		last := ""
		for _, p := range req.params {
			if strings.EqualFold(p.name, "client_encoding") {
				last = p.value
			}
		}
		if last != "" && serverEncodingModel(last, false) != enc {
			t.Fatalf("client asked for %q, the server resolves it to %q, custos pinned %q", last, serverEncodingModel(last, false), enc)
		}
	})
}
