package pgfilter

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2) as a
// proxy in front of custos sends it: one header before the client's first
// byte, saying who the client is. custos reads it only on a listener that
// requires it, only from a trusted proxy address, and strictly: a header
// that is not exactly well formed refuses the connection.

// Sizes and limits of the two header versions.
const (
	// proxyV1MaxLen is the longest v1 line, CRLF included (the spec's 107).
	proxyV1MaxLen = 107
	// proxyV2FixedLen is the v2 signature, version/command, family and
	// length.
	proxyV2FixedLen = 16
	// proxyV2MaxPayload bounds the addresses and TLVs custos reads: the
	// largest address block (UNIX, 216 bytes) with room for a few TLVs.
	// Envoy sends 12 (TCP4) or 36 (TCP6) bytes and no TLVs by default.
	proxyV2MaxPayload = 2048
)

// proxyV2Sig is the v2 signature; proxyV1Sig starts a v1 line.
var (
	proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")
	proxyV1Sig = []byte("PROXY ")
)

// v2 commands, families and TLV types custos knows.
const (
	proxyV2Version   = 0x2
	proxyV2CmdLocal  = 0x0
	proxyV2CmdProxy  = 0x1
	proxyV2TCP4      = 0x11
	proxyV2TCP6      = 0x21
	proxyV2TLVCRC32C = 0x03
	proxyV2AddrTCP4  = 12
	proxyV2AddrTCP6  = 36
)

// proxyV2Families are the family/transport bytes the spec defines; a LOCAL
// header may carry any of them (its address block is ignored).
var proxyV2Families = map[byte]bool{0x00: true, 0x11: true, 0x12: true, 0x21: true, 0x22: true, 0x31: true, 0x32: true}

// proxyHeader is what a PROXY protocol header says about a connection.
type proxyHeader struct {
	// Version is 1 (text) or 2 (binary).
	Version int
	// Local means the proxy speaks for itself (a v2 LOCAL command, as in
	// its health checks, or v1 UNKNOWN): the connection's own addresses
	// stand and Source and Destination are not set.
	Local bool
	// Source is the client's address; Destination is the address the
	// client connected to (the proxy's listener).
	Source, Destination netip.AddrPort
}

// Reasons a connection's PROXY header is refused (the metrics label and
// the log's reason).
const (
	proxyMissing     = "proxy_missing"
	proxyMalformed   = "proxy_malformed"
	proxyTruncated   = "proxy_truncated"
	proxyUnsupported = "proxy_unsupported"
	proxyTimeout     = "proxy_timeout"
	proxyUntrusted   = "proxy_untrusted"
)

// proxyError is a refused PROXY header.
type proxyError struct {
	reason string
	msg    string
	err    error
}

func (e *proxyError) Error() string {
	if e.err != nil {
		return "PROXY protocol: " + e.msg + ": " + e.err.Error()
	}
	return "PROXY protocol: " + e.msg
}

func (e *proxyError) Unwrap() error { return e.err }

func proxyErr(reason, format string, args ...any) *proxyError {
	return &proxyError{reason: reason, msg: fmt.Sprintf(format, args...)}
}

// proxyReadErr classifies a read error in the middle of a header.
func proxyReadErr(err error) *proxyError {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return &proxyError{reason: proxyTimeout, msg: "header not received in time", err: err}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return &proxyError{reason: proxyTruncated, msg: "connection closed inside the header", err: err}
	default:
		return &proxyError{reason: proxyTruncated, msg: "reading the header", err: err}
	}
}

