// Package peer tells the tracer who is on the other end of a loopback TCP
// connection: which host process holds the socket, and whether that
// process is a BuildKit build's frontend.
//
// The tracer speaks about a build only to that build's frontend. A caller
// is one when it is the init process of a BuildKit container that is not a
// build step (steps run under /buildtrace/<step>), and the OCI bundle that
// buildkitd wrote for that container — on the host, out of the container's
// reach — carries the frontend's environment (BUILDKIT_SESSION_ID,
// BUILDKIT_EXPORTEDPRODUCT) and the build's TRACEPARENT. Nothing a process
// can change about itself (its environment, argv, or what it sends) goes
// into that decision.
package peer

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
	"github.com/buildtrace/buildtrace/tracer/rootfs"
)

// Frontend is a build's frontend process.
type Frontend struct {
	PID              uint32
	ContainerID      string
	TraceID          string // the build, from the bundle's TRACEPARENT
	Executable       string // as the container sees it
	ExecutableDigest string // "sha256:<hex>"
	Bundle           string // the container's OCI bundle directory, openable from the tracer
	// Namespace is the mount namespace of the buildkitd that runs the
	// container (the tracer's own for a buildkitd on the host).
	Namespace rootfs.Namespace
	// RequestKey is the key the frontend signs its requests with
	// (tracerapi.Auth), read from its memfd.
	RequestKey []byte

	cgroup string
}

// ErrNotFrontend is wrapped by every refusal.
var ErrNotFrontend = errors.New("caller is not a BuildKit build's frontend")

// Finder finds callers. The zero value reads the real /proc.
type Finder struct {
	Proc      string // default /proc
	Mountinfo string // host mount table; default /proc/self/mountinfo
	// CgroupRoot is the cgroup2 mount, where a buildkitd in a container is
	// found by its cgroup; default /sys/fs/cgroup/unified.
	CgroupRoot string

	mu      sync.Mutex
	digests map[exeKey]string
}

// exeKey names a program file's content for the digest cache: a change
// of the file changes its ctime, which no one can set.
type exeKey struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64
}

func (f *Finder) proc(parts ...string) string {
	root := f.Proc
	if root == "" {
		root = "/proc"
	}
	return filepath.Join(append([]string{root}, parts...)...)
}

// Frontend identifies the process at the other end of a TCP connection
// from remote (the caller's address) to local (the tracer's).
//
// The kernel says which cgroup made the caller's socket (sock_diag), and
// only the processes of that cgroup are looked at: each that holds the
// socket must be one and the same frontend, its container's first
// process. A socket gets into the hands of a process elsewhere only if a
// process of that cgroup hands it over (the frontend's code does not) or
// someone allowed to ptrace the frontend takes it (root on the host);
// neither changes the cgroup the kernel recorded. Walking every process's
// descriptors instead cost milliseconds per request.
//
// The 4-tuple names the socket, not who wrote the bytes: a process with
// CAP_NET_RAW on the same network (a build step on the host's network
// holds it by default) can write segments into another's connection with
// its sequence numbers. So the caller's socket must have sent every byte
// the tracer has received on the connection (intact).
func (f *Finder) Frontend(remote, local netip.AddrPort) (*Frontend, error) {
	own, err := f.ownEnd(remote, local)
	if err != nil {
		return nil, err
	}
	sk, err := f.socket(remote, local)
	if err != nil {
		return nil, err
	}
	if err := intact(own, sk, remote); err != nil {
		return nil, err
	}
	cg, pids, err := f.cgroupProcs(sk.cgroup, func(cg string) error {
		if _, err := steptag.StepOfCgroup(cg); err == nil {
			return fmt.Errorf("%w: the connection from %s was made in build step cgroup %s", ErrNotFrontend, remote, cg)
		}
		if _, _, ok := containerOfCgroup(cg); !ok {
			return fmt.Errorf("%w: the connection from %s was made in cgroup %s, not a BuildKit container's", ErrNotFrontend, remote, cg)
		}
		return nil
	})
	if errors.Is(err, ErrNotFrontend) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: the cgroup that made the connection from %s: %v", ErrNotFrontend, remote, err)
	}
	want := "socket:[" + strconv.FormatUint(sk.inode, 10) + "]"
	var fe *Frontend
	for _, pid := range pids {
		if !f.holds(pid, want) {
			continue
		}
		x, err := f.frontendProcess(pid)
		if err != nil {
			return nil, err
		}
		if fe != nil && (x.ContainerID != fe.ContainerID || x.PID != fe.PID) {
			// Only the frontend itself may hold its connection.
			return nil, fmt.Errorf("%w: the connection is shared by processes %d and %d", ErrNotFrontend, fe.PID, x.PID)
		}
		fe = x
	}
	if fe == nil {
		return nil, fmt.Errorf("%w: no process of cgroup %s, where it was made, holds the connection from %s", ErrNotFrontend, cg, remote)
	}
	if fe.cgroup != cg {
		return nil, fmt.Errorf("%w: process %d is in cgroup %s, not in %s, where the connection was made", ErrNotFrontend, fe.PID, fe.cgroup, cg)
	}
	if fe.RequestKey, err = f.requestKey(fe.PID); err != nil {
		return nil, fmt.Errorf("%w: process %d: %v", ErrNotFrontend, fe.PID, err)
	}
	return fe, nil
}

