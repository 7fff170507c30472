package fsdiff

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/buildtrace/buildtrace/pkg/trace"
)

// FromUpper computes the diff of an overlay upper directory against its
// lower directories, the way BuildKit's overlay differ
// (util/overlay.WriteUpperdir) turns the same directory into a layer tar.
// Diff.Digest covers every entry; Diff.Changes is capped at
// opts.MaxChanges with Diff.Truncated set.
func FromUpper(ctx context.Context, upper string, opts Options) (trace.Diff, error) {
	w := &upperWalk{
		ctx:     ctx,
		upper:   filepath.Clean(upper),
		lower:   newLowerFS(opts.Lowers),
		exclude: cleanExcludes(opts.Exclude),
	}
	defer w.shortenRoots()()
	// runc makes a mount point at its target resolved in the root file
	// system the step started on (symlinks followed inside the root), and
	// BuildKit's stub cleaner removes it there: exclude that path too.
	for _, x := range w.exclude {
		r, err := w.lower.resolve(x)
		if err != nil {
			return trace.Diff{Error: err.Error()}, err
		}
		// A target that resolves to the root is no mount point runc
		// makes; excluding it would hide the whole step.
		if r != x && r != "/" && !slices.Contains(w.exclude, r) {
			w.exclude = append(w.exclude, r)
		}
	}
	if err := w.walk(); err != nil {
		return trace.Diff{Error: err.Error()}, err
	}
	sortEntries(w.entries)
	d := trace.Diff{Digest: digest(w.entries)}
	max := opts.MaxChanges
	if max <= 0 {
		max = DefaultMaxChanges
	}
	n := len(w.entries)
	if n > max {
		n = max
		d.Truncated = true
	}
	d.Changes = make([]trace.FileChange, 0, n)
	for _, e := range w.entries[:n] {
		d.Changes = append(d.Changes, e.change(true))
	}
	return d, nil
}

// shortenRoots makes the walk reach the upper and lower directories
// through descriptors opened on them (/proc/self/fd/<n>/.), so a path's
// length is counted from there and not from the tracer's way to the
// directory: a buildkitd in a container is read through /proc/<pid>/root/…,
// longer than buildkitd's own path, and a path that fits in PATH_MAX for
// buildkitd (which committed the snapshot) must fit for the walk too. A
// directory that cannot be opened keeps its path (the walk says why). It
// returns what closes the descriptors.
func (w *upperWalk) shortenRoots() func() {
	var fds []int
	short := func(p string) string {
		fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return p
		}
		fds = append(fds, fd)
		return "/proc/self/fd/" + strconv.Itoa(fd) + "/."
	}
	w.upper = short(w.upper)
	for i, d := range w.lower.layers {
		w.lower.layers[i] = short(d)
	}
	return func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
}

type upperWalk struct {
	ctx     context.Context
	upper   string
	lower   *lowerFS
	exclude []string
	entries []*entry
	buf     []byte
}