// readProxyHeader reads one PROXY header (v1 or v2) from r and nothing
// after it. It reads byte by byte while matching a signature, so a
// connection that does not start with one is refused at its first
// differing byte, never held waiting for more; it never reads more than
// proxyV1MaxLen or proxyV2FixedLen+proxyV2MaxPayload bytes.
func readProxyHeader(r *bufio.Reader) (proxyHeader, error) {
	b, err := r.ReadByte()
	if err != nil {
		return proxyHeader{}, proxyReadErr(err)
	}
	var sig []byte
	switch b {
	case proxyV2Sig[0]:
		sig = proxyV2Sig
	case proxyV1Sig[0]:
		sig = proxyV1Sig
	default:
		return proxyHeader{}, proxyErr(proxyMissing, "the connection does not start with a PROXY header")
	}
	for i := 1; i < len(sig); i++ {
		if b, err = r.ReadByte(); err != nil {
			return proxyHeader{}, proxyReadErr(err)
		}
		if b != sig[i] {
			return proxyHeader{}, proxyErr(proxyMissing, "the connection does not start with a PROXY header")
		}
	}
	if sig[0] == proxyV1Sig[0] {
		return readProxyV1(r)
	}
	return readProxyV2(r)
}

// readProxyV1 reads the rest of a v1 line after "PROXY ".
func readProxyV1(r *bufio.Reader) (proxyHeader, error) {
	line := make([]byte, 0, proxyV1MaxLen-len(proxyV1Sig))
	for {
		if len(proxyV1Sig)+len(line) >= proxyV1MaxLen {
			return proxyHeader{}, proxyErr(proxyMalformed, "v1 line longer than %d bytes", proxyV1MaxLen)
		}
		b, err := r.ReadByte()
		if err != nil {
			return proxyHeader{}, proxyReadErr(err)
		}
		line = append(line, b)
		if b == '\n' {
			break
		}
	}
	return parseProxyV1(line)
}

// parseProxyV1 parses what follows "PROXY " on a v1 line, CRLF included.
func parseProxyV1(line []byte) (proxyHeader, error) {
	body, ok := bytes.CutSuffix(line, []byte("\r\n"))
	if !ok || bytes.ContainsAny(body, "\r\n\x00") {
		return proxyHeader{}, proxyErr(proxyMalformed, "v1 line must end with CRLF and hold no other CR, LF or NUL")
	}
	fields := strings.Split(string(body), " ")
	h := proxyHeader{Version: 1}
	switch fields[0] {
	case "UNKNOWN":
		// The proxy cannot say who the client is (or speaks for itself):
		// the rest of the line is to be ignored.
		h.Local = true
		return h, nil
	case "TCP4", "TCP6":
	default:
		return proxyHeader{}, proxyErr(proxyUnsupported, "v1 protocol %q (TCP4, TCP6 or UNKNOWN)", clip(fields[0]))
	}
	if len(fields) != 5 {
		return proxyHeader{}, proxyErr(proxyMalformed, "v1 line needs protocol, two addresses and two ports, single spaces apart")
	}
	v6 := fields[0] == "TCP6"
	src, err := parseV1Addr(fields[1], fields[3], v6)
	if err != nil {
		return proxyHeader{}, err
	}
	dst, err := parseV1Addr(fields[2], fields[4], v6)
	if err != nil {
		return proxyHeader{}, err
	}
	h.Source, h.Destination = src, dst
	return h, checkEndpoints(h)
}

func parseV1Addr(ip, port string, v6 bool) (netip.AddrPort, error) {
	a, err := netip.ParseAddr(ip)
	if err != nil || a.Zone() != "" || a.Is4() == v6 {
		fam := "IPv4"
		if v6 {
			fam = "IPv6"
		}
		return netip.AddrPort{}, proxyErr(proxyMalformed, "v1 address %q is not an %s address", clip(ip), fam)
	}
	p, err := parseV1Port(port)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(a.Unmap(), p), nil
}

// parseV1Port accepts decimal digits without a leading zero, up to 65535.
func parseV1Port(s string) (uint16, error) {
	bad := s == "" || len(s) > 5 || (len(s) > 1 && s[0] == '0')
	for i := 0; i < len(s) && !bad; i++ {
		bad = s[i] < '0' || s[i] > '9'
	}
	if !bad {
		if n, err := strconv.ParseUint(s, 10, 16); err == nil {
			return uint16(n), nil
		}
	}
	return 0, proxyErr(proxyMalformed, "v1 port %q is not a port number", clip(s))
}

