package node

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// logCapture reads an instance's stdout and stderr and attributes each line
// to the invocation that wrote it. With one event in flight every line is
// that event's; with several (N:1 Node instances) the runtime client
// prefixes lines Lambda-style with "time\trequestId\tLEVEL\t", and the
// request id picks the invocation.
//
// Reads happen under mu, including the final drain when an invocation ends,
// so output written before the runtime posted its response is never missed.
type logCapture struct {
	limit int

	mu       sync.Mutex
	streams  []*logStream
	inflight map[string]*capBuffer
	// orphan collects output while nothing is in flight: init output, and
	// lines that cannot be attributed.
	orphan capBuffer
	// stray keeps the tail of the lines no invocation could be given
	// while several were in flight: what an N:1 instance prints as it
	// crashes (an uncaught error, V8's fatal errors) lands here, and
	// endFailed hands it to every invocation the crash failed. It is
	// cleared when nothing is in flight any more.
	stray tailBuffer
	wg    sync.WaitGroup
}

type logStream struct {
	f       *os.File
	partial []byte
	eof     bool
}

type capBuffer struct {
	buf       bytes.Buffer
	limit     int
	truncated bool
}

func (c *capBuffer) write(p []byte) {
	room := c.limit - c.buf.Len()
	if room <= 0 {
		c.truncated = c.truncated || len(p) > 0
		return
	}
	if len(p) > room {
		p = p[:room]
		c.truncated = true
	}
	c.buf.Write(p)
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	buf     []byte
	limit   int
	dropped bool
}

func (t *tailBuffer) write(p []byte) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.limit; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.dropped = true
	}
}

func (t *tailBuffer) reset() { t.buf, t.dropped = t.buf[:0], false }

func newLogCapture(limit int) *logCapture {
	return &logCapture{
		limit: limit, inflight: map[string]*capBuffer{},
		orphan: capBuffer{limit: limit}, stray: tailBuffer{limit: limit / 2},
	}
}

// follow starts reading f (a pipe's read end) until EOF.
func (lc *logCapture) follow(f *os.File) {
	s := &logStream{f: f}
	lc.mu.Lock()
	lc.streams = append(lc.streams, s)
	lc.mu.Unlock()
	lc.wg.Add(1)
	go func() {
		defer lc.wg.Done()
		defer f.Close()
		rc, err := f.SyscallConn()
		if err != nil {
			return
		}
		buf := make([]byte, 32<<10)
		for {
			err := rc.Read(func(fd uintptr) bool {
				lc.mu.Lock()
				defer lc.mu.Unlock()
				return lc.readLocked(s, int(fd), buf)
			})
			lc.mu.Lock()
			done := s.eof || err != nil
			if done {
				lc.flushPartialLocked(s)
			}
			lc.mu.Unlock()
			if done {
				return
			}
		}
	}()
}

// readLocked reads until the pipe is empty; it returns false to make the
// poller wait for more data.
func (lc *logCapture) readLocked(s *logStream, fd int, buf []byte) bool {
	for {
		n, err := unix.Read(fd, buf)
		if n > 0 {
			lc.consumeLocked(s, buf[:n])
			continue
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			return false
		}
		s.eof = true
		return true
	}
}

// drainLocked pulls whatever is already in the pipes.
func (lc *logCapture) drainLocked() {
	buf := make([]byte, 32<<10)
	for _, s := range lc.streams {
		if s.eof {
			continue
		}
		rc, err := s.f.SyscallConn()
		if err != nil {
			continue
		}
		_ = rc.Control(func(fd uintptr) { lc.readLocked(s, int(fd), buf) })
	}
}

func (lc *logCapture) consumeLocked(s *logStream, p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.partial = append(s.partial, p...)
			// A runaway line without newline still has to be bounded.
			if len(s.partial) > lc.limit {
				lc.routeLocked(s.partial)
				s.partial = s.partial[:0]
			}
			return
		}
		line := p[:i+1]
		if len(s.partial) > 0 {
			line = append(s.partial, line...)
			s.partial = s.partial[:0]
		}
		lc.routeLocked(line)
		p = p[i+1:]
	}
}

