//go:build linux

package probe

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/buildtrace/buildtrace/bpf"
	"github.com/buildtrace/buildtrace/pkg/steptag"
)

// DefaultCgroupRoot is where the cgroup2 hierarchy is mounted on a hybrid host.
const DefaultCgroupRoot = "/sys/fs/cgroup/unified"

// DefaultRingBufferSize is the kernel-to-user ring buffer size.
const DefaultRingBufferSize = 16 << 20

// trackedPrefix is the cgroup2 path under which cgroups are followed; the
// BPF program matches the same prefix.
const trackedPrefix = "buildtrace"

// pollInterval bounds how long a record written without a wakeup (see
// wake_flags in the BPF program) waits in the ring before Run reads it.
const pollInterval = 50 * time.Millisecond

// wakeBytes is how many pending bytes make the kernel wake the reader: a
// sixteenth of the ring (so a burst never fills it unread), at most 256 KiB
// (about 1,500 file records per wakeup).
func wakeBytes(ringSize int) uint64 {
	return uint64(min(ringSize/16, 256<<10))
}

// Options configures Load.
type Options struct {
	CgroupRoot     string // cgroup2 mount, default DefaultCgroupRoot
	RingBufferSize int    // bytes, a power of two multiple of the page size; 0 = DefaultRingBufferSize
	// TrafficEntries sizes the map of per-destination byte counters
	// (shared by all cgroups); 0 = 65,536. Tests make it small to fill it.
	TrafficEntries int
	// SyscallsOnDemand attaches the syscall hook only while a cgroup under
	// /buildtrace/ is tracked or a hold (HoldSyscalls) is held, so that the
	// rest of the host pays nothing between builds; otherwise it stays
	// attached from Load to Close. Cgroups must be running to attach it at
	// once when a container's cgroup is made.
	SyscallsOnDemand bool
	Logger           *slog.Logger // default slog.Default()
}

// Probe is the loaded and attached kernel side.
type Probe struct {
	objs     bpf.BuildtraceObjects
	links    []link.Link
	rd       *ringbuf.Reader
	ctl      *ringbuf.Reader // cgroup mkdirs only, see Cgroups
	bootWall int64           // wall ns minus CLOCK_MONOTONIC ns
	argv     argvJoiner      // joins argv continuation records (Run's goroutine; lost counts locked)

	hook     syscallHook // tp_btf/sys_exit, see hook.go
	onDemand bool

	runMu   sync.Mutex // one Run at a time
	pending []Event    // cgroups found by the start-up scan, passed to the first Run

	syncSeq  atomic.Uint64
	syncMu   sync.Mutex
	syncDone uint64 // highest marker seen by Run
	waiters  map[uint64]chan struct{}
}

