//go:build linux

package probe

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/buildtrace/buildtrace/bpf"
)

// Any syscall tracepoint, even an empty program, makes the kernel take the
// slow path of every system call of every task on the host (measured: an
// untraced process's syscall-heavy loop 1.24x slower). So tp_btf/sys_exit
// is attached only while traced containers can run: while a cgroup under
// /buildtrace/ is tracked, or something holds it (a build's plan, before
// its first step). The always-on tp_btf programs count an exec or fork of
// a tracked cgroup while it is detached (sys_live = 0) as unhooked: the
// step is then incomplete, never silently short. See docs/bpf.md.

// hookGrace is how long the hook stays attached once nothing needs it, so
// that a build's steps in quick succession do not re-attach each time.
const hookGrace = 3 * time.Second

// hookTick is how often the need for the hook is checked.
const hookTick = time.Second

// syscallHook attaches and detaches tp_btf/sys_exit, and with it the
// cgroup_skb packet counters at the cgroup root (every packet on the host
// runs them while attached; they count only tracked cgroups' traffic).
type syscallHook struct {
	attachers []attacher     // sys_exit first
	live      *ebpf.Variable // sys_live
	tracked   *ebpf.Map
	log       *slog.Logger

	mu         sync.Mutex
	links      []link.Link // attached: one per attacher
	holds      map[string]hold
	dormant    map[uint64]string // empty at load (a dead runtime's): cgroup ID → directory
	lastNeeded time.Time
	since      time.Time // attached since
	attaches   uint64
	lastErr    error
	closed     bool
	stop       chan struct{}
	done       chan struct{}
}

type attacher struct {
	name string
	fn   func() (link.Link, error)
}

type hold struct {
	until time.Time
	alive func() bool // nil: until only
}

// HookState says whether the syscall hook is attached.
type HookState struct {
	Attached bool
	Since    time.Time // when it was last attached (zero: never)
	Attaches uint64    // times attached since load
	OnDemand bool      // false: attached for the probe's lifetime
	Holds    int       // holds not yet released or expired
	Err      string    // the last attach or detach error
}

// attach attaches the hook if it is not; h.mu held.
func (h *syscallHook) attach() error {
	h.lastNeeded = time.Now()
	if h.links != nil || h.closed {
		return nil
	}
	var links []link.Link
	fail := func(err error) error {
		for _, l := range links {
			l.Close()
		}
		h.lastErr = err
		return err
	}
	for _, a := range h.attachers {
		l, err := a.fn()
		if err != nil {
			return fail(fmt.Errorf("attaching %s: %w", a.name, err))
		}
		links = append(links, l)
	}
	// Only now: an exec that reads 1 runs after the links are in.
	if err := h.live.Set(uint32(1)); err != nil {
		return fail(fmt.Errorf("setting sys_live: %w", err))
	}
	h.links = links
	h.since = time.Now()
	h.attaches++
	h.log.Debug("syscall hook attached")
	return nil
}

// ensure attaches the hook (a tracked cgroup appeared).
func (h *syscallHook) ensure() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.attach(); err != nil {
		h.log.Error("attaching the syscall hook; execs in traced containers are counted as unhooked", "err", err)
	}
}

// hold keeps the hook attached until release(key), for d, or until alive
// (when not nil) says no.
func (h *syscallHook) hold(key string, d time.Duration, alive func() bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.holds[key] = hold{until: time.Now().Add(d), alive: alive}
	return h.attach()
}

func (h *syscallHook) release(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.holds, key)
}

// needed reports whether anything needs the hook now; h.mu held.
func (h *syscallHook) needed(now time.Time) (bool, error) {
	for k, hd := range h.holds {
		if now.Before(hd.until) && (hd.alive == nil || hd.alive()) {
			return true, nil
		}
		delete(h.holds, k)
	}
	var (
		id uint64
		v  bpf.BuildtraceCgStats
	)
	it := h.tracked.Iterate()
	for it.Next(&id, &v) {
		dir, ok := h.dormant[id]
		if !ok || populated(dir) {
			return true, nil
		}
	}
	if err := it.Err(); err != nil {
		return true, fmt.Errorf("reading the tracked cgroups: %w", err)
	}
	return false, nil
}

