package main

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// A burst of requests to an HTTPS backend with no connection yet would each
// dial one (Go's transport cannot know the answer will be HTTP/2 until a
// handshake is done): a cold burst of 1,000 opened hundreds of TLS
// connections. dialGates lets a few dials per host run at once, each holding
// its place until its TLS handshake is done; a request that has meanwhile
// been given a connection (an HTTP/2 one is shared by every waiting request)
// gives up the dial it queued. A host that answers with HTTP/1 needs a
// connection per request and is not gated from then on.

// dialsPerHost is how many dials to one HTTPS host run at once.
const dialsPerHost = 4

// errDialNotNeeded is a queued dial given up: its request has a connection.
var errDialNotNeeded = errors.New("dial not needed: the request has a connection")

type dialGates struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	hold time.Duration // the longest a dial keeps its place, should no handshake report back

	mu    sync.Mutex
	hosts map[string]*hostGate
}

type hostGate struct {
	slots chan struct{}
	http1 atomic.Bool // the host answered without HTTP/2
	http2 atomic.Bool // the host has answered with HTTP/2: a waiting request may be given a shared connection
}

// http2Settle is how long a dial that got its place waits, once the host has
// an HTTP/2 connection, for its request to be given that connection instead.
const http2Settle = 50 * time.Millisecond

func newDialGates(dial func(ctx context.Context, network, addr string) (net.Conn, error), hold time.Duration) *dialGates {
	return &dialGates{dial: dial, hold: hold, hosts: map[string]*hostGate{}}
}

func (g *dialGates) host(addr string) *hostGate {
	g.mu.Lock()
	defer g.mu.Unlock()
	h := g.hosts[addr]
	if h == nil {
		h = &hostGate{slots: make(chan struct{}, dialsPerHost)}
		g.hosts[addr] = h
	}
	return h
}

// DialContext is the transport's dialer: direct for plain HTTP, proxied
// backends and HTTP/1 hosts; through the host's gate for the rest.
func (g *dialGates) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	p, _ := ctx.Value(attemptProgressKey{}).(*attemptProgress)
	b, _ := ctx.Value(attemptBackendKey{}).(*backend)
	if p == nil || b == nil || b.endpoint.Scheme != "https" || b.proxy != nil {
		return g.dial(ctx, network, addr)
	}
	h := g.host(addr)
	if h.http1.Load() {
		return g.dial(ctx, network, addr)
	}
	conns := p.conns.Load() // connections the request had when it queued this dial
	select {
	case h.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	grant := &dialGrant{gate: h}
	for settled := time.Now().Add(http2Settle); ; time.Sleep(2 * time.Millisecond) {
		if p.conns.Load() > conns {
			grant.release("")
			return nil, errDialNotNeeded
		}
		if !h.http2.Load() || time.Now().After(settled) {
			break // no shared connection to wait for, or it is full: dial
		}
	}
	p.grant.Store(grant)
	time.AfterFunc(g.hold, func() { grant.release("") }) // should the handshake never report
	conn, err := g.dial(ctx, network, addr)
	if err != nil {
		grant.release("")
	}
	return conn, err
}

// dialGrant is one dial's place at its host's gate, given back once.
type dialGrant struct {
	gate *hostGate
	once sync.Once
}

// release gives the place back, noting the protocol the host's handshake
// chose ("" when none completed).
func (d *dialGrant) release(protocol string) {
	d.once.Do(func() {
		switch protocol {
		case "h2":
			d.gate.http2.Store(true)
		case "":
		default:
			d.gate.http1.Store(true)
		}
		<-d.gate.slots
	})
}