func (lc *logCapture) flushPartialLocked(s *logStream) {
	if len(s.partial) > 0 {
		lc.routeLocked(append(s.partial, '\n'))
		s.partial = s.partial[:0]
	}
}

func (lc *logCapture) routeLocked(line []byte) {
	if id := lambdaLineRequestID(line); id != "" {
		if b, ok := lc.inflight[id]; ok {
			b.write(line)
			return
		}
	}
	if len(lc.inflight) == 1 {
		for _, b := range lc.inflight {
			b.write(line)
		}
		return
	}
	if len(lc.inflight) > 1 {
		lc.stray.write(line)
	}
	lc.orphan.write(line)
}

// lambdaLineRequestID returns the request id of a "time\tid\tLEVEL\tmsg" line.
func lambdaLineRequestID(line []byte) string {
	first := bytes.IndexByte(line, '\t')
	if first < 0 {
		return ""
	}
	rest := line[first+1:]
	second := bytes.IndexByte(rest, '\t')
	if second < 0 || second > 64 {
		return ""
	}
	return string(rest[:second])
}

// begin starts attributing output to an invocation.
func (lc *logCapture) begin(id string) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.drainLocked()
	lc.inflight[id] = &capBuffer{limit: lc.limit}
}

// end stops attributing output to an invocation and returns its output.
func (lc *logCapture) end(id string) ([]byte, bool) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.endLocked(id)
}

// endFailed is end for an invocation the instance's death failed: the
// instance's unattributed last words are appended, since with several
// invocations in flight no line of a crash names one of them. Every
// invocation the crash failed gets them.
func (lc *logCapture) endFailed(id string) ([]byte, bool) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.drainLocked()
	stray := bytes.Clone(lc.stray.buf)
	strayCut := lc.stray.dropped
	own, truncated := lc.endLocked(id)
	if len(stray) == 0 {
		return own, truncated
	}
	const header = "--- instance output not attributed to any invocation ---\n"
	room := lc.limit - len(header) - len(stray)
	if room < 0 {
		room = 0
	}
	if len(own) > room {
		own, truncated = own[:room], true
	}
	out := append(own, header...)
	out = append(out, stray...)
	if len(out) > lc.limit {
		out, truncated = out[len(out)-lc.limit:], true
	}
	return out, truncated || strayCut
}

func (lc *logCapture) endLocked(id string) ([]byte, bool) {
	lc.drainLocked()
	for _, s := range lc.streams {
		if s.eof {
			lc.flushPartialLocked(s)
		}
	}
	b := lc.inflight[id]
	if b == nil {
		return nil, false
	}
	// An unfinished last line belongs to the invocation that wrote it.
	for _, s := range lc.streams {
		if len(s.partial) > 0 && (len(lc.inflight) == 1 || lambdaLineRequestID(s.partial) == id) {
			b.write(append(s.partial, '\n'))
			s.partial = s.partial[:0]
		}
	}
	delete(lc.inflight, id)
	if len(lc.inflight) == 0 {
		lc.stray.reset()
	}
	return bytes.Clone(b.buf.Bytes()), b.truncated
}

// takeOrphan returns and clears unattributed output (init output).
func (lc *logCapture) takeOrphan() []byte {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.drainLocked()
	out := bytes.Clone(lc.orphan.buf.Bytes())
	lc.orphan = capBuffer{limit: lc.limit}
	return out
}

// waitOrClose waits until every followed pipe reached EOF, or closes them
// after d (a process the instance started may hold them open forever).
func (lc *logCapture) waitOrClose(d time.Duration) {
	done := make(chan struct{})
	go func() { lc.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(d):
	}
	// Close outside mu: Close waits for the follower's in-progress read,
	// whose callback needs mu.
	lc.mu.Lock()
	files := make([]*os.File, 0, len(lc.streams))
	for _, s := range lc.streams {
		files = append(files, s.f)
	}
	lc.mu.Unlock()
	for _, f := range files {
		_ = f.Close()
	}
	<-done
}