// requestKey reads the frontend's request key from its sealed memfd
// (tracerapi.KeyMemfdName): only the process itself could have made it.
func (f *Finder) requestKey(pid uint32) ([]byte, error) {
	p := strconv.FormatUint(uint64(pid), 10)
	fds, err := os.ReadDir(f.proc(p, "fd"))
	if err != nil {
		return nil, err
	}
	want := "/memfd:" + tracerapi.KeyMemfdName + " (deleted)"
	var found []string
	for _, fd := range fds {
		if l, err := os.Readlink(f.proc(p, "fd", fd.Name())); err == nil && l == want {
			found = append(found, fd.Name())
		}
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("it holds %d memfds named %s, want one: not a buildtrace frontend of this version", len(found), tracerapi.KeyMemfdName)
	}
	file, err := os.Open(f.proc(p, "fd", found[0]))
	if err != nil {
		return nil, fmt.Errorf("opening its request key: %w", err)
	}
	defer file.Close()
	// Sealed against writes and size changes: the key cannot change
	// under the tracer.
	const sealed = unix.F_SEAL_WRITE | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW
	if seals, err := unix.FcntlInt(file.Fd(), unix.F_GET_SEALS, 0); err != nil || seals&sealed != sealed {
		return nil, fmt.Errorf("its request key's memfd is not sealed (seals %#x, %v)", seals, err)
	}
	key := make([]byte, tracerapi.KeyLen+1)
	n, err := io.ReadFull(file, key)
	if n != tracerapi.KeyLen || err != io.ErrUnexpectedEOF {
		return nil, fmt.Errorf("its request key is not %d bytes", tracerapi.KeyLen)
	}
	return key[:n], nil
}

// ownEnd finds the tracer's end of the connection from remote to local, in
// its own network namespace. It is read before the caller's end: a byte
// the tracer counts then was sent before the caller's count is read.
func (f *Finder) ownEnd(remote, local netip.AddrPort) (sockInfo, error) {
	own, ok, err := socketIn("", local, remote)
	if err != nil {
		return sockInfo{}, err
	}
	if !ok {
		return sockInfo{}, fmt.Errorf("%w: the tracer's end of the connection from %s is gone", ErrNotFrontend, remote)
	}
	return own, nil
}

// intact checks that the caller's socket sent at least every byte the
// tracer's end has taken in: more means someone else wrote into the
// connection (segments injected with a raw socket).
func intact(own, caller sockInfo, remote netip.AddrPort) error {
	if own.received > caller.sent {
		return fmt.Errorf("%w: the tracer received %d bytes on the connection from %s, but the socket there sent %d: someone else wrote into it",
			ErrNotFrontend, own.received, remote, caller.sent)
	}
	return nil
}

