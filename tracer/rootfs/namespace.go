package rootfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Namespace is a mount namespace in which buildkitd mounted its containers'
// roots and wrote their bundles.
type Namespace struct {
	Mountinfo string // its mount table
	// Root opens its paths from the tracer: "" when it is the tracer's own
	// namespace, /proc/<pid>/root of a process in it otherwise.
	Root string
}

// FromBundle reads container id's bundle and root overlay in n.
func (n Namespace) FromBundle(containerID string) (Layout, error) {
	mounts, err := readMountinfo(n.Mountinfo)
	if err != nil {
		return Layout{}, err
	}
	l, err := findBundle(mounts, containerID, n.Root)
	l.Namespace = n
	return l, err
}

// Mounts reads n's mount table.
func (n Namespace) Mounts() ([]Mount, error) { return readMountinfo(n.Mountinfo) }

// Resolver finds the mount namespace of the buildkitd that ran a container.
// A buildkitd on the host mounts in the host's namespace, which the tracer
// reads as its own (a tracer in a container sees buildkitd's mounts by
// mount propagation, as deploy/kubernetes arranges). A buildkitd in a
// container (buildx's docker-container driver) mounts in its container's
// namespace, which only its processes show; the container's cgroup, the
// prefix of its build containers' cgroups (pkg/steptag), names them.
//
// Only a process that is root in the host's user namespace, in a cgroup
// made by root, is taken for a buildkitd: an unprivileged user can make
// mount namespaces (with user namespaces) and cgroups (where delegated),
// and so could show the tracer a bundle of their own.
type Resolver struct {
	Mountinfo  string // the tracer's own mount table; default /proc/self/mountinfo
	CgroupRoot string // cgroup2 mount; default /sys/fs/cgroup/unified
	Proc       string // default /proc
}

func (r *Resolver) proc(parts ...string) string {
	root := r.Proc
	if root == "" {
		root = "/proc"
	}
	return filepath.Join(append([]string{root}, parts...)...)
}

// Namespaces lists the mount namespaces where the containers of cgroup
// prefix ("" for the hierarchy's root: the tracer's own) may be mounted.
func (r *Resolver) Namespaces(prefix string) ([]Namespace, error) {
	own := r.Mountinfo
	if own == "" {
		own = "/proc/self/mountinfo"
	}
	if prefix == "" {
		// A buildkitd on the host: its mounts must be in the tracer's own
		// table (a tracer in a container gets them by mount propagation,
		// docs/deploy.md).
		return []Namespace{{Mountinfo: own}}, nil
	}
	selfMnt, _ := os.Readlink(r.proc("self", "ns", "mnt"))
	cgRoot := r.CgroupRoot
	if cgRoot == "" {
		cgRoot = "/sys/fs/cgroup/unified"
	}
	dir := filepath.Join(cgRoot, filepath.Clean("/"+prefix))
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("buildkitd's cgroup %s: %w", prefix, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != 0 {
		return nil, fmt.Errorf("cgroup %s was not made by root: not a buildkitd's container", prefix)
	}
	procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("buildkitd's cgroup %s: %w", prefix, err)
	}
	selfUser, err := os.Readlink(r.proc("self", "ns", "user"))
	if err != nil {
		return nil, fmt.Errorf("reading the tracer's user namespace: %w", err)
	}
	type cand struct {
		pid  string
		init bool // its parent is outside the cgroup: the container's first process
	}
	byMnt := map[string]cand{}
	var order []string
	for _, f := range strings.Fields(string(procs)) {
		if _, err := strconv.ParseUint(f, 10, 32); err != nil {
			continue
		}
		mnt, err := os.Readlink(r.proc(f, "ns", "mnt"))
		if err != nil || mnt == selfMnt {
			continue
		}
		if u, err := os.Readlink(r.proc(f, "ns", "user")); err != nil || u != selfUser {
			continue
		}
		if !rootProcess(r.proc(f, "status")) {
			continue
		}
		c := cand{pid: f, init: r.parentOutside(f, prefix)}
		have, seen := byMnt[mnt]
		if !seen {
			order = append(order, mnt)
		}
		if !seen || c.init && !have.init {
			byMnt[mnt] = c
		}
	}
	if len(order) == 0 {
		return nil, fmt.Errorf("no process of cgroup %s is root in the host's user namespace in a mount namespace of its own: no buildkitd there", prefix)
	}
	var out []Namespace
	for _, m := range order {
		c := byMnt[m]
		// The container's first process (buildkitd) outlives the runc
		// processes beside it: its /proc/<pid>/root stays valid for as
		// long as the containers it runs.
		out = append(out, Namespace{Mountinfo: r.proc(c.pid, "mountinfo"), Root: r.proc(c.pid, "root")})
	}
	return out, nil
}

// parentOutside reports whether pid's parent is in another cgroup than
// prefix.
func (r *Resolver) parentOutside(pid, prefix string) bool {
	dt, err := os.ReadFile(r.proc(pid, "stat"))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(dt), ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(string(dt[i+1:]))
	if len(f) < 2 {
		return false
	}
	cg, err := os.ReadFile(r.proc(f[1], "cgroup"))
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(cg), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			return rest != prefix
		}
	}
	return true
}

// rootProcess reports whether a /proc/<pid>/status shows real, effective,
// saved and file-system uid 0.
func rootProcess(status string) bool {
	dt, err := os.ReadFile(status)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(dt), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(rest)
			if len(f) != 4 {
				return false
			}
			for _, u := range f {
				if u != "0" {
					return false
				}
			}
			return true
		}
	}
	return false
}

// FromBundle finds container id of cgroup prefix in each namespace where it
// may be mounted, and returns the first layout found (or the last error).
func (r *Resolver) FromBundle(prefix, containerID string) (Layout, error) {
	nss, err := r.Namespaces(prefix)
	if err != nil {
		return Layout{}, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	var l Layout
	for _, n := range nss {
		l, err = n.FromBundle(containerID)
		if err == nil || !errors.Is(err, ErrNotFound) {
			return l, err
		}
	}
	return l, err
}

// FromProcess reads the root of a container process from its own mount
// table (see FromProcess), with the overlay's directories opened in the
// namespace of the buildkitd of cgroup prefix.
func (r *Resolver) FromProcess(prefix string, pid uint32) (Layout, error) {
	l, err := FromProcess(pid)
	if err != nil {
		return l, err
	}
	nss, err := r.Namespaces(prefix)
	if err != nil {
		return Layout{}, err
	}
	n := nss[0]
	l.inRoot(n.Root)
	l.Root = n.Root
	return l, nil
}
