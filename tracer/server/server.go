// Package server is the heart of buildtraced: it feeds the probe's events
// to the assembler, seals ended steps (file-system diff, kernel counters)
// into the store, and answers the HTTP API with signed traces.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
	"github.com/buildtrace/buildtrace/tracer/peer"

	"github.com/buildtrace/buildtrace/pkg/fsdiff"
	"github.com/buildtrace/buildtrace/pkg/sign"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/tracer/assemble"
	"github.com/buildtrace/buildtrace/tracer/probe"
	"github.com/buildtrace/buildtrace/tracer/rootfs"
	"github.com/buildtrace/buildtrace/tracer/store"
)

// Source is what the server needs of the probe besides its event stream;
// *probe.Probe satisfies it.
type Source interface {
	Sync(ctx context.Context) error
	Stats(cgroupID uint64) probe.CgroupStats
	Traffic(cgroupID uint64) []probe.Traffic
	Forget(cgroupID uint64)
}

// hookSource is what *probe.Probe has besides Source: its syscall hook,
// attached on demand, and its ring's state. Test sources have neither.
type hookSource interface {
	HoldSyscalls(key string, d time.Duration, alive func() bool) error
	ReleaseSyscalls(key string)
	SyscallHook() probe.HookState
	Ring() (size, highWater uint64)
}

// clockSource is the probe's clock of event times (probe.Probe.Now).
type clockSource interface {
	Now() time.Time
}

// now is the time on the clock of event times, which the tracer's own
// times must share to be compared with them; time.Now for a source
// without one.
func (s *Server) now() time.Time {
	if c, ok := s.cfg.Source.(clockSource); ok {
		return c.Now()
	}
	return time.Now()
}

// syscallHold bounds how long a registered plan keeps the syscall hook
// attached; its frontend asking for the sealed trace or exiting (a failed
// build never asks) ends the hold sooner. A step started later still
// attaches it when its cgroup appears.
const syscallHold = time.Hour

func (s *Server) holdSyscalls(traceID string, frontendPID uint32) {
	if hs, ok := s.cfg.Source.(hookSource); ok {
		alive := func() bool { return processAlive(frontendPID) }
		if frontendPID == 0 {
			alive = nil
		}
		if err := hs.HoldSyscalls("plan/"+traceID, syscallHold, alive); err != nil {
			s.log.Error("attaching the syscall hook for a build; its steps will be incomplete", "trace", traceID, "err", err)
		}
	}
}

// processAlive reports whether process pid exists (a reused PID keeps a
// hold longer: cost, never a loss).
func processAlive(pid uint32) bool {
	err := unix.Kill(int(pid), 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

func (s *Server) releaseSyscalls(traceID string) {
	if hs, ok := s.cfg.Source.(hookSource); ok {
		hs.ReleaseSyscalls("plan/" + traceID)
	}
}

// Config is what a Server is built from.
type Config struct {
	Source  Source
	Store   *store.Store
	Signer  *sign.Signer
	Logger  *slog.Logger
	Tracer  trace.Tracer  // identity put into every trace
	MaxWait time.Duration // upper bound on a request's wait
	// Mountinfo is the host mount table to find BuildKit's executor
	// mounts in; default /proc/self/mountinfo.
	Mountinfo string
	// CgroupRoot is the cgroup2 mount, where the cgroup of a buildkitd in
	// a container lists its processes; default /sys/fs/cgroup/unified.
	CgroupRoot string
	Limits     assemble.Options
	// Identify names the caller of a TCP request; nil reads /proc
	// (peer.Finder). Tests set it.
	Identify func(r *http.Request) (*peer.Frontend, error)
}

// Server follows steps and serves their traces.
type Server struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	asm      *assemble.Assembler
	layouts  map[uint64]layout // by cgroup ID, while the step is open
	early    map[uint64]layout // found by Early, not yet taken by Handle
	blobs    blobs             // attestations handed over for BuildKit's HTTP source
	plans    plans             // each build's plan, from its frontend
	counters counters          // request counters each frontend used (auth.go)
	bundles  bundleWatch       // containers\' bundles, read as buildkitd writes them
	finder   *peer.Finder
	resolver *rootfs.Resolver
	lowers   lowerCache
	secrets  map[uint64][]string // by cgroup ID: values to redact, in memory only
	evMu     sync.Mutex
	evHealth tracerapi.EvidenceHealth
	sealing  map[*assemble.Step]struct{} // ended, not yet in the store
	changed  chan struct{}               // closed when a step is sealed

	seals   sync.WaitGroup
	diffSem chan struct{} // bounds concurrent diffs: they read whole files
}

type layout struct {
	l   rootfs.Layout
	err error
}

// New returns a Server with no open step.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Mountinfo == "" {
		cfg.Mountinfo = "/proc/self/mountinfo"
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 2 * time.Minute
	}
	return &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		asm:      assemble.New(cfg.Limits),
		layouts:  make(map[uint64]layout),
		early:    make(map[uint64]layout),
		blobs:    blobs{byHex: make(map[string]blob)},
		sealing:  make(map[*assemble.Step]struct{}),
		changed:  make(chan struct{}),
		diffSem:  make(chan struct{}, 2),
		finder:   &peer.Finder{Mountinfo: cfg.Mountinfo, CgroupRoot: cfg.CgroupRoot},
		resolver: &rootfs.Resolver{Mountinfo: cfg.Mountinfo, CgroupRoot: cfg.CgroupRoot},
	}
}