// Load removes the memlock limit, loads and attaches all programs and starts
// tracking the cgroups that already exist under <CgroupRoot>/buildtrace.
func Load(ctx context.Context, opts Options) (_ *Probe, retErr error) {
	if opts.CgroupRoot == "" {
		opts.CgroupRoot = DefaultCgroupRoot
	}
	size := opts.RingBufferSize
	if size == 0 {
		size = DefaultRingBufferSize
	}
	if size < os.Getpagesize() || size&(size-1) != 0 {
		return nil, fmt.Errorf("ring buffer size %d: must be a power of two of at least one page", size)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("removing memlock rlimit: %w", err)
	}
	spec, err := bpf.LoadBuildtrace()
	if err != nil {
		return nil, fmt.Errorf("reading BPF object: %w", err)
	}
	spec.Maps["events"].MaxEntries = uint32(size)
	if opts.TrafficEntries > 0 {
		spec.Maps["traffic"].MaxEntries = uint32(opts.TrafficEntries)
	}
	var mntns unix.Stat_t
	if err := unix.Stat("/proc/self/ns/mnt", &mntns); err != nil {
		return nil, fmt.Errorf("reading the tracer's mount namespace: %w", err)
	}
	if err := spec.Variables["tracer_mntns"].Set(uint32(mntns.Ino)); err != nil {
		return nil, fmt.Errorf("setting tracer_mntns: %w", err)
	}
	if err := spec.Variables["wake_bytes"].Set(wakeBytes(size)); err != nil {
		return nil, fmt.Errorf("setting wake_bytes: %w", err)
	}
	if err := spec.Variables["page_size"].Set(uint64(os.Getpagesize())); err != nil {
		return nil, fmt.Errorf("setting page_size: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	p := &Probe{waiters: map[uint64]chan struct{}{}, onDemand: opts.SyscallsOnDemand}
	if err := spec.LoadAndAssign(&p.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("loading BPF programs: %+v", ve)
		}
		return nil, fmt.Errorf("loading BPF programs: %w", err)
	}
	defer func() {
		if retErr != nil {
			p.Close()
		}
	}()
	o := &p.objs
	p.hook = syscallHook{live: o.SysLive, tracked: o.Tracked, log: log,
		holds: map[string]hold{}, dormant: map[uint64]string{}}
	p.hook.attachers = []attacher{{"tp_btf/sys_exit", func() (link.Link, error) {
		return link.AttachTracing(link.TracingOptions{Program: o.SysExit, AttachType: ebpf.AttachTraceRawTp})
	}}}
	for _, t := range []struct {
		name   string
		attach ebpf.AttachType
		prog   *ebpf.Program
	}{{"egress", ebpf.AttachCGroupInetEgress, o.SkbEgress}, {"ingress", ebpf.AttachCGroupInetIngress, o.SkbIngress}} {
		p.hook.attachers = append(p.hook.attachers, attacher{fmt.Sprintf("cgroup_skb/%s at %s", t.name, opts.CgroupRoot), func() (link.Link, error) {
			return link.AttachCgroup(link.CgroupOptions{Path: opts.CgroupRoot, Attach: t.attach, Program: t.prog})
		}})
	}
	// Track existing cgroups before attaching, so their first events count.
	if err := p.scan(opts.CgroupRoot); err != nil {
		return nil, err
	}
	for _, t := range []struct {
		name string
		prog *ebpf.Program
	}{
		{"cgroup_mkdir", o.CgroupMkdir},
		{"cgroup_rmdir", o.CgroupRmdir},
		{"cgroup_attach_task", o.CgroupAttachTask},
		{"sched_process_fork", o.SchedFork},
		{"sched_process_exec", o.SchedExec},
		{"sched_process_exit", o.SchedExit},
		{"io_uring_submit_req", o.IoUringSubmitReq},
	} {
		l, err := link.AttachTracing(link.TracingOptions{Program: t.prog, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			return nil, fmt.Errorf("attaching tp_btf/%s: %w", t.name, err)
		}
		p.links = append(p.links, l)
	}
	if p.onDemand {
		// Attached now if a container found by the scan runs.
		p.hook.check()
		p.hook.mu.Lock()
		err := p.hook.lastErr
		p.hook.mu.Unlock()
		if err != nil {
			return nil, err
		}
		p.hook.stop, p.hook.done = make(chan struct{}), make(chan struct{})
		go p.hook.run()
	} else {
		p.hook.mu.Lock()
		err := p.hook.attach()
		p.hook.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	if p.rd, err = ringbuf.NewReader(o.Events); err != nil {
		return nil, fmt.Errorf("opening ring buffer: %w", err)
	}
	if p.ctl, err = ringbuf.NewReader(o.Ctl); err != nil {
		return nil, fmt.Errorf("opening control ring buffer: %w", err)
	}
	p.bootWall = clockOffset()
	return p, ctx.Err()
}

// Now is the clock of event times: CLOCK_MONOTONIC plus the wall offset
// measured at load. The tracer compares event times with times of its own
// (when a build's plan arrived), and those come from here: a wall clock
// stepped after load (an NTP step, a resumed VM) moves neither, so it
// cannot put a build's step before its plan and drop it as not the build's.
func (p *Probe) Now() time.Time {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Unix(0, ts.Nano()+p.bootWall)
}

// clockOffset measures wall time minus CLOCK_MONOTONIC, keeping the
// tightest of a few samples.
func clockOffset() int64 {
	var best, bestGap int64 = 0, -1
	for range 5 {
		var a, b unix.Timespec
		unix.ClockGettime(unix.CLOCK_MONOTONIC, &a)
		wall := time.Now().UnixNano()
		unix.ClockGettime(unix.CLOCK_MONOTONIC, &b)
		gap := b.Nano() - a.Nano()
		if bestGap < 0 || gap < bestGap {
			bestGap, best = gap, wall-(a.Nano()+gap/2)
		}
	}
	return best
}

// scan tracks every container cgroup (/buildtrace/<step>/buildkit/<id>)
// that exists. On cgroup2 a cgroup's ID is the inode number of its
// directory. The step directories above them are not tracked: nothing runs
// there, and BuildKit never removes them, so a busy host has thousands.
func (p *Probe) scan(root string) error {
	tops, err := stepTrees(root)
	if err != nil {
		return err
	}
	for _, top := range tops {
		if err := p.scanTree(root, top); err != nil {
			return err
		}
	}
	return nil
}

// stepTrees lists the buildtrace directories at the root of the hierarchy
// and below a buildkitd container's cgroup, up to maxPrefixDepth levels down.
func stepTrees(root string) ([]string, error) {
	var out []string
	for depth := 0; depth <= maxPrefixDepth; depth++ {
		parts := []string{root}
		for i := 0; i < depth; i++ {
			parts = append(parts, "*")
		}
		m, err := filepath.Glob(filepath.Join(append(parts, trackedPrefix)...))
		if err != nil {
			return nil, err
		}
		out = append(out, m...)
	}
	return out, nil
}

// maxPrefixDepth bounds how deep a buildkitd container's cgroup may be for
// the start-up scan (e.g. /docker/buildx/<id>: 3).
const maxPrefixDepth = 4

// scanTree tracks the container cgroups below one buildtrace directory.
func (p *Probe) scanTree(root, top string) error {
	err := filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // gone meanwhile, or no build ran yet
			}
			return err
		}
		if !d.IsDir() || path == top {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		cg := "/" + filepath.ToSlash(rel)
		if _, ok := steptag.ParseCgroup(cg); !ok {
			if relTop, _ := filepath.Rel(top, path); strings.Count(relTop, "/") >= 2 {
				return fs.SkipDir // below a container: not ours to follow
			}
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return fs.SkipDir // removed while we walked
		}
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("no inode for %s", path)
		}
		// As the kernel side: only cgroups root made, below a buildtrace
		// directory root made.
		if tf, err := os.Stat(top); err != nil || st.Uid != 0 || tf.Sys().(*syscall.Stat_t).Uid != 0 {
			return fs.SkipDir
		}
		if err := p.track(st.Ino); err != nil {
			return err
		}
		if !populated(path) {
			// Left by a runtime that died (BuildKit removes its own): it
			// does not keep the syscall hook attached while it stays empty.
			p.hook.dormant[st.Ino] = path
		}
		p.pending = append(p.pending, Event{
			Kind:     KindCgroupMkdir,
			Time:     fi.ModTime(),
			CgroupID: st.Ino,
			Cgroup:   &CgroupInfo{Path: cg},
		})
		return fs.SkipDir
	})
	if err != nil {
		return fmt.Errorf("scanning existing cgroups under %s: %w", top, err)
	}
	return nil
}

