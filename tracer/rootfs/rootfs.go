// Package rootfs finds the overlay layers of a BuildKit container's root
// file system, so the tracer can read the step's diff from the upper
// directory when the container ends.
//
// BuildKit's runc executor mounts the root on the host at
// <root>/executor/<container id>/rootfs and writes the OCI bundle's
// config.json beside it before it starts runc; FromBundle reads both. When
// buildkitd runs in another mount namespace that mount is not visible here,
// and FromProcess reads the container process's own mount table instead.
package rootfs

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Layout is where a container's root file system lives.
type Layout struct {
	Upper  string
	Lowers []string // top first, as overlayfs lists them
	// Exclude holds the container's mount points: runc leaves empty stubs
	// for them in the upper directory, which BuildKit removes.
	Exclude []string
	// Bundle is the OCI bundle directory, when the layout came from it.
	Bundle string
	// Root opens the paths of the mount namespace the layout was read in
	// from the tracer's: "" for the tracer's own, /proc/<pid>/root for
	// another's. Upper, Lowers and Bundle carry it already; paths read
	// from the bundle (mount sources) need it prepended.
	Root string
	// Namespace is where the bundle was found (zero when not read from a
	// bundle): the other containers of its executor directory are too.
	Namespace Namespace
	// TraceID is the build the container belongs to: the trace ID of the
	// last TRACEPARENT in the bundle's process.env (BuildKit appends its
	// own after the user's ENV; containerd's WithEnv replaces an earlier
	// one), "" when there is none. TraceErr says why it is empty.
	TraceID  string
	TraceErr error
	// NoProxy holds the entries of the bundle's NO_PROXY and no_proxy,
	// where the buildtrace frontend puts each step's nonce.
	NoProxy []string
	// Powers says what the bundle gives the container that lets it get
	// out of what the tracer follows (RUN --security=insecure).
	Powers []string
}

// Mount is one line of a mountinfo file.
type Mount struct {
	MountPoint string
	FSType     string
	Source     string
	Options    []string // super-block options, unescaped
}

// ParseMountinfo reads a /proc/<pid>/mountinfo file.
func ParseMountinfo(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024) // overlay lines with many layers are long
	for sc.Scan() {
		fields := strings.Split(sc.Text(), " ")
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || len(fields) < sep+4 {
			return nil, fmt.Errorf("malformed mountinfo line %q", sc.Text())
		}
		out = append(out, Mount{
			MountPoint: unescape(fields[4]),
			FSType:     fields[sep+1],
			Source:     unescape(fields[sep+2]),
			Options:    splitOptions(fields[sep+3]),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mountinfo: %w", err)
	}
	return out, nil
}

// splitOptions splits super-block options on commas and undoes the
// kernel's octal escapes. Overlay paths with a comma are escaped by the
// kernel as \054, so splitting before unescaping is safe.
func splitOptions(s string) []string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = unescape(p)
	}
	return parts
}

// unescape undoes mountinfo's \ooo escapes (space, tab, newline,
// backslash, and whatever else the file system escapes).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// splitLowers splits a lowerdir value on the colons that are not escaped
// with a backslash (overlayfs's own escape for a colon in a path).
func splitLowers(v string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(v); i++ {
		switch {
		case v[i] == '\\' && i+1 < len(v):
			i++
			cur.WriteByte(v[i])
		case v[i] == ':':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(v[i])
		}
	}
	return append(out, cur.String())
}

// Overlay returns the upper and lower directories of an overlay mount.
func Overlay(m Mount) (Layout, error) {
	if m.FSType != "overlay" {
		return Layout{}, fmt.Errorf("mount at %s is %s, not overlay", m.MountPoint, m.FSType)
	}
	var l Layout
	for _, o := range m.Options {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "upperdir":
			l.Upper = v
		case "lowerdir":
			l.Lowers = append(l.Lowers, splitLowers(v)...)
		case "lowerdir+": // new mount API: one layer per option
			l.Lowers = append(l.Lowers, v)
		}
	}
	if l.Upper == "" {
		return Layout{}, fmt.Errorf("overlay at %s has no upperdir (read-only root)", m.MountPoint)
	}
	// containerd passes lowerdirs relative to their common parent when the
	// option string would not fit in a page; the snapshots sit side by
	// side, so the upper's grandparent is that parent.
	base := filepath.Dir(filepath.Dir(l.Upper))
	for i, p := range l.Lowers {
		if !filepath.IsAbs(p) {
			l.Lowers[i] = filepath.Join(base, p)
		}
	}
	return l, nil
}