// Early takes a container cgroup's creation as soon as the kernel reports
// it (probe.Cgroups), ahead of Handle, and finds the container's root
// overlay while BuildKit still has it mounted: Handle may see the same
// mkdir only after a backlog of another step's events, when a short step
// is already over.
func (s *Server) Early(cgroupID uint64, path string) {
	c, ok := steptag.ParseCgroup(path)
	if !ok {
		return
	}
	l, ok := s.bundleOf(c.ContainerID)
	var err error
	if !ok {
		l, err = s.resolver.FromBundle(c.Prefix, c.ContainerID)
	}
	s.mu.Lock()
	s.early[cgroupID] = layout{l, err}
	s.mu.Unlock()
	if err == nil {
		s.watchExecutorOf(l)
		s.noteSecrets(cgroupID, path, l, l.TraceID)
	}
}

// Handle takes one probe event. It is the callback for probe.Run and must
// be called from one goroutine, in order.
func (s *Server) Handle(ev probe.Event) {
	s.mu.Lock()
	u := s.asm.Handle(ev)
	s.mu.Unlock()

	switch {
	case u.Opened != nil:
		s.mu.Lock()
		have, ok := s.early[u.Opened.CgroupID]
		delete(s.early, u.Opened.CgroupID)
		s.mu.Unlock()
		if b, found := s.bundleOf(u.Opened.Container.ContainerID); found && (!ok || have.err != nil) {
			have, ok = layout{l: b}, true
		}
		if !ok || have.err != nil {
			// runc is starting, or has been: BuildKit mounted the root and
			// wrote the bundle before it, and removes both after.
			l, err := s.resolver.FromBundle(u.Opened.Container.Prefix, u.Opened.Container.ContainerID)
			if ok && err != nil {
				err = fmt.Errorf("%w; at once: %w", err, have.err)
				if l.TraceID == "" && have.l.TraceID != "" {
					l.TraceID, l.TraceErr = have.l.TraceID, nil // the bundle was read early
				}
			}
			have = layout{l, err}
		}
		tid, why := s.checkNonce(u.Opened.Container, have.l, attrWhy(have))
		s.mu.Lock()
		s.layouts[u.Opened.CgroupID] = have
		s.asm.Attribute(u.Opened, tid, why)
		_, noted := s.secrets[u.Opened.CgroupID]
		s.mu.Unlock()
		// Also when the overlay could not be used: the bundle (or its
		// absence, which noteSecrets reports) still decides the secrets.
		if !noted {
			s.noteSecrets(u.Opened.CgroupID, u.Opened.Cgroup, have.l, have.l.TraceID)
		}
		s.log.Debug("step started", "cgroup", u.Opened.Cgroup, "trace", have.l.TraceID, "layoutErr", have.err)
	case u.FirstExec != nil:
		s.mu.Lock()
		have := s.layouts[u.FirstExec.CgroupID]
		s.mu.Unlock()
		if have.err != nil || have.l.Upper == "" {
			l, err := s.resolver.FromProcess(u.FirstExec.Container.Prefix, u.FirstExec.FirstPID)
			if err != nil {
				if have.err != nil {
					err = fmt.Errorf("%w; from the process: %w", have.err, err)
				}
				have = layout{err: err}
			} else {
				have = layout{l: keepBundle(l, have.l)}
			}
			s.mu.Lock()
			s.layouts[u.FirstExec.CgroupID] = have
			s.mu.Unlock()
		}
		if u.FirstExec.TraceID == "" {
			s.log.Warn("step's build could not be decided; it will be stored as unattributed", "cgroup", u.FirstExec.Cgroup)
		}
	case u.Ended != nil:
		s.end(u.Ended)
	case ev.Kind == probe.KindCgroupMkdir && ev.Cgroup != nil:
		if _, ok := steptag.ParseCgroup(ev.Cgroup.Path); !ok {
			// A step's directory (/buildtrace/<step>[/buildkit]): nothing
			// runs there and BuildKit never removes it; do not let them
			// fill the kernel's map of tracked cgroups.
			s.cfg.Source.Forget(ev.CgroupID)
		}
	case ev.Kind == probe.KindCgroupRmdir:
		s.mu.Lock()
		early, ok := s.early[ev.CgroupID]
		delete(s.early, ev.CgroupID)
		var lost *assemble.Step
		if ok && ev.Cgroup != nil {
			// Reported at once, but its in-order mkdir never came (the
			// ring was full): seal it as lost rather than have it vanish.
			if st, ok := s.asm.Lost(ev.CgroupID, ev.Cgroup.Path, ev.Time); ok {
				lost = st
				s.layouts[st.CgroupID] = early
				tid, why := s.checkNonce(st.Container, early.l, attrWhy(early))
				s.asm.Attribute(st, tid, why)
			}
		}
		s.mu.Unlock()
		if lost != nil {
			s.log.Warn("a container's creation record was lost", "cgroup", lost.Cgroup)
			s.end(lost)
			return
		}
		// An intermediate cgroup (/buildtrace/<step>[/buildkit]) or an
		// unparseable one: nothing to seal, but the probe still holds it.
		s.cfg.Source.Forget(ev.CgroupID)
	}
}

