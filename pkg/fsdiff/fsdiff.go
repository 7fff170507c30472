// Package fsdiff computes a build step's net file-system effect as a
// normalised diff whose digest is the same whether it is read from the
// overlay upper directory of the step's container (FromUpper) or from the
// layer tar BuildKit exported for the step (FromLayer). The normalised form
// is defined in docs/diff-digest.md.
package fsdiff

import (
	"crypto/sha256"
	"encoding/hex"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/buildtrace/buildtrace/pkg/trace"
)

// DefaultMaxChanges caps trace.Diff.Changes when Options.MaxChanges is 0.
const DefaultMaxChanges = 500000

// Options tune FromUpper.
type Options struct {
	// Lowers are the overlay lower directories, topmost first, in the
	// order of overlayfs' lowerdir= option. They decide which whiteouts
	// count and whether a path was created or modified.
	Lowers []string
	// Exclude are container paths (mount points) skipped with everything
	// below them.
	Exclude []string
	// MaxChanges caps Diff.Changes; 0 means DefaultMaxChanges.
	MaxChanges int
}

// Entry kinds in the normalised diff.
const (
	kindFile    = "file"
	kindSymlink = "symlink"
	kindChar    = "char"
	kindBlock   = "block"
	kindFifo    = "fifo"
	kindDir     = "dir"
	kindDeleted = "deleted"
	kindOpaque  = "opaque"
)

// entry is one line of the normalised diff.
type entry struct {
	path         string // absolute, cleaned
	kind         string
	mode         uint32 // permission bits, 07777
	uid, gid     uint32
	size         int64
	sha256       string // hex, files only
	link         string // symlink target
	major, minor uint32
	caps         []byte // security.capability xattr
	created      bool   // for trace.FileChange only, not in the digest
}

// line is the entry's canonical serialisation (docs/diff-digest.md).
func (e *entry) line() string {
	var b strings.Builder
	b.WriteString(e.kind)
	b.WriteByte(' ')
	b.WriteString(escape(e.path))
	switch e.kind {
	case kindDeleted, kindOpaque:
		b.WriteByte('\n')
		return b.String()
	}
	b.WriteString(" mode=")
	b.WriteString(strconv.FormatUint(uint64(e.mode), 8))
	b.WriteString(" uid=")
	b.WriteString(strconv.FormatUint(uint64(e.uid), 10))
	b.WriteString(" gid=")
	b.WriteString(strconv.FormatUint(uint64(e.gid), 10))
	switch e.kind {
	case kindFile:
		b.WriteString(" size=")
		b.WriteString(strconv.FormatInt(e.size, 10))
		b.WriteString(" sha256=")
		b.WriteString(e.sha256)
	case kindSymlink:
		b.WriteString(" target=")
		b.WriteString(escape(e.link))
	case kindChar, kindBlock:
		b.WriteString(" dev=")
		b.WriteString(strconv.FormatUint(uint64(e.major), 10))
		b.WriteByte(',')
		b.WriteString(strconv.FormatUint(uint64(e.minor), 10))
	}
	if len(e.caps) > 0 {
		b.WriteString(" cap=")
		b.WriteString(hex.EncodeToString(e.caps))
	}
	b.WriteByte('\n')
	return b.String()
}

// escape percent-encodes every byte outside 0x21-0x7E, and '%' itself, so
// a path is one space-free token on one line.
func escape(s string) string {
	need := false
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= 0x20 || c >= 0x7f || c == '%' {
			need = true
			break
		}
	}
	if !need {
		return s
	}
	const hexdigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 0x20 || c >= 0x7f || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hexdigits[c>>4])
			b.WriteByte(hexdigits[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// sortEntries orders by path bytes, then by line, so the order does not
// depend on how the entries were found.
func sortEntries(es []*entry) {
	sort.Slice(es, func(i, j int) bool {
		if es[i].path != es[j].path {
			return es[i].path < es[j].path
		}
		return es[i].line() < es[j].line()
	})
}

// version heads the serialisation; v2 added the deletion of a lower
// non-directory that a directory replaces, v3 directories whose mode or
// owner a step changed and new directories that hold an entry.
const version = "buildtrace-diff-v3"

// digest hashes the sorted entries' lines.
func digest(es []*entry) string {
	h := sha256.New()
	h.Write([]byte(version + "\n"))
	for _, e := range es {
		h.Write([]byte(e.line()))
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// change converts e for trace.FileChange; withOrigin says whether
// created/modified is known.
func (e *entry) change(withOrigin bool) trace.FileChange {
	c := trace.FileChange{Path: e.path}
	switch e.kind {
	case kindDeleted:
		c.Change = trace.ChangeDeleted
		return c
	case kindOpaque:
		// Everything the lower layers held below the directory is gone.
		c.Change = trace.ChangeDeleted
		c.Type = kindOpaque
		return c
	}
	if withOrigin {
		c.Change = trace.ChangeModified
		if e.created {
			c.Change = trace.ChangeCreated
		}
	}
	c.Type = e.kind
	c.Mode = e.mode
	c.UID = e.uid
	c.GID = e.gid
	if e.kind == kindFile {
		c.Size = e.size
		c.SHA256 = e.sha256
	}
	c.LinkTarget = e.link
	return c
}

// runtimeMountPoint reports whether p is a mount point that the container
// runtime makes in the root file system of every BuildKit step (runc's
// mkdir for the spec's /proc, /dev and /sys), and that BuildKit does not
// remove after the run, as it does its own mounts' stubs. A new, empty one
// is not an entry on either side: the tracer excludes mount points while a
// step runs, and finds them, empty, in the committed layer below the next.
func runtimeMountPoint(p string) bool {
	return p == "/proc" || p == "/dev" || p == "/sys"
}

// runtimeMountMeta is the mode and owner runc gives a runtime mount point
// it makes (mkdir 0755 as the container's root).
var runtimeMountMeta = dirMeta{mode: 0o755}

// dirMeta is the part of a directory entry the digest covers.
func (e *entry) dirMeta() dirMeta { return dirMeta{mode: e.mode, uid: e.uid, gid: e.gid} }

// excluded reports whether p is one of excl or below one.
func excluded(p string, excl []string) bool {
	for _, x := range excl {
		if p == x || x == "/" || strings.HasPrefix(p, x+"/") {
			return true
		}
	}
	return false
}

func cleanExcludes(excl []string) []string {
	out := make([]string, 0, len(excl))
	for _, x := range excl {
		if x == "" {
			continue
		}
		out = append(out, path.Clean("/"+x))
	}
	return out
}

// EmptyDigest is the digest of a diff with no entry: a layer that changes
// nothing, or only directories.
const EmptyDigest = "sha256:243a1d69bc0036bbc48ef26a3447ad46fef902fcb9ab520cd8059f0bab634254"