// socket finds the caller's end of an established connection: in the
// tracer's own network namespace, or, for a connection to an address that
// is not loopback (a bridge gateway), in another network namespace (a
// container's on the bridge), asked through a process in it. A connection
// found in more than one namespace is refused: its holder would be a
// guess.
func (f *Finder) socket(remote, local netip.AddrPort) (sockInfo, error) {
	sk, ok, err := socketIn("", remote, local)
	if err != nil || ok {
		return sk, err
	}
	if local.Addr().Unmap().IsLoopback() {
		return sockInfo{}, fmt.Errorf("%w: connection %s → %s is not in this network namespace", ErrNotFrontend, remote, local)
	}
	self, _ := os.Readlink(f.proc("thread-self", "ns", "net"))
	ents, err := os.ReadDir(f.proc())
	if err != nil {
		return sockInfo{}, err
	}
	seen := map[string]bool{self: true}
	var found []sockInfo
	for _, e := range ents {
		if _, err := strconv.ParseUint(e.Name(), 10, 32); err != nil {
			continue
		}
		nsFile := f.proc(e.Name(), "ns", "net")
		ns, err := os.Readlink(nsFile)
		if err != nil || seen[ns] {
			continue
		}
		seen[ns] = true
		sk, ok, err := socketIn(nsFile, remote, local)
		if err == nil && ok {
			found = append(found, sk)
		}
	}
	switch len(found) {
	case 0:
		return sockInfo{}, fmt.Errorf("%w: connection %s → %s is in no network namespace", ErrNotFrontend, remote, local)
	case 1:
		return found[0], nil
	}
	return sockInfo{}, fmt.Errorf("%w: connection %s → %s is in %d network namespaces", ErrNotFrontend, remote, local, len(found))
}

// socketIn asks the kernel about the caller's socket in the network
// namespace of the file ns ("" for the tracer's own).
func socketIn(ns string, remote, local netip.AddrPort) (sockInfo, bool, error) {
	fd, err := diagOpen(ns)
	if err != nil {
		return sockInfo{}, false, fmt.Errorf("opening sock_diag: %w", err)
	}
	defer unix.Close(fd)
	return diagLookup(fd, remote, local)
}

func sameAddr(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && a.Addr().Unmap() == b.Addr().Unmap()
}

// cgroupProcs returns the path of the cgroup with ID id in the cgroup2
// hierarchy (as /proc/<pid>/cgroup writes it) and, when accept takes that
// path, the processes in it. The kernel opens it by its ID (a kernfs file
// handle), so no walk of the hierarchy is needed.
func (f *Finder) cgroupProcs(id uint64, accept func(path string) error) (string, []uint32, error) {
	root := f.CgroupRoot
	if root == "" {
		root = "/sys/fs/cgroup/unified"
	}
	root = filepath.Clean(root)
	// Not O_PATH: open_by_handle_at refuses such a descriptor (EBADF).
	mnt, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("opening the cgroup2 mount %s: %w", root, err)
	}
	defer unix.Close(mnt)
	var h [8]byte
	binary.NativeEndian.PutUint64(h[:], id)
	const fileIDKernfs = 0xfe // FILEID_KERNFS: a cgroup's handle is its ID
	fd, err := unix.OpenByHandleAt(mnt, unix.NewFileHandle(fileIDKernfs, h[:]), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return "", nil, fmt.Errorf("cgroup %d: %w", id, err)
	}
	defer unix.Close(fd)
	full, err := os.Readlink(f.proc("self", "fd", strconv.Itoa(fd)))
	if err != nil {
		return "", nil, fmt.Errorf("cgroup %d: %w", id, err)
	}
	rel, ok := strings.CutPrefix(full, root)
	if !ok || (rel != "" && !strings.HasPrefix(rel, "/")) {
		return "", nil, fmt.Errorf("cgroup %d is at %s, not under %s", id, full, root)
	}
	if rel == "" {
		rel = "/"
	}
	if err := accept(rel); err != nil {
		return rel, nil, err
	}
	pfd, err := unix.Openat(fd, "cgroup.procs", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("cgroup %s: %w", rel, err)
	}
	procs := os.NewFile(uintptr(pfd), "cgroup.procs")
	defer procs.Close()
	dt, err := io.ReadAll(procs)
	if err != nil {
		return "", nil, fmt.Errorf("cgroup %s: %w", rel, err)
	}
	var pids []uint32
	for _, p := range strings.Fields(string(dt)) {
		if v, err := strconv.ParseUint(p, 10, 32); err == nil {
			pids = append(pids, uint32(v))
		}
	}
	return rel, pids, nil
}

