package pgfilter

import (
	"net"
	"sync"
	"time"
)

// authGate bounds what one client address can make custos do with refused
// tokens: past authGateBurst refused authentications within authGateWindow
// from an address, its new connections are refused at once, before TLS and
// token verification, until the window has passed. Each refusal is still
// an authentication failure record (aggregated with counts per source by
// the audit recorder), so the evidence of every attempt's source stays.
type authGate struct {
	mu   sync.Mutex
	now  func() time.Time
	seen map[string]*gateEntry
}

type gateEntry struct {
	start    time.Time // the window's start
	failures int
}

const (
	authGateBurst  = 20
	authGateWindow = time.Second
	// authGateMax bounds the addresses remembered; past it the memory
	// starts again (an attacker with that many addresses is bounded by
	// the per-address cost instead).
	authGateMax = 65536
)

func newAuthGate() *authGate {
	return &authGate{now: time.Now, seen: map[string]*gateEntry{}}
}

// hostOf is addr without its port.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// blocked reports whether connections from addr are refused for now.
func (g *authGate) blocked(addr string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.seen[hostOf(addr)]
	return e != nil && g.now().Sub(e.start) < authGateWindow && e.failures >= authGateBurst
}

// failed notes a refused authentication from addr.
func (g *authGate) failed(addr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	h := hostOf(addr)
	now := g.now()
	e := g.seen[h]
	if e == nil || now.Sub(e.start) >= authGateWindow {
		if e == nil && len(g.seen) >= authGateMax {
			clear(g.seen)
		}
		e = &gateEntry{start: now}
		g.seen[h] = e
	}
	e.failures++
}
