package pgfilter

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// v2 builds a v2 header by hand: signature, version/command, family,
// length, then body (addresses, ports, TLVs).
func v2(verCmd, fam byte, body ...[]byte) []byte {
	b := append([]byte{}, proxyV2Sig...)
	b = append(b, verCmd, fam, 0, 0)
	for _, p := range body {
		b = append(b, p...)
	}
	binary.BigEndian.PutUint16(b[14:16], uint16(len(b)-16))
	return b
}

// tcp4 is a TCP4 address block.
func tcp4(src, dst netip.AddrPort) []byte {
	b := append(src.Addr().AsSlice(), dst.Addr().AsSlice()...)
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, src.Port()), dst.Port())
}

func tcp6(src, dst netip.AddrPort) []byte {
	s, d := src.Addr().As16(), dst.Addr().As16()
	b := append(s[:], d[:]...)
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, src.Port()), dst.Port())
}

func tlv(typ byte, v []byte) []byte {
	return append(binary.BigEndian.AppendUint16([]byte{typ}, uint16(len(v))), v...)
}

// withCRC appends a CRC32C TLV computed over the whole header.
func withCRC(h []byte) []byte {
	h = append(h, tlv(proxyV2TLVCRC32C, make([]byte, 4))...)
	binary.BigEndian.PutUint16(h[14:16], uint16(len(h)-16))
	binary.BigEndian.PutUint32(h[len(h)-4:], crc32.Checksum(h, crc32.MakeTable(crc32.Castagnoli)))
	return h
}

var (
	client4 = netip.MustParseAddrPort("203.0.113.7:41000")
	envoy4  = netip.MustParseAddrPort("10.0.0.5:5432")
	client6 = netip.MustParseAddrPort("[2001:db8::7]:41000")
	envoy6  = netip.MustParseAddrPort("[2001:db8::5]:5432")
)

