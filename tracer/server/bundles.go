package server

import (
	"os"
	"path/filepath"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/buildtrace/buildtrace/tracer/rootfs"
)

// bundleWatch reads each container's OCI bundle and root mount the moment
// buildkitd has written them, before runc starts the container: a RUN
// that lasts a millisecond is otherwise gone, bundle and mount with it,
// when a loaded host gets round to the cgroup's creation. It watches
// BuildKit's executor directories with inotify: a new bundle directory,
// then its config.json closed after writing (the root is mounted by then).
type bundleWatch struct {
	mu    sync.Mutex
	fd    int
	err   error
	dirs  map[string]*rootfs.Namespace // executor directories watched, and the mount namespace they are in
	wds   map[int32]string             // watch descriptor → directory
	found map[string]found1            // container ID → what was read
}

type found1 struct {
	l  rootfs.Layout
	at time.Time
}

const bundleKeep = 10 * time.Minute

// watchExecutorOf starts watching the executor directory a bundle lives in,
// in the mount namespace it was found in.
func (s *Server) watchExecutorOf(l rootfs.Layout) {
	bundle := l.Bundle
	if bundle == "" || l.Namespace.Mountinfo == "" {
		return
	}
	dir := filepath.Dir(bundle)
	w := &s.bundles
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dirs[dir] != nil || w.err != nil {
		return
	}
	if w.dirs == nil {
		fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
		if err != nil {
			w.err = err
			s.log.Warn("watching BuildKit's bundles", "err", err)
			return
		}
		w.fd, w.dirs, w.wds, w.found = fd, map[string]*rootfs.Namespace{}, map[int32]string{}, map[string]found1{}
		go s.readBundleEvents()
	}
	wd, err := unix.InotifyAddWatch(w.fd, dir, unix.IN_CREATE|unix.IN_ONLYDIR)
	if err != nil {
		s.log.Warn("watching BuildKit's bundles", "dir", dir, "err", err)
		return
	}
	ns := l.Namespace
	w.dirs[dir] = &ns
	w.wds[int32(wd)] = dir
	s.log.Info("watching BuildKit's container bundles", "dir", dir)
}

// bundleOf returns what was read of a container's bundle when it was
// written, if anything.
func (s *Server) bundleOf(containerID string) (rootfs.Layout, bool) {
	w := &s.bundles
	w.mu.Lock()
	defer w.mu.Unlock()
	f, ok := w.found[containerID]
	return f.l, ok
}

func (s *Server) readBundleEvents() {
	w := &s.bundles
	buf := make([]byte, 64*1024)
	for {
		n, err := unix.Read(w.fd, buf)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			s.log.Warn("reading bundle events", "err", err)
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := ""
			if ev.Len > 0 {
				raw := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				for i, c := range raw {
					if c == 0 {
						raw = raw[:i]
						break
					}
				}
				name = string(raw)
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
			s.bundleEvent(ev.Wd, ev.Mask, name)
		}
	}
}

func (s *Server) bundleEvent(wd int32, mask uint32, name string) {
	w := &s.bundles
	w.mu.Lock()
	dir, ok := w.wds[wd]
	ns := w.dirs[dir]
	exec := ok && ns != nil
	if !exec && ok {
		ns = w.dirs[filepath.Dir(dir)] // a bundle's executor directory
	}
	w.mu.Unlock()
	if !ok {
		return
	}
	switch {
	case mask&unix.IN_IGNORED != 0:
		w.mu.Lock()
		delete(w.wds, wd)
		w.mu.Unlock()
	case exec && mask&unix.IN_CREATE != 0 && mask&unix.IN_ISDIR != 0:
		// A new bundle: watch for its config.json, and read it now if it
		// was already written.
		bundle := filepath.Join(dir, name)
		bwd, err := unix.InotifyAddWatch(w.fd, bundle, unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO)
		if err == nil {
			w.mu.Lock()
			w.wds[int32(bwd)] = bundle
			w.mu.Unlock()
		}
		if _, err := os.Stat(filepath.Join(bundle, "config.json")); err == nil {
			s.readBundle(ns, bundle)
		}
	case !exec && name == "config.json" && ns != nil:
		s.readBundle(ns, dir)
		_, _ = unix.InotifyRmWatch(w.fd, uint32(wd))
	}
}

func (s *Server) readBundle(ns *rootfs.Namespace, bundle string) {
	cid := filepath.Base(bundle)
	l, err := ns.FromBundle(cid)
	if err != nil {
		return
	}
	w := &s.bundles
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, f := range w.found {
		if now.Sub(f.at) > bundleKeep {
			delete(w.found, k)
		}
	}
	w.found[cid] = found1{l: l, at: now}
}