// holds reports whether process pid has the file named want ("socket:[N]")
// open.
func (f *Finder) holds(pid uint32, want string) bool {
	p := strconv.FormatUint(uint64(pid), 10)
	fds, err := os.ReadDir(f.proc(p, "fd"))
	if err != nil {
		return false // gone
	}
	for _, fd := range fds {
		if l, err := os.Readlink(f.proc(p, "fd", fd.Name())); err == nil && l == want {
			return true
		}
	}
	return false
}

// containerOfCgroup splits a BuildKit container's cgroup,
// [<prefix>]/buildkit/<id>, into the prefix (a buildkitd in a container
// with a cgroup namespace of its own runs its containers below its own
// cgroup) and the container ID.
func containerOfCgroup(cg string) (prefix, cid string, ok bool) {
	parts := strings.Split(strings.Trim(cg, "/"), "/")
	if len(parts) < 2 || parts[len(parts)-2] != "buildkit" || parts[len(parts)-1] == "" {
		return "", "", false
	}
	if len(parts) > 2 {
		prefix = "/" + strings.Join(parts[:len(parts)-2], "/")
	}
	return prefix, parts[len(parts)-1], true
}

// frontendProcess decides whether pid is a build's frontend.
func (f *Finder) frontendProcess(pid uint32) (*Frontend, error) {
	p := strconv.FormatUint(uint64(pid), 10)
	cg, err := unifiedCgroup(f.proc(p, "cgroup"))
	if err != nil {
		return nil, fmt.Errorf("%w: process %d: %v", ErrNotFrontend, pid, err)
	}
	if _, err := steptag.StepOfCgroup(cg); err == nil {
		return nil, fmt.Errorf("%w: process %d is in build step cgroup %s", ErrNotFrontend, pid, cg)
	}
	prefix, cid, ok := containerOfCgroup(cg)
	if !ok {
		return nil, fmt.Errorf("%w: process %d is in cgroup %s, not a BuildKit container's", ErrNotFrontend, pid, cg)
	}
	// The container's init: its parent is outside the container (runc).
	ppid, err := parentOf(f.proc(p, "stat"))
	if err != nil {
		return nil, fmt.Errorf("%w: process %d: %v", ErrNotFrontend, pid, err)
	}
	if pcg, err := unifiedCgroup(f.proc(strconv.FormatUint(uint64(ppid), 10), "cgroup")); err == nil && pcg == cg {
		return nil, fmt.Errorf("%w: process %d is not its container's first process", ErrNotFrontend, pid)
	}
	spec, bundle, ns, root, err := f.bundleSpec(prefix, cid)
	if err != nil {
		return nil, fmt.Errorf("%w: process %d in container %s: %v", ErrNotFrontend, pid, cid, err)
	}
	env := map[string]string{}
	for _, kv := range spec.Process.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v // the last wins, as for the process
		}
	}
	if env["BUILDKIT_SESSION_ID"] == "" || env["BUILDKIT_EXPORTEDPRODUCT"] == "" {
		return nil, fmt.Errorf("%w: container %s was not started as a gateway frontend", ErrNotFrontend, cid)
	}
	traceID, err := rootfs.ParseTraceparent(env["TRACEPARENT"])
	if err != nil {
		return nil, fmt.Errorf("%w: container %s: %v", ErrNotFrontend, cid, err)
	}
	if len(spec.Process.Args) == 0 {
		return nil, fmt.Errorf("%w: container %s's bundle names no program", ErrNotFrontend, cid)
	}
	exe, dgst, err := f.executable(p, spec.Process.Args[0], env["PATH"], layersDev(ns, root))
	if err != nil {
		return nil, fmt.Errorf("%w: process %d: %v", ErrNotFrontend, pid, err)
	}
	return &Frontend{cgroup: cg, PID: pid, ContainerID: cid, TraceID: traceID, Executable: exe, ExecutableDigest: dgst, Bundle: bundle, Namespace: ns}, nil
}

