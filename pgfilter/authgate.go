package pgfilter

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// authGate bounds what one client address can make custos do with refused
// connections (refused tokens, and principals over their session caps or
// open rate): past authGateBurst refusals within authGateWindow from an
// address, its new connections are refused before TLS and token
// verification until the window has passed. A gated connection is held
// until then before its refusal (up to authGateHeld of them at once), so
// that a client retrying in a loop retries once a window, not as fast as
// custos can refuse. Each refusal is still an authentication failure
// record (aggregated with counts per source by the audit recorder), so the
// evidence of every attempt's source stays.
type authGate struct {
	mu   sync.Mutex
	now  func() time.Time
	seen map[string]*gateEntry
	held atomic.Int32 // gated connections held until their window ends
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
	// authGateHeld bounds the gated connections held at once (each is a
	// goroutine and a socket); past it they are refused at once.
	authGateHeld = 512
)

func newAuthGate() *authGate {
	return &authGate{now: time.Now, seen: map[string]*gateEntry{}}
}

// splitAddr splits host:port; an address without a port is all host.
func splitAddr(addr string) (string, int) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, 0
	}
	p, _ := strconv.Atoi(port)
	return host, p
}

// hostOf is addr without its port.
func hostOf(addr string) string {
	h, _ := splitAddr(addr)
	return h
}

// blocked reports whether connections from addr are refused for now, and
// for how long still.
func (g *authGate) blocked(addr string) (bool, time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.seen[hostOf(addr)]
	if e == nil || e.failures < authGateBurst {
		return false, 0
	}
	left := authGateWindow - g.now().Sub(e.start)
	return left > 0, left
}

// hold waits up to d (the rest of the window) before a gated refusal, or
// not at all when authGateHeld connections are held already or ctx ends.
func (g *authGate) hold(ctx context.Context, d time.Duration) {
	if g.held.Add(1) > authGateHeld {
		g.held.Add(-1)
		return
	}
	defer g.held.Add(-1)
	sleep(ctx, d)
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