func (w *upperWalk) walk() error {
	if fi, err := os.Lstat(w.upper); err != nil {
		return fmt.Errorf("reading upper dir: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("upper dir %s is not a directory", w.upper)
	}
	_, err := w.dir("/", false)
	return err
}

// stubParent reports whether the new directory p is above a mount point.
// BuildKit made it for the mount's stub, and removes it with the stub
// after the run when nothing else is in it (executor.MountStubsCleaner,
// recursive for every ExecOp the llb package makes), possibly while this
// walk reads the upper dir. So it is in the layer only when it holds an
// entry or a socket (which the tar writer drops).
func (w *upperWalk) stubParent(p string) bool {
	return slices.ContainsFunc(w.exclude, func(x string) bool { return strings.HasPrefix(x, p+"/") })
}

// dir walks the upper directory p (container path) and reports whether p
// holds a socket. Inside an opaque directory whiteouts mean nothing:
// BuildKit diffs such a directory against the lower with a view of the
// upper dir that hides them.
func (w *upperWalk) dir(p string, inOpaque bool) (sockets bool, err error) {
	if err := w.ctx.Err(); err != nil {
		return false, err
	}
	full := filepath.Join(w.upper, p)
	names, err := readNames(full)
	if errors.Is(err, fs.ErrNotExist) && w.stubParent(p) {
		return false, nil // BuildKit removed it, empty, after the run
	} else if err != nil {
		return false, fmt.Errorf("reading upper dir %s: %w", full, err)
	}
	for _, name := range names {
		cp := path.Join(p, name)
		if excluded(cp, w.exclude) {
			continue
		}
		fp := filepath.Join(w.upper, cp)
		fi, err := os.Lstat(fp)
		if errors.Is(err, fs.ErrNotExist) && w.stubParent(cp) {
			continue // a mount stub's parent that BuildKit removed as this walk read
		} else if err != nil {
			return false, fmt.Errorf("upper dir: %w", err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		switch {
		case fi.IsDir():
			if v, _ := getxattr(fp, "trusted.overlay.redirect"); len(v) > 0 {
				return false, fmt.Errorf("upper dir %s: overlay redirect_dir is in use, which the layer differ does not support", fp)
			}
			_, lfi, found, err := w.lower.lookup(cp)
			if err != nil {
				return false, err
			}
			// A directory over a lower non-directory deletes it; the
			// layer tar has only the directory, which an extractor puts
			// in the non-directory's place (docs/diff-digest.md).
			if found && !lfi.IsDir() {
				w.entries = append(w.entries, &entry{path: cp, kind: kindDeleted})
			}
			before := len(w.entries)
			opaque := inOpaque
			if !inOpaque && found && isOpaque(fp) {
				opaque = true
				if err := w.opaqueDeletes(cp); err != nil {
					return false, err
				}
			}
			sockets, err := w.dir(cp, opaque)
			if err != nil {
				return false, err
			}
			// The directory itself: when it changes a lower directory's
			// mode or owner, or is new and stays in the layer.
			e := &entry{path: cp, kind: kindDir, mode: st.Mode & 07777, uid: st.Uid, gid: st.Gid}
			if overDir := found && lfi.IsDir(); overDir {
				ls := lfi.Sys().(*syscall.Stat_t)
				if (dirMeta{mode: ls.Mode & 07777, uid: ls.Uid, gid: ls.Gid}) != e.dirMeta() {
					w.entries = append(w.entries, e)
				}
			} else if len(w.entries) > before || sockets || !w.stubParent(cp) && !(runtimeMountPoint(cp) && e.dirMeta() == runtimeMountMeta) {
				e.created = true
				w.entries = append(w.entries, e)
			}
		case isWhiteout(st):
			if inOpaque {
				continue
			}
			// A whiteout over nothing is skipped, as BuildKit does.
			if _, _, found, err := w.lower.lookup(cp); err != nil {
				return false, err
			} else if found {
				w.entries = append(w.entries, &entry{path: cp, kind: kindDeleted})
			}
		case fi.Mode()&fs.ModeSocket != 0:
			// The layer tar writer drops sockets.
			sockets = true
		default:
			if err := w.present(cp, fp, fi, st); err != nil {
				return false, err
			}
		}
	}
	return sockets, nil
}

// present records a non-directory upper entry unless it is the same as the
// lower one (a copy-up without change), which BuildKit leaves out.
func (w *upperWalk) present(cp, fp string, fi fs.FileInfo, st *syscall.Stat_t) error {
	if v, _ := getxattr(fp, "trusted.overlay.metacopy"); v != nil {
		return fmt.Errorf("upper dir %s: overlay metacopy file, content lives in a lower layer (metacopy=on is not supported)", fp)
	}
	lp, lfi, found, err := w.lower.lookup(cp)
	if err != nil {
		return err
	}
	if found {
		same, err := sameDirent(lfi, fi, lp, fp)
		if err != nil {
			return err
		}
		if same {
			return nil
		}
	}
	e := &entry{
		path:    cp,
		mode:    st.Mode & 07777,
		uid:     st.Uid,
		gid:     st.Gid,
		created: !found,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e.kind = kindFile
		e.size = st.Size
		sum, err := w.hashFile(fp)
		if err != nil {
			return err
		}
		e.sha256 = sum
	case unix.S_IFLNK:
		e.kind = kindSymlink
		if e.link, err = os.Readlink(fp); err != nil {
			return fmt.Errorf("upper dir: %w", err)
		}
	case unix.S_IFCHR, unix.S_IFBLK:
		e.kind = kindChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			e.kind = kindBlock
		}
		e.major, e.minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
	case unix.S_IFIFO:
		e.kind = kindFifo
	default:
		return fmt.Errorf("upper dir %s: unexpected file type %v", fp, fi.Mode().Type())
	}
	caps, err := getxattr(fp, "security.capability")
	if err != nil {
		return fmt.Errorf("upper dir %s: reading security.capability: %w", fp, err)
	}
	e.caps = caps
	w.entries = append(w.entries, e)
	return nil
}

// opaqueDeletes records what an opaque upper directory p hides: every
// path of the merged lower below p that the upper directory does not
// have, stopping at the first missing directory (as a double-walk differ
// emits one deletion per removed subtree).
func (w *upperWalk) opaqueDeletes(p string) error {
	lowerNames, err := w.lower.readDir(p)
	if err != nil {
		return err
	}
	for _, name := range lowerNames {
		cp := path.Join(p, name)
		if excluded(cp, w.exclude) {
			continue
		}
		ufi, err := os.Lstat(filepath.Join(w.upper, cp))
		if errors.Is(err, fs.ErrNotExist) || (err == nil && isWhiteout(ufi.Sys().(*syscall.Stat_t))) {
			w.entries = append(w.entries, &entry{path: cp, kind: kindDeleted})
			continue
		} else if err != nil {
			return fmt.Errorf("upper dir: %w", err)
		}
		if !ufi.IsDir() {
			continue // a non-directory replaces whatever was below
		}
		if _, lfi, _, err := w.lower.lookup(cp); err != nil {
			return err
		} else if lfi != nil && lfi.IsDir() {
			if err := w.opaqueDeletes(cp); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *upperWalk) hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("upper dir: %w", err)
	}
	defer f.Close()
	if w.buf == nil {
		w.buf = make([]byte, 128*1024)
	}
	h := sha256.New()
	// Hide (*os.File).WriteTo: its splice/sendfile attempts cost more
	// than they save on a hash.
	if _, err := io.CopyBuffer(h, struct{ io.Reader }{f}, w.buf); err != nil {
		return "", fmt.Errorf("upper dir: hashing %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// lowerFS resolves paths in the merged view of overlay lower layers.
type lowerFS struct {
	layers []string
	dirs   map[string][]string // container dir -> layer dirs that make it up, top first
}

func newLowerFS(layers []string) *lowerFS {
	l := &lowerFS{dirs: map[string][]string{}}
	for _, d := range layers {
		l.layers = append(l.layers, filepath.Clean(d))
	}
	return l
}

// layerDirs returns the layer directories whose entries make up the
// merged directory p, topmost first; nil if p is not a directory in the
// merged view.
func (l *lowerFS) layerDirs(p string) ([]string, error) {
	if ds, ok := l.dirs[p]; ok {
		return ds, nil
	}
	var parents []string
	if p == "/" {
		parents = l.layers
	} else {
		var err error
		if parents, err = l.layerDirs(path.Dir(p)); err != nil {
			return nil, err
		}
	}
	var ds []string
	for _, layer := range parents {
		fp := layer
		if p != "/" {
			fp = filepath.Join(layer, path.Base(p))
		}
		fi, err := os.Lstat(fp)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("lower dir: %w", err)
		}
		if !fi.IsDir() {
			break // a whiteout or non-directory hides the layers below
		}
		ds = append(ds, fp)
		if p != "/" && isOpaque(fp) {
			break
		}
	}
	l.dirs[p] = ds
	return ds, nil
}

// lookup finds p in the merged lower view: the layer file that provides it
// and its FileInfo.
func (l *lowerFS) lookup(p string) (string, fs.FileInfo, bool, error) {
	if len(l.layers) == 0 || p == "/" {
		return "", nil, false, nil
	}
	ds, err := l.layerDirs(path.Dir(p))
	if err != nil {
		return "", nil, false, err
	}
	for _, d := range ds {
		fp := filepath.Join(d, path.Base(p))
		fi, err := os.Lstat(fp)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return "", nil, false, fmt.Errorf("lower dir: %w", err)
		}
		if isWhiteout(fi.Sys().(*syscall.Stat_t)) {
			return "", nil, false, nil
		}
		return fp, fi, true, nil
	}
	return "", nil, false, nil
}

// resolve follows the symlinks of the merged lower view in p, inside the
// root as runc does with a mount target (securejoin: ".." stops at the
// root, a missing component is taken as it is).
func (l *lowerFS) resolve(p string) (string, error) {
	r, err := resolveIn(p, func(cur string) (string, bool, error) {
		lp, fi, found, err := l.lookup(cur)
		if err != nil || !found || fi.Mode()&fs.ModeSymlink == 0 {
			return "", false, err
		}
		target, err := os.Readlink(lp)
		if err != nil {
			return "", false, fmt.Errorf("lower dir: %w", err)
		}
		return target, true, nil
	})
	if err != nil {
		return "", fmt.Errorf("resolving mount target %s: %w", p, err)
	}
	return r, nil
}

// readDir lists the merged lower directory p, sorted.
func (l *lowerFS) readDir(p string) ([]string, error) {
	ds, err := l.layerDirs(p)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{} // name -> present (false: whited out)
	for _, d := range ds {
		names, err := readNames(d)
		if err != nil {
			return nil, fmt.Errorf("lower dir: %w", err)
		}
		for _, n := range names {
			if _, ok := seen[n]; ok {
				continue
			}
			fi, err := os.Lstat(filepath.Join(d, n))
			if err != nil {
				return nil, fmt.Errorf("lower dir: %w", err)
			}
			seen[n] = !isWhiteout(fi.Sys().(*syscall.Stat_t))
		}
	}
	var out []string
	for n, present := range seen {
		if present {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

func isWhiteout(st *syscall.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

func isOpaque(p string) bool {
	for _, k := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
		if v, _ := getxattr(p, k); len(v) == 1 && v[0] == 'y' {
			return true
		}
	}
	return false
}

// getxattr returns nil, nil when the attribute is absent.
func getxattr(p, name string) ([]byte, error) {
	buf := make([]byte, 128)
	for {
		n, err := unix.Lgetxattr(p, name, buf)
		switch {
		case err == nil:
			return buf[:n], nil
		case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP):
			return nil, nil
		case errors.Is(err, unix.ERANGE):
			sz, err := unix.Lgetxattr(p, name, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz)
		default:
			return nil, err
		}
	}
}

// sameDirent reports whether the upper entry is an unchanged copy of the
// lower one, with the rules of BuildKit's overlay differ (sameDirent) and
// continuity's double-walk differ (sameFile): same mode, owner, device
// and capabilities, and same size and mtime; when both mtimes have zero
// nanoseconds (possibly truncated by a tar) the content decides.
func sameDirent(lfi, ufi fs.FileInfo, lp, up string) (bool, error) {
	ls, us := lfi.Sys().(*syscall.Stat_t), ufi.Sys().(*syscall.Stat_t)
	if ls.Mode != us.Mode || ls.Uid != us.Uid || ls.Gid != us.Gid || ls.Rdev != us.Rdev {
		return false, nil
	}
	lc, err := getxattr(lp, "security.capability")
	if err != nil {
		return false, fmt.Errorf("lower dir %s: reading security.capability: %w", lp, err)
	}
	uc, err := getxattr(up, "security.capability")
	if err != nil {
		return false, fmt.Errorf("upper dir %s: reading security.capability: %w", up, err)
	}
	if !bytes.Equal(lc, uc) {
		return false, nil
	}
	if lfi.Size() != ufi.Size() {
		return false, nil
	}
	t1, t2 := lfi.ModTime(), ufi.ModTime()
	if t1.Unix() != t2.Unix() {
		return false, nil
	}
	if t1.Nanosecond() != 0 || t2.Nanosecond() != 0 {
		return t1.Nanosecond() == t2.Nanosecond(), nil
	}
	if lfi.Mode()&fs.ModeSymlink != 0 {
		t1, err := os.Readlink(lp)
		if err != nil {
			return false, fmt.Errorf("lower dir: %w", err)
		}
		t2, err := os.Readlink(up)
		if err != nil {
			return false, fmt.Errorf("upper dir: %w", err)
		}
		return t1 == t2, nil
	}
	if !lfi.Mode().IsRegular() || lfi.Size() == 0 {
		return true, nil
	}
	return sameContent(lp, up)
}

func sameContent(p1, p2 string) (bool, error) {
	f1, err := os.Open(p1)
	if err != nil {
		return false, fmt.Errorf("lower dir: %w", err)
	}
	defer f1.Close()
	f2, err := os.Open(p2)
	if err != nil {
		return false, fmt.Errorf("upper dir: %w", err)
	}
	defer f2.Close()
	b1, b2 := make([]byte, 32*1024), make([]byte, 32*1024)
	for {
		n1, err1 := io.ReadFull(f1, b1)
		n2, err2 := io.ReadFull(f2, b2)
		if !bytes.Equal(b1[:n1], b2[:n2]) {
			return false, nil
		}
		end1 := err1 == io.EOF || err1 == io.ErrUnexpectedEOF
		end2 := err2 == io.EOF || err2 == io.ErrUnexpectedEOF
		if err1 != nil && !end1 {
			return false, fmt.Errorf("lower dir: %w", err1)
		}
		if err2 != nil && !end2 {
			return false, fmt.Errorf("upper dir: %w", err2)
		}
		if end1 || end2 {
			return end1 == end2, nil
		}
	}
}