// FindBundle finds the overlay root of BuildKit container id in mounts and
// reads the bundle's config.json beside it for the mount points and the
// build's trace ID. On an error the returned Layout still carries what was
// read of the bundle (TraceID, TraceErr).
func FindBundle(mounts []Mount, containerID string) (Layout, error) {
	return findBundle(mounts, containerID, "")
}

// findBundle is FindBundle in a mount namespace whose paths the tracer
// opens under root.
func findBundle(mounts []Mount, containerID, root string) (Layout, error) {
	suffix := "/" + containerID + "/rootfs"
	for i := len(mounts) - 1; i >= 0; i-- { // the latest mount wins
		m := mounts[i]
		if m.FSType != "overlay" || !strings.HasSuffix(m.MountPoint, suffix) {
			continue
		}
		// The bundle is read even when the overlay cannot be used: it
		// still names the container's build.
		dir := root + filepath.Dir(m.MountPoint)
		b, err := ReadBundle(filepath.Join(dir, "config.json"))
		if err != nil {
			return Layout{Bundle: dir, Root: root, TraceErr: err}, err
		}
		l, err := Overlay(m)
		l.inRoot(root)
		l.Bundle, l.Root = dir, root
		l.Exclude = b.Mounts
		l.TraceID, l.TraceErr, l.NoProxy, l.Powers = b.TraceID, b.TraceErr, b.NoProxy, b.Powers
		return l, err
	}
	return Layout{}, fmt.Errorf("no overlay mount at */%s/rootfs: %w", containerID, ErrNotFound)
}

// inRoot makes the overlay's directories openable from the tracer.
func (l *Layout) inRoot(root string) {
	if root == "" {
		return
	}
	if l.Upper != "" {
		l.Upper = root + l.Upper
	}
	for i, p := range l.Lowers {
		l.Lowers[i] = root + p
	}
}

// ErrNotFound is returned when there is no mount to read.
var ErrNotFound = errors.New("root mount not found")

// Bundle is what the tracer takes from an OCI bundle's config.json.
type Bundle struct {
	Mounts   []string // mount destinations, cleaned, "/" left out
	TraceID  string   // see Layout.TraceID
	TraceErr error    // why TraceID is empty
	NoProxy  []string // see Layout.NoProxy
	Powers   []string // see Layout.Powers
}

// escapeCaps are the capabilities that let a process leave the cgroup,
// namespaces and hooks the tracer follows it by, or change the tracer
// itself (BuildKit's default set has none of them).
var escapeCaps = []string{"CAP_SYS_ADMIN", "CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_DAC_READ_SEARCH"}