// readProxyV2 reads the rest of a v2 header after its signature.
func readProxyV2(r *bufio.Reader) (proxyHeader, error) {
	var fixed [proxyV2FixedLen]byte
	copy(fixed[:], proxyV2Sig)
	if _, err := io.ReadFull(r, fixed[len(proxyV2Sig):]); err != nil {
		return proxyHeader{}, proxyReadErr(err)
	}
	n := int(binary.BigEndian.Uint16(fixed[14:16]))
	if n > proxyV2MaxPayload {
		return proxyHeader{}, proxyErr(proxyMalformed, "v2 header of %d bytes is longer than the %d accepted", n, proxyV2MaxPayload)
	}
	hdr := make([]byte, proxyV2FixedLen+n)
	copy(hdr, fixed[:])
	if _, err := io.ReadFull(r, hdr[proxyV2FixedLen:]); err != nil {
		return proxyHeader{}, proxyReadErr(err)
	}
	return parseProxyV2(hdr)
}

// parseProxyV2 parses a whole v2 header, signature included.
func parseProxyV2(hdr []byte) (proxyHeader, error) {
	if len(hdr) < proxyV2FixedLen || !bytes.Equal(hdr[:len(proxyV2Sig)], proxyV2Sig) ||
		int(binary.BigEndian.Uint16(hdr[14:16])) != len(hdr)-proxyV2FixedLen {
		return proxyHeader{}, proxyErr(proxyMalformed, "v2 header framing")
	}
	verCmd, fam, payload := hdr[12], hdr[13], hdr[proxyV2FixedLen:]
	if verCmd>>4 != proxyV2Version {
		return proxyHeader{}, proxyErr(proxyMalformed, "v2 version %d", verCmd>>4)
	}
	if !proxyV2Families[fam] {
		return proxyHeader{}, proxyErr(proxyMalformed, "v2 address family 0x%02x", fam)
	}
	h := proxyHeader{Version: 2}
	switch verCmd & 0x0f {
	case proxyV2CmdLocal:
		// The proxy's own connection (a health check): its address block,
		// if any, is to be ignored.
		h.Local = true
		return h, nil
	case proxyV2CmdProxy:
	default:
		return proxyHeader{}, proxyErr(proxyMalformed, "v2 command %d", verCmd&0x0f)
	}
	var addrLen int
	switch fam {
	case proxyV2TCP4:
		addrLen = proxyV2AddrTCP4
	case proxyV2TCP6:
		addrLen = proxyV2AddrTCP6
	default:
		return proxyHeader{}, proxyErr(proxyUnsupported, "v2 address family 0x%02x (TCP over IPv4 or IPv6 only)", fam)
	}
	if len(payload) < addrLen {
		return proxyHeader{}, proxyErr(proxyMalformed, "v2 address block of %d bytes, want %d", len(payload), addrLen)
	}
	a, tlvs := payload[:addrLen], payload[addrLen:]
	if fam == proxyV2TCP4 {
		h.Source = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[0:4])), binary.BigEndian.Uint16(a[8:10]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[4:8])), binary.BigEndian.Uint16(a[10:12]))
	} else {
		h.Source = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[0:16])).Unmap(), binary.BigEndian.Uint16(a[32:34]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[16:32])).Unmap(), binary.BigEndian.Uint16(a[34:36]))
	}
	if err := checkTLVs(hdr, len(hdr)-len(tlvs)); err != nil {
		return proxyHeader{}, err
	}
	return h, checkEndpoints(h)
}