// track adds a cgroup to the kernel's tracked map with zero counters, or
// keeps it and its counts when cgroup_mkdir got there first.
func (p *Probe) track(id uint64) error {
	var zero bpf.BuildtraceCgStats
	if err := p.objs.Tracked.Update(id, zero, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return fmt.Errorf("tracking cgroup %d: %w", id, err)
	}
	return nil
}

// Run reads events and passes them to fn in the order the kernel wrote them,
// until ctx is done (it then returns ctx.Err()) or the probe is closed.
func (p *Probe) Run(ctx context.Context, fn func(Event)) error {
	p.runMu.Lock()
	defer p.runMu.Unlock()
	for _, ev := range p.pending {
		fn(ev)
	}
	p.pending = nil

	// Flush interrupts a blocked read; it then returns ErrFlushed once the
	// records already in the ring are read.
	stop := context.AfterFunc(ctx, func() { p.rd.Flush() })
	defer stop()
	var rec ringbuf.Record
	p.rd.SetDeadline(time.Now().Add(pollInterval))
	for {
		if err := p.rd.ReadInto(&rec); err != nil {
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				// Every record present was read; poll again later.
				p.rd.SetDeadline(time.Now().Add(pollInterval))
				continue
			case errors.Is(err, ringbuf.ErrFlushed):
				if ctx.Err() != nil {
					return ctx.Err()
				}
				continue // a flush from an earlier Run's ctx
			case errors.Is(err, ringbuf.ErrClosed):
				return nil
			}
			return fmt.Errorf("reading ring buffer: %w", err)
		}
		ev, ok, err := p.argv.record(rec.RawSample, p.bootWall)
		if err != nil {
			return fmt.Errorf("decoding event: %w", err)
		}
		if !ok {
			continue // an argv continuation, joined to its exec
		}
		if ev.Kind == kindSync {
			p.synced(mustSeq(rec.RawSample))
			continue
		}
		if ev.Kind == KindCgroupMkdir && p.onDemand {
			p.hook.ensure() // Cgroups normally did at once
		}
		fn(ev)
	}
}

// Cgroups calls fn for each cgroup created under /buildtrace/ as soon as
// the kernel reports it, ahead of Run, which may be behind a burst of
// another step's events. fn runs on Cgroups' goroutine, concurrently with
// Run's fn; the same cgroup still reaches Run as a KindCgroupMkdir event,
// in order. Cgroups returns when ctx is done or the probe is closed.
func (p *Probe) Cgroups(ctx context.Context, fn func(cgroupID uint64, path string)) error {
	stop := context.AfterFunc(ctx, func() { p.ctl.Flush() })
	defer stop()
	var rec ringbuf.Record
	for {
		if err := p.ctl.ReadInto(&rec); err != nil {
			switch {
			case errors.Is(err, ringbuf.ErrFlushed):
				if ctx.Err() != nil {
					return ctx.Err()
				}
				continue
			case errors.Is(err, ringbuf.ErrClosed):
				return nil
			}
			return fmt.Errorf("reading control ring buffer: %w", err)
		}
		id, path, err := decodeCtl(rec.RawSample)
		if err != nil {
			return err
		}
		if p.onDemand {
			// At once: runc is setting the container up, and its first
			// exec must find the hook attached. Beside fn, not before it:
			// attaching the packet counters at the cgroup root takes a
			// few ms on a host with thousands of cgroups, and fn must read
			// the container's bundle while it is there.
			go p.hook.ensure()
		}
		fn(id, path)
	}
}