type bundleSpec struct {
	Process struct {
		Args []string `json:"args"`
		Env  []string `json:"env"`
	} `json:"process"`
}

// bundleSpec reads the config.json buildkitd wrote beside the container's
// root mount, in the mount namespace of the buildkitd that runs the
// containers of cgroup prefix (rootfs.Resolver: the host's, or a root
// process's in a root-made cgroup, never one a user could make).
func (f *Finder) bundleSpec(prefix, cid string) (*bundleSpec, string, rootfs.Namespace, rootfs.Mount, error) {
	r := &rootfs.Resolver{Mountinfo: f.Mountinfo, CgroupRoot: f.CgroupRoot, Proc: f.Proc}
	nss, err := r.Namespaces(prefix)
	if err != nil {
		return nil, "", rootfs.Namespace{}, rootfs.Mount{}, err
	}
	suffix := "/" + cid + "/rootfs"
	for _, ns := range nss {
		mounts, err := ns.Mounts()
		if err != nil {
			return nil, "", ns, rootfs.Mount{}, err
		}
		for i := len(mounts) - 1; i >= 0; i-- {
			// A FUSE mount at that path is one an unprivileged user can make
			// (setuid fusermount): not a root buildkitd mounted.
			if !strings.HasSuffix(mounts[i].MountPoint, suffix) || strings.HasPrefix(mounts[i].FSType, "fuse") {
				continue
			}
			cfg := ns.Root + filepath.Join(filepath.Dir(mounts[i].MountPoint), "config.json")
			dt, err := os.ReadFile(cfg)
			if err != nil {
				return nil, "", ns, rootfs.Mount{}, fmt.Errorf("reading its OCI bundle: %w", err)
			}
			var s bundleSpec
			if err := json.Unmarshal(dt, &s); err != nil {
				return nil, "", ns, rootfs.Mount{}, fmt.Errorf("parsing %s: %w", cfg, err)
			}
			return &s, filepath.Dir(cfg), ns, mounts[i], nil
		}
	}
	where := "on the host"
	if prefix != "" {
		where = "in the mount namespace of cgroup " + prefix + "'s buildkitd"
	}
	return nil, "", rootfs.Namespace{}, rootfs.Mount{}, fmt.Errorf("no root mount */%s/rootfs %s: not a container buildkitd runs", cid, where)
}

