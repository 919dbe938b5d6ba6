package pgfiltertest

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// proxyV2Sig is the PROXY protocol v2 signature.
const proxyV2Sig = "\r\n\r\n\x00\r\nQUIT\n"

// ProxyV2Header is the header Envoy's upstream PROXY protocol transport
// socket (envoy.transport_sockets.upstream_proxy_protocol, version V2, no
// TLVs configured) writes before a downstream connection's first byte:
// the v2 signature, version 2 and the PROXY command, TCP over the
// source's address family, then the source and destination addresses and
// ports, nothing more.
func ProxyV2Header(src, dst netip.AddrPort) []byte {
	b := []byte(proxyV2Sig)
	if src.Addr().Is4() {
		s, d := src.Addr().As4(), dst.Addr().Unmap().As4()
		b = append(b, 0x21, 0x11, 0, 12)
		b = append(append(b, s[:]...), d[:]...)
	} else {
		s, d := src.Addr().As16(), dst.Addr().As16()
		b = append(b, 0x21, 0x21, 0, 36)
		b = append(append(b, s[:]...), d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// ProxyV2LocalHeader is what the same transport socket writes on a
// connection with no downstream behind it (Envoy's health checks): the
// LOCAL command, no addresses.
func ProxyV2LocalHeader() []byte { return append([]byte(proxyV2Sig), 0x20, 0x00, 0, 0) }

// ProxyV1Header is the text header of version V1.
func ProxyV1Header(src, dst netip.AddrPort) []byte {
	fam, d := "TCP4", dst.Addr().Unmap()
	if !src.Addr().Is4() {
		fam, d = "TCP6", netip.AddrFrom16(d.As16())
	}
	return fmt.Appendf(nil, "PROXY %s %s %s %d %d\r\n", fam, src.Addr(), d, src.Port(), dst.Port())
}

// ForwarderOptions shape a Forwarder.
type ForwarderOptions struct {
	// Target is the address relayed to (the proxy's listener).
	Target string
	// LocalIP, when set, is the address the forwarder connects from (any
	// of 127.0.0.0/8 works on loopback), to be a trusted or an untrusted
	// proxy.
	LocalIP string
	// Source, when valid, is the client address the header carries
	// instead of the client's own: a client on another host.
	Source netip.AddrPort
	// Header, when set, makes the bytes sent before the client's from the
	// client's address and the forwarder's (a malformed, truncated or
	// missing header, or another version); by default it is
	// ProxyV2Header.
	Header func(src, dst netip.AddrPort) []byte
}

// Forwarder is a TCP relay standing in for Envoy's tcp_proxy with an
// upstream PROXY protocol transport socket: for each client it connects to
// the target, writes a PROXY header about the client, then relays bytes
// both ways unchanged (TLS included).
type Forwarder struct {
	// Addr is where clients connect; Host and Port split it.
	Addr, Host, Port string
}

// StartForwarder runs a forwarder until t ends.
func StartForwarder(t testing.TB, opts ForwarderOptions) *Forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	dialer := net.Dialer{Timeout: 5 * time.Second}
	if opts.LocalIP != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(opts.LocalIP)}
	}
	header := opts.Header
	if header == nil {
		header = ProxyV2Header
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				forward(c, &dialer, opts, header)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	f := &Forwarder{Addr: ln.Addr().String()}
	f.Host, f.Port, _ = net.SplitHostPort(f.Addr)
	return f
}

func forward(c net.Conn, dialer *net.Dialer, opts ForwarderOptions, header func(src, dst netip.AddrPort) []byte) {
	defer c.Close()
	up, err := dialer.Dial("tcp", opts.Target)
	if err != nil {
		return
	}
	defer up.Close()
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	if opts.Source.IsValid() {
		src = opts.Source
	}
	dst := c.LocalAddr().(*net.TCPAddr).AddrPort()
	if h := header(src, dst); len(h) > 0 {
		if _, err := up.Write(h); err != nil {
			return
		}
	}
	done := make(chan struct{}, 2)
	relay := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go relay(up, c)
	go relay(c, up)
	<-done
	<-done
}

// ConnStringVia is ConnString to addr (a forwarder) instead of the proxy.
func (e *Env) ConnStringVia(addr, user, password string, extra ...string) string {
	host, port, _ := net.SplitHostPort(addr)
	cp := *e
	cp.Host, cp.Port = host, port
	return cp.ConnString(user, password, extra...)
}