func mustSeq(rec []byte) uint64 {
	h, _, _ := parseHeader(rec)
	return h.b[0]
}

func (p *Probe) synced(seq uint64) {
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	if seq > p.syncDone {
		p.syncDone = seq
	}
	for s, ch := range p.waiters {
		if s <= seq {
			close(ch)
			delete(p.waiters, s)
		}
	}
}

// Sync returns once every event the kernel emitted before the call has been
// passed to Run's fn. It makes the kernel write a marker record through the
// same ring buffer and waits for Run to reach it, so Run must be running.
func (p *Probe) Sync(ctx context.Context) error {
	seq := p.syncSeq.Add(1)
	ch := make(chan struct{})
	p.syncMu.Lock()
	p.waiters[seq] = ch
	p.syncMu.Unlock()
	// The marker program writes the record in this thread, after every
	// record already in the ring; it needs no hook attached.
	if _, err := p.objs.SyncMarker.Run(&ebpf.RunOptions{Context: []uint64{seq}}); err != nil {
		p.syncMu.Lock()
		delete(p.waiters, seq)
		p.syncMu.Unlock()
		return fmt.Errorf("writing event marker %d: %w", seq, err)
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		p.syncMu.Lock()
		delete(p.waiters, seq)
		p.syncMu.Unlock()
		return fmt.Errorf("waiting for event marker %d: %w", seq, ctx.Err())
	}
}

// Stats returns what the kernel counted for a tracked cgroup (zero once
// forgotten or when never tracked).
func (p *Probe) Stats(cgroupID uint64) CgroupStats {
	var st bpf.BuildtraceCgStats
	if err := p.objs.Tracked.Lookup(cgroupID, &st); err != nil {
		return CgroupStats{}
	}
	// An exec whose argv continuations did not all arrive is truncated
	// too (counted here when the kernel did not flag it).
	return CgroupStats{Emitted: st.Emitted, Dropped: st.Dropped, Truncated: st.Truncated + p.argv.truncated(cgroupID), IOUring: st.IoUring,
		MapFull: st.MapFull, TrafficFull: st.TrafficFull, AFPacket: st.AfPacket, Unhooked: st.Unhooked, Escaped: st.Escaped, DNSSource: st.DnsSource}
}

// Traffic returns the bytes the cgroup exchanged per remote endpoint.
func (p *Probe) Traffic(cgroupID uint64) []Traffic {
	var (
		out []Traffic
		k   bpf.BuildtraceTrafficKey
		v   bpf.BuildtraceTrafficVal
	)
	it := p.objs.Traffic.Iterate()
	for it.Next(&k, &v) {
		if k.CgroupId != cgroupID {
			continue
		}
		addr, ok := makeAddrPort(int(k.Family), k.Addr, k.Port)
		if !ok {
			continue
		}
		out = append(out, Traffic{Protocol: protoName(uint32(k.Proto), false), Addr: addr, BytesSent: v.Sent, BytesReceived: v.Received})
	}
	return out
}

// Forget stops tracking a cgroup and drops its per-cgroup kernel state.
// Call it after the cgroup's step is sealed; Stats and Traffic are empty after.
func (p *Probe) Forget(cgroupID uint64) {
	p.objs.Tracked.Delete(cgroupID)
	p.hook.mu.Lock()
	delete(p.hook.dormant, cgroupID)
	p.hook.mu.Unlock()
	p.objs.Seen.Delete(cgroupID)
	p.argv.forget(cgroupID)
	var (
		k    bpf.BuildtraceTrafficKey
		v    bpf.BuildtraceTrafficVal
		keys []bpf.BuildtraceTrafficKey
	)
	it := p.objs.Traffic.Iterate()
	for it.Next(&k, &v) {
		if k.CgroupId == cgroupID {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		p.objs.Traffic.Delete(k)
	}
}

// Close detaches all programs and frees the kernel objects; a running Run
// returns.
func (p *Probe) Close() error {
	var errs []error
	if p.rd != nil {
		errs = append(errs, p.rd.Close())
	}
	if p.ctl != nil {
		errs = append(errs, p.ctl.Close())
	}
	errs = append(errs, p.hook.close())
	for _, l := range p.links {
		errs = append(errs, l.Close())
	}
	p.links = nil
	errs = append(errs, p.objs.Close())
	return errors.Join(errs...)
}