// executable returns the path and digest of the program buildkitd started
// the container with (the bundle's process.args[0], resolved inside the
// container's root), after checking that the process still runs exactly
// that file. Its identity is what buildkitd started, never what the
// process turned into: a process that wrote its requests and then exec'd
// another program is refused, whichever order the tracer sees them in.
// layers (see layersDev), when not nil, is the container's root overlay:
// a program on it is cached under the file system of its layers.
func (f *Finder) executable(p, arg0, pathEnv string, layers *overlayDevs) (string, string, error) {
	root, err := os.Open(f.proc(p, "root"))
	if err != nil {
		return "", "", fmt.Errorf("opening its root: %w", err)
	}
	defer root.Close()
	var prog *os.File
	var name string
	for _, cand := range candidates(arg0, pathEnv) {
		fd, err := unix.Openat2(int(root.Fd()), strings.TrimPrefix(cand, "/"), &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
		if err == nil {
			prog, name = os.NewFile(uintptr(fd), cand), cand
			break
		}
	}
	if prog == nil {
		return "", "", fmt.Errorf("its container's program %q is not in its root", arg0)
	}
	defer prog.Close()
	exe, err := os.Open(f.proc(p, "exe"))
	if err != nil {
		return "", "", fmt.Errorf("opening its executable: %w", err)
	}
	defer exe.Close()
	pi, err1 := prog.Stat()
	ei, err2 := exe.Stat()
	if err := errors.Join(err1, err2); err != nil {
		return "", "", err
	}
	if !os.SameFile(pi, ei) {
		return "", "", fmt.Errorf("it no longer runs %s, the program its container was started with", name)
	}
	var k exeKey
	if st, ok := pi.Sys().(*syscall.Stat_t); ok {
		k = exeKey{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
		// Each container's root is an overlay mounted anew, with a device
		// number of its own; keyed by it, the same program (the frontend
		// image's) would be hashed again for every build. With all its
		// layers on one file system, overlayfs reports a file's inode
		// number, size and times on that file system: key by it.
		if layers != nil && st.Dev == layers.overlay {
			k.dev = layers.fs
		}
	}
	f.mu.Lock()
	d, ok := f.digests[k]
	f.mu.Unlock()
	if ok {
		return name, d, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, prog); err != nil {
		return "", "", fmt.Errorf("hashing %s: %w", name, err)
	}
	d = "sha256:" + hex.EncodeToString(h.Sum(nil))
	f.mu.Lock()
	if f.digests == nil || len(f.digests) > 1024 {
		f.digests = map[exeKey]string{}
	}
	f.digests[k] = d
	f.mu.Unlock()
	return name, d, nil
}

// overlayDevs are the device numbers of a container's root overlay and of
// the one file system all its layers are on.
type overlayDevs struct {
	overlay, fs uint64
}

// layersDev returns the devices of root, the overlay buildkitd mounted in
// ns as a container's root, when its upper and lower directories are all
// on one file system: overlayfs then keeps the inode numbers of that file
// system (rather than mapping them per layer) and reports the overlay's
// own device. It returns nil otherwise (not an overlay, layers on several
// file systems, a directory that cannot be read).
func layersDev(ns rootfs.Namespace, root rootfs.Mount) *overlayDevs {
	l, err := rootfs.Overlay(root)
	if err != nil {
		return nil
	}
	for _, o := range root.Options {
		if strings.HasPrefix(o, "datadir+=") {
			return nil // data-only layers, not checked here
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(ns.Root+root.MountPoint, &st); err != nil {
		return nil
	}
	d := &overlayDevs{overlay: st.Dev}
	for i, dir := range append([]string{l.Upper}, l.Lowers...) {
		if err := unix.Stat(ns.Root+dir, &st); err != nil {
			return nil
		}
		switch {
		case i == 0:
			d.fs = st.Dev
		case st.Dev != d.fs:
			return nil
		}
	}
	if d.fs == d.overlay {
		return nil // not an overlay's own device after all
	}
	return d
}

// candidates lists where a program name resolves: itself when it has a
// slash, else each PATH entry.
func candidates(arg0, pathEnv string) []string {
	if strings.Contains(arg0, "/") {
		return []string{arg0}
	}
	if pathEnv == "" {
		pathEnv = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	var out []string
	for _, d := range strings.Split(pathEnv, ":") {
		if d != "" {
			out = append(out, d+"/"+arg0)
		}
	}
	return out
}

// unifiedCgroup returns the cgroup2 path of a /proc/<pid>/cgroup file.
func unifiedCgroup(file string) (string, error) {
	dt, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(dt), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			return rest, nil
		}
	}
	return "", errors.New("no cgroup2 membership")
}

// parentOf reads the parent PID from /proc/<pid>/stat; the command name
// in parentheses may itself hold spaces and parentheses.
func parentOf(file string) (uint32, error) {
	dt, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(dt), ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	fields := strings.Fields(string(dt[i+1:]))
	if len(fields) < 2 {
		return 0, errors.New("malformed stat")
	}
	v, err := strconv.ParseUint(fields[1], 10, 32)
	return uint32(v), err
}
