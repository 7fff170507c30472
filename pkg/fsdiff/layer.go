package fsdiff

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/buildtrace/buildtrace/pkg/trace"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
	paxXattrPrefix = "SCHILY.xattr."
	paxCapability  = paxXattrPrefix + "security.capability"
)

// FromLayer computes the normalised diff of an uncompressed OCI layer tar
// (the caller decompresses) applied over lower, the layers below it, and
// then adds the layer to lower. A nil lower stands for no layers below.
// A tar cannot tell created from modified, so the changes of present paths
// have an empty Change.
func FromLayer(ctx context.Context, r io.Reader, lower *Stack) (string, []trace.FileChange, error) {
	if lower == nil {
		lower = NewStack()
	}
	return readLayer(ctx, r, lower, false)
}

// Apply adds an uncompressed layer tar of a base image (which the signed
// plan pins, and whose digest is not needed) to s, as an extractor would:
// without hashing content, and following symlinks of the layers below in
// an entry's parent directory, which other tools' layers may hold.
func (s *Stack) Apply(ctx context.Context, r io.Reader) error {
	_, _, err := readLayer(ctx, r, s, true)
	return err
}

func readLayer(ctx context.Context, r io.Reader, lower *Stack, baseLayer bool) (string, []trace.FileChange, error) {
	es, err := layerEntries(ctx, r, lower, baseLayer)
	if err != nil {
		return "", nil, err
	}
	changes := make([]trace.FileChange, 0, len(es))
	for _, e := range es {
		changes = append(changes, e.change(false))
	}
	return digest(es), changes, nil
}

