package loadgen

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// job is one scheduled request handed to a sender.
type job struct {
	i   int
	due time.Time
}

// senderPool runs scheduled requests on goroutines started ahead of need,
// so that handing a request to a sender costs one channel send on the
// scheduler's critical path, never a goroutine start. A grower goroutine
// adds senders in the background when few are idle, up to limit: limit
// bounds the requests outstanding at once, and while all senders are busy
// the hand-off waits (the scheduler falls behind and records it).
type senderPool struct {
	jobs     chan job // unbuffered: a job is taken only by an idle sender
	run      func(job)
	limit    int64
	lowWater int64
	idle     atomic.Int64
	started  atomic.Int64
	grow     chan struct{}
	stop     chan struct{}
	growDone chan struct{}
	senders  sync.WaitGroup
}

// newSenderPool starts initial senders (at least one, at most limit) and
// the grower; close stops them.
func newSenderPool(initial, limit int, run func(job)) *senderPool {
	limit = max(limit, 1)
	initial = min(max(initial, 1), limit)
	p := &senderPool{
		jobs: make(chan job), run: run, limit: int64(limit), lowWater: int64(max(initial/4, 2)),
		grow: make(chan struct{}, 1), stop: make(chan struct{}), growDone: make(chan struct{}),
	}
	p.spawn(initial)
	go p.grower()
	return p
}

func (p *senderPool) spawn(n int) {
	p.senders.Add(n)
	p.started.Add(int64(n))
	p.idle.Add(int64(n))
	for range n {
		go p.sender()
	}
}

func (p *senderPool) sender() {
	defer p.senders.Done()
	for j := range p.jobs {
		p.idle.Add(-1)
		p.run(j)
		p.idle.Add(1)
	}
	p.idle.Add(-1)
}

// grower adds senders when asked, half again as many as there are (at
// least lowWater), up to limit.
func (p *senderPool) grower() {
	defer close(p.growDone)
	for {
		select {
		case <-p.stop:
			return
		case <-p.grow:
			total := p.started.Load()
			if n := min(p.limit-total, max(p.lowWater, total/2)); n > 0 && p.idle.Load() <= p.lowWater {
				p.spawn(int(n))
			}
		}
	}
}

// submit hands j to an idle sender, waiting for one while all are busy.
// It reports false if ctx ended first.
func (p *senderPool) submit(ctx context.Context, j job) bool {
	if p.idle.Load() <= p.lowWater && p.started.Load() < p.limit {
		select {
		case p.grow <- struct{}{}:
		default: // a request to grow is pending already
		}
	}
	select {
	case p.jobs <- j:
		return true
	case <-ctx.Done():
		return false
	}
}

// close stops the grower, lets the senders finish their requests and
// waits for all of them.
func (p *senderPool) close() {
	close(p.stop)
	<-p.growDone // no spawn races the Wait below
	close(p.jobs)
	p.senders.Wait()
}
