// Package faultproxy is a TCP proxy on loopback that puts network faults
// between a client and a server under test: delay, a partition that
// swallows traffic (blackhole), responses lost after their request reached
// the server, and connection resets. Only tests import it.
//
// The proxy knows nothing of HTTP: it forwards bytes. A fault applies to
// the bytes that flow after it is set, on new and on open connections
// alike, so a partition also cuts a client's kept-alive connection.
package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is the fault the proxy applies to the traffic that follows.
type Mode int32

// The modes.
const (
	// Pass forwards everything both ways.
	Pass Mode = iota
	// Delay forwards everything, each chunk after the delay set with
	// SetDelay.
	Delay
	// Blackhole is a partition: the proxy accepts connections and reads
	// what both sides send, but forwards nothing. A connection that has
	// lost bytes this way stays blackholed until its client closes it,
	// since its stream can never be whole again; new connections pass
	// once the mode is set back to Pass.
	Blackhole
	// DropResponses forwards what the client sends, and cuts the client's
	// connection as soon as the server starts to answer: the request
	// reached the server and took effect, but the client sees a
	// connection error instead of the answer. The proxy keeps what the
	// server sent (see WaitDropped).
	DropResponses
	// Reset resets connections: a new one at once, an open one when the
	// next bytes flow on it either way.
	Reset
)

func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Delay:
		return "delay"
	case Blackhole:
		return "blackhole"
	case DropResponses:
		return "drop-responses"
	case Reset:
		return "reset"
	}
	return fmt.Sprintf("Mode(%d)", int32(m))
}

// CaptureIdle bounds how long the proxy keeps reading a dropped response
// after the server's last bytes when the server keeps the connection
// open. A server that closes the connection after its answer (a request
// with "Connection: close") ends the capture at once.
const CaptureIdle = 5 * time.Second

// maxCapture bounds a kept dropped response.
const maxCapture = 4 << 20

// Proxy forwards connections from its loopback address to one upstream
// address. It is safe for concurrent use.
type Proxy struct {
	ln       net.Listener
	upstream string

	mode     atomic.Int32
	delay    atomic.Int64
	dropNext atomic.Int64 // responses to drop while the mode is Pass
	cuts     atomic.Int64 // responses dropped so far

	mu      sync.Mutex
	links   map[*link]struct{}
	closed  bool
	dropped [][]byte
	changed chan struct{} // closed and replaced when dropped grows
	wg      sync.WaitGroup
}

// Start listens on 127.0.0.1 on a free port and forwards every connection
// it accepts to upstream (host:port). Close stops it.
func Start(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") //nolint:noctx // the listener lives until Close, not a context
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, upstream: upstream, links: map[*link]struct{}{}, changed: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's address (host:port), where clients connect.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is "http://" + Addr.
func (p *Proxy) URL() string { return "http://" + p.Addr() }

// SetMode sets the fault for the traffic that follows.
func (p *Proxy) SetMode(m Mode) { p.mode.Store(int32(m)) }

// Mode returns the current fault.
func (p *Proxy) Mode() Mode { return Mode(p.mode.Load()) }

// SetDelay sets how long Delay mode holds each chunk.
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// DropNextResponses makes the next n responses, on any connection, be
// dropped as in DropResponses while the mode is Pass; after them traffic
// passes again. It adds to any count not yet used up.
func (p *Proxy) DropNextResponses(n int) { p.dropNext.Add(int64(n)) }

// Dropped returns how many responses the proxy has dropped so far,
// counting those whose capture still runs.
func (p *Proxy) Dropped() int { return int(p.cuts.Load()) }

// WaitDropped waits until at least n responses were dropped and their
// capture ended, and returns the bytes the server sent for each, in the
// order the captures ended (at most 4 MiB each). It fails when ctx ends
// first.
func (p *Proxy) WaitDropped(ctx context.Context, n int) ([][]byte, error) {
	for {
		p.mu.Lock()
		if len(p.dropped) >= n {
			out := make([][]byte, len(p.dropped))
			copy(out, p.dropped)
			p.mu.Unlock()
			return out, nil
		}
		ch, have := p.changed, len(p.dropped)
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("%d responses dropped, waiting for %d: %w", have, n, ctx.Err())
		}
	}
}