// checkTLVs walks the TLVs of hdr from offset off: each must fit exactly,
// and a CRC32C TLV, when present (once at most), must match the header.
func checkTLVs(hdr []byte, off int) error {
	seenCRC := false
	for off < len(hdr) {
		if len(hdr)-off < 3 {
			return proxyErr(proxyMalformed, "v2 TLV truncated")
		}
		typ, n := hdr[off], int(binary.BigEndian.Uint16(hdr[off+1:off+3]))
		if n > len(hdr)-off-3 {
			return proxyErr(proxyMalformed, "v2 TLV 0x%02x of %d bytes overruns the header", typ, n)
		}
		if typ == proxyV2TLVCRC32C {
			if seenCRC || n != 4 {
				return proxyErr(proxyMalformed, "v2 CRC32C TLV repeated or not 4 bytes")
			}
			seenCRC = true
			want := binary.BigEndian.Uint32(hdr[off+3 : off+7])
			zeroed := bytes.Clone(hdr)
			clear(zeroed[off+3 : off+7])
			if crc32.Checksum(zeroed, crc32.MakeTable(crc32.Castagnoli)) != want {
				return proxyErr(proxyMalformed, "v2 CRC32C mismatch")
			}
		}
		off += 3 + n
	}
	return nil
}

// checkEndpoints refuses addresses no TCP connection can have.
func checkEndpoints(h proxyHeader) error {
	for _, ap := range []struct {
		name string
		v    netip.AddrPort
	}{{"source", h.Source}, {"destination", h.Destination}} {
		a := ap.v.Addr()
		if a.IsUnspecified() || a.IsMulticast() || ap.v.Port() == 0 || (a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255})) {
			return proxyErr(proxyMalformed, "%s %s is not a TCP endpoint", ap.name, ap.v)
		}
	}
	return nil
}

// clip bounds what of a client's bytes reaches an error message (%q
// escapes the rest).
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// proxyPolicy is how one listener takes PROXY headers: from which peers.
type proxyPolicy struct {
	trusted []netip.Prefix
}

// trusts reports whether the connection's peer may send a PROXY header.
func (p *proxyPolicy) trusts(peer net.Addr) bool {
	ta, ok := peer.(*net.TCPAddr)
	if !ok {
		return false
	}
	a, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return false
	}
	a = a.Unmap()
	for _, pfx := range p.trusted {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

// proxyHeaderTimeout bounds the wait for a proxy's header (the startup
// timeout bounds it too).
const proxyHeaderTimeout = 5 * time.Second

// acceptProxy refuses a peer that is not a trusted proxy before reading
// anything from it, then reads the connection's PROXY header and makes its
// source the connection's client address (a LOCAL header keeps the
// proxy's own). Every refusal ends the connection: there is no fallback
// to a connection without a header.
func (hs *handshake) acceptProxy() error {
	s := hs.srv
	peer := hs.raw.RemoteAddr()
	if !hs.proxy.trusts(peer) {
		s.metrics.connections.WithLabelValues(proxyUntrusted).Inc()
		hs.log.Warn("connection refused", "reason", proxyUntrusted)
		return fatal("08004", "custos accepts connections on this listener only from its trusted proxies")
	}
	dl := time.Now().Add(proxyHeaderTimeout)
	if hs.deadline.Before(dl) {
		dl = hs.deadline
	}
	_ = hs.raw.SetReadDeadline(dl)
	h, err := readProxyHeader(hs.br)
	_ = hs.raw.SetReadDeadline(hs.deadline)
	if err != nil {
		reason := proxyMalformed
		var pe *proxyError
		if errors.As(err, &pe) {
			reason = pe.reason
		}
		s.metrics.connections.WithLabelValues(reason).Inc()
		hs.log.Warn("connection refused", "reason", reason, "error", err)
		return fatalHint("08P01", "invalid or missing PROXY protocol header",
			"This listener is reached only through custos' proxy (Envoy): connect to the proxy.")
	}
	if h.Local {
		hs.log = hs.log.With("proxy_command", "local")
		hs.log.Debug("PROXY header accepted", "version", h.Version)
		return nil
	}
	hs.clientAddr = h.Source.String()
	hs.log = s.log.With("client_address", hs.clientAddr, "proxy_address", peer.String())
	hs.log.Debug("PROXY header accepted", "version", h.Version)
	return nil
}