// layerEntries reads a layer over lower, adds it to lower, and returns
// its entries, sorted.
func layerEntries(ctx context.Context, r io.Reader, lower *Stack, baseLayer bool) ([]*entry, error) {
	tr := tar.NewReader(r)
	byPath := map[string]*entry{}
	// What an extractor does with a tar that names a path twice, or puts
	// an entry under a symlink or file (of this layer or one below), is
	// not what the digest could describe: it would write through the
	// symlink, or replace the earlier entry. BuildKit never writes such a
	// tar (its differ writes real paths, and a directory that replaces a
	// non-directory before what is below it), so it is refused.
	seen := map[string]bool{}
	// What the layer wrote so far: an opaque marker keeps it (containerd
	// removes only what the layer has not unpacked yet).
	written := map[string]bool{}
	// The directory headers of the layer, with what was at their path
	// before it: their entries depend on the rest of the layer.
	var dirs []dirHeader
	buf := make([]byte, 128*1024)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("reading layer tar: %w", err)
		}
		if slices.Contains(strings.Split(hdr.Name, "/"), "..") {
			return nil, fmt.Errorf("layer tar entry %q leaves the root", hdr.Name)
		}
		p := path.Clean("/" + hdr.Name)
		if p == "/" {
			continue
		}
		if !baseLayer {
			if hdr.Typeflag == tar.TypeXGlobalHeader {
				// containerd's extractor removes whatever is at a global
				// header's name before it ignores the entry.
				return nil, fmt.Errorf("layer tar has a PAX global header named %s (an extractor would remove that path)", p)
			}
			// Other extended attributes are not in the digest, and an
			// extractor sets them (ACLs, overlay's user.* markers):
			// BuildKit's tar writer writes security.capability only.
			for k := range hdr.PAXRecords {
				if strings.HasPrefix(k, paxXattrPrefix) && k != paxCapability {
					return nil, fmt.Errorf("layer tar entry %s sets the extended attribute %s, which the diff digest does not cover", p, strings.TrimPrefix(k, paxXattrPrefix))
				}
			}
		}
		if a, ok := lower.nonDirAncestor(p); ok {
			if !baseLayer {
				return nil, fmt.Errorf("layer tar entry %s is below %s, which this layer or one below it made a non-directory (an extractor would follow or replace it)", p, a)
			}
			rp, err := lower.resolve(path.Dir(p))
			if err != nil {
				return nil, fmt.Errorf("layer tar entry %s: %w", p, err)
			}
			p = path.Join(rp, path.Base(p))
		}
		dir, base := path.Dir(p), path.Base(p)
		if n := lower.lookup(dir); !baseLayer && (n == nil || !n.dir) {
			// An extractor would make the parent with its own mode and
			// owner (containerd: 0755, root), which no header says.
			// BuildKit's differ writes a new directory before its content.
			return nil, fmt.Errorf("layer tar entry %s comes before a header for its new parent directory %s", p, dir)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			lower.remove(p) // a base layer's: as containerd's extractor does
			continue
		}
		written[p] = true
		key := p
		if strings.HasPrefix(base, whiteoutPrefix) && !strings.HasPrefix(base, whiteoutMeta) {
			key = path.Join(dir, base[len(whiteoutPrefix):])
		}
		// A base layer's repeated path is what an extractor makes of it
		// (the last entry wins); only the view is needed from it.
		if base != whiteoutOpaque && !baseLayer {
			if seen[key] {
				return nil, fmt.Errorf("layer tar names %s twice", key)
			}
			seen[key] = true
		}
		switch {
		case base == whiteoutOpaque:
			byPath[dir+"\x00opaque"] = &entry{path: dir, kind: kindOpaque}
			lower.clear(dir, written)
			continue
		case strings.HasPrefix(base, whiteoutMeta):
			continue // other AUFS metadata; not a path of the image
		case strings.HasPrefix(base, whiteoutPrefix):
			dp := path.Join(dir, base[len(whiteoutPrefix):])
			byPath[dp] = &entry{path: dp, kind: kindDeleted}
			lower.remove(dp)
			continue
		}
		if hdr.Typeflag == tar.TypeDir {
			// A directory that replaces a lower non-directory deletes it:
			// extractors remove what is there unless both are
			// directories. Whether the directory is an entry itself
			// depends on the rest of the layer (dirEntries).
			h := dirHeader{path: p, meta: dirMeta{mode: uint32(hdr.Mode) & 07777, uid: uint32(hdr.Uid), gid: uint32(hdr.Gid)}}
			if n := lower.lookup(p); n != nil && !n.dir {
				byPath[p] = &entry{path: p, kind: kindDeleted}
			} else if n != nil {
				h.overDir, h.lowerMeta = true, n.meta
			}
			dirs = append(dirs, h)
			lower.putDir(p, h.meta)
			continue
		}
		if hdr.Typeflag == tar.TypeSymlink {
			lower.putNonDir(p, hdr.Linkname)
		} else {
			lower.putNonDir(p, "")
		}
		e := &entry{
			path: p,
			mode: uint32(hdr.Mode) & 07777,
			uid:  uint32(hdr.Uid),
			gid:  uint32(hdr.Gid),
		}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
			e.kind = kindFile
			if baseLayer {
				break // tar.Reader skips the content
			}
			h := sha256.New()
			n, err := io.CopyBuffer(h, tr, buf)
			if err != nil {
				return nil, fmt.Errorf("reading layer tar entry %s: %w", hdr.Name, err)
			}
			e.size = n
			e.sha256 = hex.EncodeToString(h.Sum(nil))
		case tar.TypeLink:
			if baseLayer {
				continue // a base layer may link to a file below it
			}
			// containerd resolves symlinks in a link's target before its
			// "..", which a lexical clean would read otherwise.
			if slices.Contains(strings.Split(hdr.Linkname, "/"), "..") {
				return nil, fmt.Errorf("layer tar: hard link %s has a target with \"..\" (%s)", hdr.Name, hdr.Linkname)
			}
			// A target that ends in "/" or "." names what its last
			// component resolves to: containerd follows a symlink there
			// and links the file it points to, giving it the link
			// header's mode and owner, while a lexical clean reads the
			// symlink.
			if base := hdr.Linkname[strings.LastIndex(hdr.Linkname, "/")+1:]; base == "" || base == "." {
				return nil, fmt.Errorf("layer tar: hard link %s has a target that names a directory (%s)", hdr.Name, hdr.Linkname)
			}
			target := path.Clean("/" + hdr.Linkname)
			t, ok := byPath[target]
			if !ok || t.kind == kindDeleted {
				return nil, fmt.Errorf("layer tar: hard link %s points to %s, which is not earlier in the layer", hdr.Name, hdr.Linkname)
			}
			// A hard link shares its target's inode: content and metadata.
			// An extractor applies the link header's metadata to that inode,
			// so a link that differs would change the target unseen.
			if uint32(hdr.Mode)&07777 != t.mode || uint32(hdr.Uid) != t.uid || uint32(hdr.Gid) != t.gid || hdr.PAXRecords[paxCapability] != string(t.caps) {
				return nil, fmt.Errorf("layer tar: hard link %s has other metadata than its target %s", hdr.Name, hdr.Linkname)
			}
			linked := *t
			linked.path = p
			byPath[p] = &linked
			continue
		case tar.TypeSymlink:
			e.kind = kindSymlink
			e.link = hdr.Linkname
		case tar.TypeChar, tar.TypeBlock:
			e.kind = kindChar
			if hdr.Typeflag == tar.TypeBlock {
				e.kind = kindBlock
			}
			e.major, e.minor = uint32(hdr.Devmajor), uint32(hdr.Devminor)
		case tar.TypeFifo:
			e.kind = kindFifo
		default:
			return nil, fmt.Errorf("layer tar entry %s: unsupported type %q", hdr.Name, hdr.Typeflag)
		}
		if c, ok := hdr.PAXRecords[paxCapability]; ok && c != "" {
			e.caps = []byte(c)
		}
		byPath[p] = e
	}
	es := make([]*entry, 0, len(byPath)+len(dirs))
	for _, e := range byPath {
		es = append(es, e)
	}
	es = append(es, dirEntries(dirs, es)...)
	sortEntries(es)
	return es, nil
}

// dirHeader is a directory header of a layer and what the layers below
// had at its path.
type dirHeader struct {
	path      string
	meta      dirMeta
	overDir   bool    // the layers below have a directory there
	lowerMeta dirMeta // and this is its mode and owner
}

// dirEntries returns the directory entries of a layer (docs/diff-digest.md):
// a directory over a lower directory whose mode or owner it changes, and
// every new directory (none below) but an empty runtime mount point. es
// are the layer's other entries.
func dirEntries(dirs []dirHeader, es []*entry) []*entry {
	var out []*entry
	for _, h := range dirs {
		if h.overDir && h.meta == h.lowerMeta {
			continue
		}
		// Only what runc makes is left out: a header with another mode or
		// owner is what a puller unpacks (an exported root file system,
		// a run without those mounts), and no traced run made it.
		if !h.overDir && runtimeMountPoint(h.path) && h.meta == runtimeMountMeta && !slices.ContainsFunc(es, func(e *entry) bool { return strings.HasPrefix(e.path, h.path+"/") }) {
			continue
		}
		out = append(out, &entry{path: h.path, kind: kindDir, mode: h.meta.mode, uid: h.meta.uid, gid: h.meta.gid, created: !h.overDir})
	}
	return out
}