// Close stops accepting, closes every open connection and waits for the
// proxy's goroutines to end. It is safe to call more than once.
func (p *Proxy) Close() error {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	var err error
	if !already {
		err = p.ln.Close()
	}
	for _, l := range links {
		l.closeAll()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		l := &link{p: p, client: c, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.links[l] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go l.run()
	}
}

func (p *Proxy) recordDrop(b []byte) {
	p.mu.Lock()
	p.dropped = append(p.dropped, b)
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// takeDrop reports whether the response that starts now is to be
// dropped, using up one DropNextResponses count in Pass mode.
func (p *Proxy) takeDrop() bool {
	switch p.Mode() {
	case DropResponses:
		return true
	case Pass:
		for {
			n := p.dropNext.Load()
			if n <= 0 {
				return false
			}
			if p.dropNext.CompareAndSwap(n, n-1) {
				return true
			}
		}
	default:
		return false // the other faults do not drop responses
	}
}

// link is one client connection and its upstream connection.
type link struct {
	p        *Proxy
	client   net.Conn
	upstream net.Conn // nil while blackholed from the start

	mu         sync.Mutex
	blackholed bool // bytes were swallowed: never forward again
	dropping   bool // the client side is cut; the response is being captured
	closed     bool
	done       chan struct{} // closed by closeAll
}

func (l *link) run() {
	defer l.p.wg.Done()
	defer func() {
		l.closeAll()
		l.p.mu.Lock()
		delete(l.p.links, l)
		l.p.mu.Unlock()
	}()
	switch l.p.Mode() {
	case Reset:
		reset(l.client)
		return
	case Blackhole:
		l.blackholed = true
		io.Copy(io.Discard, l.client) //nolint:errcheck // swallowed until the client gives up
		return
	default:
		// The other faults act on the bytes, once they flow.
	}
	up, err := net.DialTimeout("tcp", l.p.upstream, 10*time.Second) //nolint:noctx // bounded by its timeout; Close ends the link
	if err != nil {
		return
	}
	l.mu.Lock()
	l.upstream = up
	closed := l.closed
	l.mu.Unlock()
	if closed {
		up.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.pump(l.client, up, false) }()
	go func() { defer wg.Done(); l.pump(up, l.client, true) }()
	wg.Wait()
}

// pump copies src to dst chunk by chunk, applying the proxy's mode to
// each chunk. response is true for the server-to-client direction.
func (l *link) pump(src, dst net.Conn, response bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !l.forward(buf[:n], dst, response) {
				return
			}
		}
		if err != nil {
			l.mu.Lock()
			dropping, black := l.dropping, l.blackholed
			l.mu.Unlock()
			switch {
			case dropping && !response:
				return // the client side was cut on purpose; the capture goes on
			case black && response:
				// The server's close is swallowed too; the link ends when
				// its client gives up.
				return
			case black:
				l.closeAll()
				return
			}
			if errors.Is(err, io.EOF) {
				// Pass the half-close on, so the other side sees the end
				// of the stream after everything before it.
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite() //nolint:errcheck // the other direction ends the link
					return
				}
			}
			l.closeAll()
			return
		}
	}
}

// forward applies the mode to one chunk and reports whether the pump goes
// on.
func (l *link) forward(chunk []byte, dst net.Conn, response bool) bool {
	l.mu.Lock()
	if l.blackholed {
		l.mu.Unlock()
		return true
	}
	l.mu.Unlock()
	if response && l.p.takeDrop() {
		l.drop(chunk)
		return false
	}
	switch l.p.Mode() {
	case Blackhole:
		l.mu.Lock()
		l.blackholed = true
		l.mu.Unlock()
		return true
	case Reset:
		reset(l.client)
		l.mu.Lock()
		up := l.upstream
		l.mu.Unlock()
		if up != nil {
			reset(up)
		}
		return false
	case Delay:
		t := time.NewTimer(time.Duration(l.p.delay.Load()))
		select {
		case <-t.C:
		case <-l.done:
			t.Stop()
			return false
		}
	default:
		// Pass and DropResponses forward; a dropped response was taken
		// care of above.
	}
	if _, err := dst.Write(chunk); err != nil {
		l.closeAll()
		return false
	}
	return true
}

// drop cuts the client's connection before any of the response reaches
// it, then reads the rest of the response from the server to keep it.
func (l *link) drop(first []byte) {
	l.mu.Lock()
	l.dropping = true
	up := l.upstream
	l.mu.Unlock()
	l.client.Close()
	l.p.cuts.Add(1)
	var got bytes.Buffer
	got.Write(first)
	buf := make([]byte, 32<<10)
	for got.Len() < maxCapture {
		up.SetReadDeadline(time.Now().Add(CaptureIdle)) //nolint:errcheck // a failed deadline only ends the capture later
		n, err := up.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
	}
	l.p.recordDrop(got.Bytes())
	l.closeAll()
}

// closeAll closes both connections once.
func (l *link) closeAll() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	up := l.upstream
	close(l.done)
	l.mu.Unlock()
	l.client.Close()
	if up != nil {
		up.Close()
	}
}

// reset closes c with a TCP reset rather than an orderly close.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0) //nolint:errcheck // then it is an orderly close, still a cut
	}
	c.Close()
}
