package main

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
)

// sessionTracker follows connections taken over for websocket sessions
// (Realtime). http.Server.Shutdown does not wait for hijacked connections, so
// the server waits here for sessions to finish within the grace period, and
// closes the rest when it ends.
type sessionTracker struct {
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
	wg    sync.WaitGroup
}

// track wraps conn; bytes written to it are added to written.
func (s *sessionTracker) track(conn net.Conn, written *atomic.Int64) net.Conn {
	tc := &trackedConn{Conn: conn, tracker: s, written: written}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = map[*trackedConn]struct{}{}
	}
	s.conns[tc] = struct{}{}
	s.wg.Add(1)
	return tc
}

// wait waits until every session has ended, or ctx is done; it reports
// whether they all ended.
func (s *sessionTracker) wait(ctx context.Context) bool {
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// closeAll ends every open session and reports how many there were.
func (s *sessionTracker) closeAll() int {
	s.mu.Lock()
	conns := make([]*trackedConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return len(conns)
}

type trackedConn struct {
	net.Conn
	tracker *sessionTracker
	written *atomic.Int64
	once    sync.Once
}

func (c *trackedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.tracker.mu.Lock()
		delete(c.tracker.conns, c)
		c.tracker.mu.Unlock()
		c.tracker.wg.Done()
	})
	return err
}

// CloseWrite lets ReverseProxy pass one side's end of stream to the other.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