func TestReadProxyHeader(t *testing.T) {
	t.Parallel()
	crcBad := withCRC(v2(0x21, proxyV2TCP4, tcp4(client4, envoy4)))
	crcBad[len(crcBad)-1] ^= 1
	long := v2(0x21, proxyV2TCP4, tcp4(client4, envoy4), tlv(0xE0, make([]byte, proxyV2MaxPayload)))
	tests := []struct {
		name   string
		in     []byte
		want   proxyHeader
		reason string // "" when accepted
	}{
		// What Envoy's upstream proxy_protocol transport sends.
		{"v2 tcp4", v2(0x21, proxyV2TCP4, tcp4(client4, envoy4)), proxyHeader{Version: 2, Source: client4, Destination: envoy4}, ""},
		{"v2 tcp6", v2(0x21, proxyV2TCP6, tcp6(client6, envoy6)), proxyHeader{Version: 2, Source: client6, Destination: envoy6}, ""},
		{"v2 local (health check)", v2(0x20, 0x00), proxyHeader{Version: 2, Local: true}, ""},
		{"v2 local with addresses ignored", v2(0x20, proxyV2TCP4, tcp4(client4, envoy4)), proxyHeader{Version: 2, Local: true}, ""},
		{"v2 4in6 unmapped", v2(0x21, proxyV2TCP6, tcp6(netip.MustParseAddrPort("[::ffff:203.0.113.7]:41000"), envoy6)), proxyHeader{Version: 2, Source: client4, Destination: envoy6}, ""},
		{"v2 with TLVs", v2(0x21, proxyV2TCP4, tcp4(client4, envoy4), tlv(0x04, nil), tlv(0x01, []byte("postgresql"))), proxyHeader{Version: 2, Source: client4, Destination: envoy4}, ""},
		{"v2 good crc", withCRC(v2(0x21, proxyV2TCP4, tcp4(client4, envoy4))), proxyHeader{Version: 2, Source: client4, Destination: envoy4}, ""},
		{"v1 tcp4", []byte("PROXY TCP4 203.0.113.7 10.0.0.5 41000 5432\r\n"), proxyHeader{Version: 1, Source: client4, Destination: envoy4}, ""},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::7 2001:db8::5 41000 5432\r\n"), proxyHeader{Version: 1, Source: client6, Destination: envoy6}, ""},
		{"v1 unknown", []byte("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), proxyHeader{Version: 1, Local: true}, ""},
		{"v1 unknown bare", []byte("PROXY UNKNOWN\r\n"), proxyHeader{Version: 1, Local: true}, ""},
		{"v1 longest", []byte("PROXY TCP6 feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
			proxyHeader{Version: 1, Source: netip.MustParseAddrPort("[feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"), Destination: netip.MustParseAddrPort("[feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")}, ""},

		// No header: what a Postgres client sends first.
		{"ssl request", []byte{0, 0, 0, 8, 4, 210, 22, 47}, proxyHeader{}, proxyMissing},
		{"direct tls", []byte{0x16, 3, 1, 0, 100}, proxyHeader{}, proxyMissing},
		{"empty", nil, proxyHeader{}, proxyTruncated},
		{"v2 sig differs", []byte("\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c"), proxyHeader{}, proxyMissing},
		{"v1 sig differs", []byte("PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), proxyHeader{}, proxyMissing},

		// Truncated.
		{"v2 sig only", proxyV2Sig, proxyHeader{}, proxyTruncated},
		{"v2 half address", v2(0x21, proxyV2TCP4, tcp4(client4, envoy4))[:20], proxyHeader{}, proxyTruncated},
		{"v1 no crlf", []byte("PROXY TCP4 203.0.113.7 10.0.0.5 41000 5432"), proxyHeader{}, proxyTruncated},

		// Malformed v2.
		{"v2 version 1", v2(0x11, proxyV2TCP4, tcp4(client4, envoy4)), proxyHeader{}, proxyMalformed},
		{"v2 command 2", v2(0x22, proxyV2TCP4, tcp4(client4, envoy4)), proxyHeader{}, proxyMalformed},
		{"v2 family unknown", v2(0x21, 0x41, tcp4(client4, envoy4)), proxyHeader{}, proxyMalformed},
		{"v2 short address", v2(0x21, proxyV2TCP6, tcp4(client4, envoy4)), proxyHeader{}, proxyMalformed},
		{"v2 tlv overrun", v2(0x21, proxyV2TCP4, tcp4(client4, envoy4), []byte{0x04, 0, 9, 1}), proxyHeader{}, proxyMalformed},
		{"v2 tlv stub", v2(0x21, proxyV2TCP4, tcp4(client4, envoy4), []byte{0x04, 0}), proxyHeader{}, proxyMalformed},
		{"v2 bad crc", crcBad, proxyHeader{}, proxyMalformed},
		{"v2 too long", long, proxyHeader{}, proxyMalformed},
		{"v2 source unspecified", v2(0x21, proxyV2TCP4, tcp4(netip.MustParseAddrPort("0.0.0.0:1"), envoy4)), proxyHeader{}, proxyMalformed},
		{"v2 source port 0", v2(0x21, proxyV2TCP4, tcp4(netip.MustParseAddrPort("203.0.113.7:0"), envoy4)), proxyHeader{}, proxyMalformed},
		{"v2 broadcast source", v2(0x21, proxyV2TCP4, tcp4(netip.MustParseAddrPort("255.255.255.255:1"), envoy4)), proxyHeader{}, proxyMalformed},
		{"v2 multicast source", v2(0x21, proxyV2TCP6, tcp6(netip.MustParseAddrPort("[ff02::1]:1"), envoy6)), proxyHeader{}, proxyMalformed},

		// Unsupported v2.
		{"v2 udp4", v2(0x21, 0x12, tcp4(client4, envoy4)), proxyHeader{}, proxyUnsupported},
		{"v2 unix", v2(0x21, 0x31, make([]byte, 216)), proxyHeader{}, proxyUnsupported},
		{"v2 proxy unspec", v2(0x21, 0x00), proxyHeader{}, proxyUnsupported},

		// Malformed v1.
		{"v1 lf only", []byte("PROXY TCP4 203.0.113.7 10.0.0.5 41000 5432\n"), proxyHeader{}, proxyMalformed},
		{"v1 double space", []byte("PROXY TCP4  203.0.113.7 10.0.0.5 41000 5432\r\n"), proxyHeader{}, proxyMalformed},
		{"v1 extra field", []byte("PROXY TCP4 203.0.113.7 10.0.0.5 41000 5432 x\r\n"), proxyHeader{}, proxyMalformed},
		{"v1 v6 in tcp4", []byte("PROXY TCP4 2001:db8::7 10.0.0.5 41000 5432\r\n"), proxyHeader{}, proxyMalformed},
		{"v1 v4 in tcp6", []byte("PROXY TCP6 203.0.113.7 2001:db8::5 41000 5432\r\n"), proxyHeader{}, proxyMalformed},
		{"v1 zone", []byte("PROXY TCP6 fe80::1%eth0 2001:db8::5 41000 5432\r\n"), proxyHeader{}, proxyMalformed},
		{"v1 leading zero ip", []byte("PROXY TCP4 203.0.113.07 10.0.0.5 41000 5432\r\n"), proxyHeader{}, proxyMalformed},
		{"v1 leading zero port", []byte("PROXY TCP4 203.0.113.7 10.0.0.5 041000 5432\r\n"), proxyHeader{}, proxyMalformed},
		{"v1 port too big", []byte("PROXY TCP4 203.0.113.7 10.0.0.5 65536 5432\r\n"), proxyHeader{}, proxyMalformed},
		{"v1 signed port", []byte("PROXY TCP4 203.0.113.7 10.0.0.5 +4100 5432\r\n"), proxyHeader{}, proxyMalformed},
		{"v1 port 0", []byte("PROXY TCP4 203.0.113.7 10.0.0.5 0 5432\r\n"), proxyHeader{}, proxyMalformed},
		{"v1 nul", []byte("PROXY TCP4 203.0.113.7\x00 10.0.0.5 41000 5432\r\n"), proxyHeader{}, proxyMalformed},
		{"v1 too long", []byte("PROXY UNKNOWN " + strings.Repeat("x", 100) + "\r\n"), proxyHeader{}, proxyMalformed},
		{"v1 udp", []byte("PROXY UDP4 203.0.113.7 10.0.0.5 41000 5432\r\n"), proxyHeader{}, proxyUnsupported},
	}
	const after = "\x00\x00\x00\x08\x04\xd2\x16\x2f" // the client's SSLRequest
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := bufio.NewReader(bytes.NewReader(append(bytes.Clone(tt.in), after...)))
			if tt.reason == proxyTruncated {
				r = bufio.NewReader(bytes.NewReader(tt.in))
			}
			h, err := readProxyHeader(r)
			if tt.reason != "" {
				var pe *proxyError
				if !errors.As(err, &pe) || pe.reason != tt.reason {
					t.Fatalf("err = %v, want reason %s", err, tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h != tt.want {
				t.Fatalf("header = %+v, want %+v", h, tt.want)
			}
			// Exactly the header is consumed: the client's bytes follow.
			rest, _ := io.ReadAll(r)
			if string(rest) != after {
				t.Fatalf("after the header: %q, want %q", rest, after)
			}
		})
	}
}

// TestReadProxyHeaderFailsFast: a connection that does not start with a
// header is refused at its first differing byte, not held until more
// bytes (that may never come) arrive.
func TestReadProxyHeaderFailsFast(t *testing.T) {
	t.Parallel()
	for _, prefix := range []string{"\x00\x00\x00\x08", "\r\n\r\nX", "PROX!"} {
		pr, pw := io.Pipe()
		go func() { _, _ = pw.Write([]byte(prefix)) }() // and never more, never closed
		done := make(chan error, 1)
		go func() {
			_, err := readProxyHeader(bufio.NewReaderSize(pr, 16))
			done <- err
		}()
		select {
		case err := <-done:
			var pe *proxyError
			if !errors.As(err, &pe) || pe.reason != proxyMissing {
				t.Errorf("%q: err = %v, want %s", prefix, err, proxyMissing)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%q: still reading", prefix)
		}
		_ = pw.Close()
	}
}

func TestProxyPolicyTrusts(t *testing.T) {
	t.Parallel()
	p := &proxyPolicy{trusted: []netip.Prefix{netip.MustParsePrefix("172.30.89.0/24"), netip.MustParsePrefix("::1/128")}}
	for addr, want := range map[string]bool{
		"172.30.89.20:5000": true, "[::ffff:172.30.89.20]:5000": true, "[::1]:1": true,
		"172.30.90.1:5000": false, "127.0.0.1:5000": false,
	} {
		ap := netip.MustParseAddrPort(addr)
		if got := p.trusts(tcpAddr(ap)); got != want {
			t.Errorf("trusts(%s) = %v, want %v", addr, got, want)
		}
	}
}

func tcpAddr(ap netip.AddrPort) *net.TCPAddr { return net.TCPAddrFromAddrPort(ap) }

// FuzzProxyHeader feeds arbitrary bytes to the PROXY header reader: it
// must never panic, never read past its bounds, and what it accepts must
// be a header a TCP proxy could send.
func FuzzProxyHeader(f *testing.F) {
	f.Add(v2(0x21, proxyV2TCP4, tcp4(client4, envoy4)))
	f.Add(v2(0x21, proxyV2TCP6, tcp6(client6, envoy6)))
	f.Add(v2(0x20, 0x00))
	f.Add(withCRC(v2(0x21, proxyV2TCP4, tcp4(client4, envoy4), tlv(0x01, []byte("postgresql")))))
	f.Add([]byte("PROXY TCP4 203.0.113.7 10.0.0.5 41000 5432\r\n"))
	f.Add([]byte("PROXY TCP6 2001:db8::7 2001:db8::5 41000 5432\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 47})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		h, err := readProxyHeader(r)
		rest, _ := io.Copy(io.Discard, r)
		consumed := len(data) - int(rest)
		if consumed > proxyV2FixedLen+proxyV2MaxPayload {
			t.Fatalf("read %d bytes", consumed)
		}
		if err != nil {
			var pe *proxyError
			if !errors.As(err, &pe) || pe.reason == "" {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if h.Version != 1 && h.Version != 2 {
			t.Fatalf("version %d", h.Version)
		}
		if h.Version == 1 && consumed > proxyV1MaxLen {
			t.Fatalf("v1 header of %d bytes", consumed)
		}
		if h.Local {
			if h.Source.IsValid() || h.Destination.IsValid() {
				t.Fatalf("local header with addresses %+v", h)
			}
			return
		}
		if !h.Source.IsValid() || h.Source.Port() == 0 || h.Source.Addr().IsUnspecified() || h.Source.Addr().Zone() != "" || h.Source.Addr().Is4In6() {
			t.Fatalf("accepted source %v", h.Source)
		}
		// The address parses back as what custos records.
		if ap, err := netip.ParseAddrPort(h.Source.String()); err != nil || ap != h.Source {
			t.Fatalf("source %v does not round-trip: %v %v", h.Source, ap, err)
		}
	})
}