// keepBundle carries what the container's bundle said (its build, its
// nonce, its powers) into a layout read from its process's mount table,
// which says none of it: a RUN --security=insecure step whose overlay was
// found only that way must still be marked incomplete.
func keepBundle(fromProcess, bundle rootfs.Layout) rootfs.Layout {
	fromProcess.TraceID, fromProcess.TraceErr = bundle.TraceID, bundle.TraceErr
	fromProcess.NoProxy, fromProcess.Powers = bundle.NoProxy, bundle.Powers
	return fromProcess
}

// Track follows a container cgroup that existed before the probe was
// loaded; procs are the processes running in it, as /proc shows them.
func (s *Server) Track(cgroupID uint64, path string, procs []trace.Process) {
	c, ok := steptag.ParseCgroup(path)
	if !ok {
		return
	}
	// The build comes from the bundle, as for a step followed from its
	// start.
	l, err := s.resolver.FromBundle(c.Prefix, c.ContainerID)
	have := layout{l, err}
	if err != nil && len(procs) > 0 {
		if pl, perr := s.resolver.FromProcess(c.Prefix, procs[0].PID); perr == nil {
			have.l, have.err = keepBundle(pl, l), nil
		}
	}
	s.mu.Lock()
	st, ok := s.asm.Track(cgroupID, path, "", s.now())
	if ok {
		for _, p := range procs {
			st.Adopt(p)
		}
		tid, why := s.checkNonce(st.Container, l, attrWhy(layout{l, err}))
		s.asm.Attribute(st, tid, why)
		s.layouts[cgroupID] = have
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	s.log.Info("following a container that started before the tracer", "cgroup", path, "trace", st.TraceID)
}

// end takes the kernel's counters for an ended step at once (the probe
// forgets the cgroup) and computes the diff in the background, so the
// event loop never waits on the file system.
func (s *Server) end(st *assemble.Step) {
	src := s.cfg.Source
	stats := src.Stats(st.CgroupID)
	traffic := src.Traffic(st.CgroupID)
	src.Forget(st.CgroupID)

	s.mu.Lock()
	l, ok := s.layouts[st.CgroupID]
	delete(s.layouts, st.CgroupID)
	delete(s.early, st.CgroupID) // when Early ran after Handle's mkdir
	s.sealing[st] = struct{}{}
	s.mu.Unlock()
	if !ok {
		l = layout{err: rootfs.ErrNotFound}
	}

	secrets := s.takeSecrets(st.CgroupID)
	s.seals.Add(1)
	go func() {
		defer s.seals.Done()
		s.diffSem <- struct{}{}
		diff := s.diff(l)
		var lowers []string
		if l.err == nil {
			var err error
			if lowers, err = s.lowerDigests(context.Background(), l.l.Lowers); err != nil {
				s.log.Warn("hashing a step's lower layers", "step", st.Container.StepID, "err", err)
			}
		}
		<-s.diffSem
		sealed := st.Seal(assemble.SealInput{Stats: stats, Traffic: traffic, Diff: diff, Lowers: lowers})
		if l.err == nil && len(l.l.Powers) > 0 {
			// RUN --security=insecure: such a step can move where the
			// hooks do not follow it, and act as root on the host.
			sealed.Completeness.Complete = false
			sealed.Completeness.Reasons = append(sealed.Completeness.Reasons,
				"the container could get out of what the tracer follows ("+strings.Join(l.l.Powers, "; ")+"): what it did is not vouched for")
		}
		redact(&sealed, secrets)
		// A step whose build could not be decided is kept under its step
		// ID (store.UnattributedSteps), never dropped.
		key := st.TraceID
		if key == "" {
			key = store.Unattributed
			s.log.Warn("storing a step whose build could not be decided", "cgroup", st.Cgroup, "step", sealed.StepID)
		}
		if err := s.cfg.Store.Put(key, sealed, time.Now()); err != nil {
			s.log.Error("storing sealed step", "trace", st.TraceID, "step", sealed.StepID, "err", err)
		}
		s.log.Info("step sealed", "trace", st.TraceID, "step", sealed.StepID, "container", sealed.ContainerID,
			"processes", len(sealed.Processes), "complete", sealed.Completeness.Complete)
		s.mu.Lock()
		delete(s.sealing, st)
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}()
}

// attrWhy says why a layout names no build, for the step's reasons.
func attrWhy(l layout) string {
	switch {
	case l.l.TraceErr != nil:
		return l.l.TraceErr.Error()
	case l.err != nil:
		return "reading its OCI bundle: " + l.err.Error()
	}
	return ""
}

func (s *Server) diff(l layout) trace.Diff {
	if l.err != nil {
		return trace.Diff{Error: "finding the container's root overlay: " + l.err.Error()}
	}
	d, err := fsdiff.FromUpper(context.Background(), l.l.Upper, fsdiff.Options{Lowers: l.l.Lowers, Exclude: l.l.Exclude})
	if err != nil {
		return trace.Diff{Error: "reading the overlay upper directory " + l.l.Upper + ": " + err.Error()}
	}
	return d
}

// WaitSeals returns when every ended step is in the store.
func (s *Server) WaitSeals() { s.seals.Wait() }

// pending returns the IDs of the steps of build traceID that have not been
// stored yet, and a channel closed at the next seal.
func (s *Server) pending(traceID string) ([]string, <-chan struct{}) {
	// A container of a step this build planned whose build could not be
	// decided is waited for too: it goes into the build's trace as
	// unattributed, and must not be missed for having been still open.
	planned := map[string]bool{}
	if _, parts, ok := s.plans.get(traceID); ok {
		for _, p := range parts {
			for _, st := range p.Steps {
				planned[st.StepID] = true
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[string]bool)
	var ids []string
	add := func(st *assemble.Step) {
		mine := st.TraceID == traceID || st.TraceID == "" && planned[st.Container.StepID]
		if mine && !seen[st.Container.StepID] {
			seen[st.Container.StepID] = true
			ids = append(ids, st.Container.StepID)
		}
	}
	for _, st := range s.asm.Open() {
		add(st)
	}
	for st := range s.sealing {
		add(st)
	}
	return ids, s.changed
}
