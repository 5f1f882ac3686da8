package main

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
)

// connLimiter counts the client connections the server holds. A connection
// past max is still accepted, so that health checks keep answering, but the
// handler gives it nothing else (503) and closes it after its first answer:
// many slow or idle clients cannot take the process's file descriptors and
// memory from the rest. (An idle one lasts the server's ReadHeaderTimeout.)
type connLimiter struct {
	net.Listener
	max  int64
	open atomic.Int64
}

type overCapacityKey struct{}

func (l *connLimiter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, limiter: l, over: l.open.Add(1) > l.max}, nil
}

// connContext marks the requests of a connection past the limit.
func (l *connLimiter) connContext(ctx context.Context, c net.Conn) context.Context {
	if cc, ok := c.(*countedConn); ok && cc.over {
		return context.WithValue(ctx, overCapacityKey{}, true)
	}
	return ctx
}

func overCapacity(ctx context.Context) bool {
	over, _ := ctx.Value(overCapacityKey{}).(bool)
	return over
}

type countedConn struct {
	net.Conn
	limiter *connLimiter
	over    bool
	once    sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.limiter.open.Add(-1) })
	return c.Conn.Close()
}

// CloseWrite lets ReverseProxy pass one side's end of a websocket stream to the other.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