// ReadBundle reads an OCI bundle config. Of the process environment only
// TRACEPARENT and NO_PROXY (no secret: the proxy exclusions) are looked at;
// nothing else of it is kept or returned.
func ReadBundle(configPath string) (Bundle, error) {
	b, err := os.ReadFile(configPath)
	if err != nil {
		return Bundle{}, fmt.Errorf("reading OCI bundle config: %w", err)
	}
	var spec struct {
		Process struct {
			Env          []string `json:"env"`
			Capabilities struct {
				Bounding  []string `json:"bounding"`
				Effective []string `json:"effective"`
				Permitted []string `json:"permitted"`
			} `json:"capabilities"`
		} `json:"process"`
		Mounts []struct {
			Destination string   `json:"destination"`
			Type        string   `json:"type"`
			Options     []string `json:"options"`
		} `json:"mounts"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return Bundle{}, fmt.Errorf("parsing OCI bundle config %s: %w", configPath, err)
	}
	var out Bundle
	for _, m := range spec.Mounts {
		if m.Destination != "" && m.Destination != "/" {
			out.Mounts = append(out.Mounts, filepath.Clean("/"+m.Destination))
		}
		if (m.Type == "cgroup" || m.Type == "cgroup2") && !slices.Contains(m.Options, "ro") {
			out.Powers = append(out.Powers, "its cgroup file system at "+m.Destination+" is writable")
		}
	}
	caps := spec.Process.Capabilities
	for _, c := range escapeCaps {
		if slices.Contains(caps.Bounding, c) || slices.Contains(caps.Effective, c) || slices.Contains(caps.Permitted, c) {
			out.Powers = append(out.Powers, "it holds "+c)
		}
	}
	tp, found := "", false
	for _, kv := range spec.Process.Env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "TRACEPARENT":
			tp, found = v, true // the last one is what the process gets
		case "NO_PROXY", "no_proxy":
			out.NoProxy = append(out.NoProxy, strings.Split(v, ",")...)
		}
	}
	switch {
	case !found:
		out.TraceErr = errors.New("the OCI bundle's process.env has no TRACEPARENT")
	default:
		out.TraceID, out.TraceErr = ParseTraceparent(tp)
	}
	return out, nil
}

// ParseTraceparent returns the trace ID of a W3C traceparent value
// ("00-<32 hex>-<16 hex>-<2 hex>"); the error does not quote the value.
func ParseTraceparent(v string) (string, error) {
	parts := strings.Split(v, "-")
	if len(parts) != 4 || parts[0] != "00" || !lowerHex(parts[1], 32) || !lowerHex(parts[2], 16) || !lowerHex(parts[3], 2) ||
		parts[1] == strings.Repeat("0", 32) {
		return "", errors.New("the OCI bundle's TRACEPARENT is not a W3C traceparent with a trace ID")
	}
	return parts[1], nil
}

func lowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// BundleMounts returns the destinations of an OCI bundle's mounts.
func BundleMounts(configPath string) ([]string, error) {
	b, err := ReadBundle(configPath)
	return b.Mounts, err
}

// ProcessRoot returns the layout from a container process's own mount
// table: its root mount's overlay and every other mount point.
func ProcessRoot(mounts []Mount) (Layout, error) {
	var root *Mount
	var ex []string
	for i := range mounts {
		if mounts[i].MountPoint == "/" {
			root = &mounts[i] // the last mount on / is the visible one
			continue
		}
		ex = append(ex, mounts[i].MountPoint)
	}
	if root == nil {
		return Layout{}, fmt.Errorf("no mount at /: %w", ErrNotFound)
	}
	l, err := Overlay(*root)
	if err != nil {
		return Layout{}, err
	}
	l.Exclude = ex
	return l, nil
}

// FromBundle reads the host mount table (mountinfo, normally
// /proc/self/mountinfo) for BuildKit container id.
func FromBundle(mountinfo, containerID string) (Layout, error) {
	mounts, err := readMountinfo(mountinfo)
	if err != nil {
		return Layout{}, err
	}
	return FindBundle(mounts, containerID)
}

// FromProcess reads the mount table of process pid (host PID). The process
// must be in a mount namespace of its own: in ours its root is the host's.
func FromProcess(pid uint32) (Layout, error) {
	self, err1 := os.Readlink("/proc/self/ns/mnt")
	other, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err := errors.Join(err1, err2); err != nil {
		return Layout{}, fmt.Errorf("reading mount namespaces: %w", err)
	}
	if self == other {
		return Layout{}, fmt.Errorf("process %d shares the tracer's mount namespace, so it is not in a container: %w", pid, ErrNotFound)
	}
	mounts, err := readMountinfo(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return Layout{}, err
	}
	return ProcessRoot(mounts)
}

func readMountinfo(path string) ([]Mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	defer f.Close()
	m, err := ParseMountinfo(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}
