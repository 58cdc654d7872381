//go:build linux && cgo

package container

import (
	"errors"
	"fmt"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/sandbox"
)

// Spare groups. Creating a process's cgroup (a directory in every
// hierarchy, then its limits) takes milliseconds, on the path of every
// start. A sandbox keeps one empty group made ahead for each set of limits
// it was last asked for (an app's functions ask for the same few): a
// start takes it and only moves its process in, and the sandbox's filler
// makes the next one off that path.

// spares are a sandbox's groups made ahead, one per Limits, and the
// filler's queue.
type spares struct {
	groups map[sandbox.Limits]cgroups.Manager // guarded by Sandbox.mu
	want   chan sandbox.Limits                // to the filler
	stop   chan struct{}                      // closed by teardown
	done   chan struct{}                      // closed when the filler ended
}

func newSpares() *spares {
	return &spares{groups: map[sandbox.Limits]cgroups.Manager{}, want: make(chan sandbox.Limits, 16),
		stop: make(chan struct{}), done: make(chan struct{})}
}

// groupFor returns a group with limits l holding pid (-1: none yet): a
// spare one if there is, else a new one. Either way the filler is asked
// for the next.
func (s *Sandbox) groupFor(pid int, l sandbox.Limits) (cgroups.Manager, error) {
	s.mu.Lock()
	cg := s.spare.groups[l]
	delete(s.spare.groups, l)
	s.mu.Unlock()
	select {
	case s.spare.want <- l:
	default: // the filler is busy; a later start asks again
	}
	if cg == nil {
		return s.newGroup(s.nextGroupName(), pid, l)
	}
	if pid > 0 {
		if err := moveToGroup(cg, pid); err != nil {
			_ = cg.Destroy()
			return nil, err
		}
	}
	return cg, nil
}

// fill makes the spare groups asked for until teardown stops it.
func (s *Sandbox) fill() {
	defer close(s.spare.done)
	for {
		var l sandbox.Limits
		select {
		case <-s.spare.stop:
			return
		case l = <-s.spare.want:
		}
		s.mu.Lock()
		have := s.spare.groups[l] != nil
		s.mu.Unlock()
		if have {
			continue
		}
		cg, err := s.newGroup(s.nextGroupName(), -1, l)
		if err != nil {
			s.r.log.Debug("make a spare cgroup", "sandbox", s.id, "err", err)
			continue
		}
		s.mu.Lock()
		if s.closed || s.spare.groups[l] != nil {
			s.mu.Unlock()
			_ = cg.Destroy()
			continue
		}
		s.spare.groups[l] = cg
		s.mu.Unlock()
	}
}

// closeSpares stops the filler and removes the spare groups (all empty),
// before the sandbox's own group is removed.
func (s *Sandbox) closeSpares() error {
	close(s.spare.stop)
	<-s.spare.done
	s.mu.Lock()
	groups := s.spare.groups
	s.spare.groups = map[sandbox.Limits]cgroups.Manager{}
	s.mu.Unlock()
	var errs []error
	for _, cg := range groups {
		if err := cg.Destroy(); err != nil {
			errs = append(errs, fmt.Errorf("remove a spare cgroup: %w", err))
		}
	}
	return errors.Join(errs...)
}

// isGone tells whether a move failed because the process is gone.
func isGone(err error) bool { return errors.Is(err, unix.ESRCH) }