// check attaches the hook when a tracked cgroup needs it (the triggers
// missed it) and detaches it once nothing has needed it for hookGrace.
func (h *syscallHook) check() {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	need, err := h.needed(now)
	if err != nil {
		h.log.Warn("checking whether the syscall hook is needed", "err", err)
	}
	if need {
		if err := h.attach(); err != nil {
			h.log.Error("attaching the syscall hook", "err", err)
		}
		return
	}
	if h.links == nil || now.Sub(h.lastNeeded) < hookGrace {
		return
	}
	// Clear sys_live first, then look again: a cgroup made before the
	// clear is in the tracked map by now (cgroup_mkdir adds it before
	// anything runs there); an exec after it is counted as unhooked.
	if err := h.live.Set(uint32(0)); err != nil {
		h.lastErr = fmt.Errorf("clearing sys_live: %w", err)
		h.log.Error("detaching the syscall hook", "err", h.lastErr)
		return
	}
	if need, err := h.needed(now); need || err != nil {
		if err := h.live.Set(uint32(1)); err != nil {
			h.lastErr = fmt.Errorf("setting sys_live: %w", err)
		}
		h.lastNeeded = now
		return
	}
	if err := h.detach(); err != nil {
		h.lastErr = err
		h.log.Error("detaching the syscall hook", "err", err)
	}
	h.log.Debug("syscall hook detached")
}

func (h *syscallHook) run() {
	defer close(h.done)
	t := time.NewTicker(hookTick)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			h.check()
		case <-h.stop:
			return
		}
	}
}

func (h *syscallHook) state(onDemand bool) HookState {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := HookState{Attached: h.links != nil, Since: h.since, Attaches: h.attaches, OnDemand: onDemand, Holds: len(h.holds)}
	if h.lastErr != nil {
		s.Err = h.lastErr.Error()
	}
	return s
}

func (h *syscallHook) close() error {
	if h.stop != nil {
		close(h.stop)
		<-h.done
		h.stop = nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	if h.links == nil {
		return nil
	}
	h.live.Set(uint32(0))
	return h.detach()
}

// detach closes the links; h.mu held.
func (h *syscallHook) detach() error {
	var errs []error
	for i, l := range h.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detaching %s: %w", h.attachers[i].name, err))
		}
	}
	h.links = nil
	return errors.Join(errs...)
}

// populated reads a cgroup's cgroup.events; a cgroup gone or unreadable
// counts as populated only when it still exists.
func populated(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	return !bytes.Contains(b, []byte("populated 0"))
}

// HoldSyscalls keeps the syscall hook attached until ReleaseSyscalls(key),
// for d, or until alive (checked every second; nil: never) returns false,
// whichever comes first: a build's frontend registered its plan, and its
// steps' containers must find the hook attached. It returns once the hook
// is attached.
func (p *Probe) HoldSyscalls(key string, d time.Duration, alive func() bool) error {
	if !p.onDemand {
		return nil
	}
	return p.hook.hold(key, d, alive)
}

// ReleaseSyscalls drops a hold; the hook is detached once nothing else
// needs it for a few seconds.
func (p *Probe) ReleaseSyscalls(key string) {
	if p.onDemand {
		p.hook.release(key)
	}
}

// SyscallHook says whether the syscall hook is attached.
func (p *Probe) SyscallHook() HookState {
	return p.hook.state(p.onDemand)
}

// Ring says the events ring's size and the most bytes it has held pending.
func (p *Probe) Ring() (size, highWater uint64) {
	var hw uint64
	if err := p.objs.RbHigh.Get(&hw); err != nil {
		return uint64(p.objs.Events.MaxEntries()), 0
	}
	return uint64(p.objs.Events.MaxEntries()), hw
}
