package fsdiff

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strings"
)

// Stack is the merged view of the layer tars applied so far, bottom first:
// which paths exist, whether each is a directory, and each directory's
// mode and owner. FromLayer reads it to see what an extractor would
// replace or change: a directory entry over a lower non-directory deletes
// it, one over a lower directory may change its mode or owner, and an
// entry below a lower non-directory is written through a symlink or over
// a file.
type Stack struct {
	root *stackNode
}

type stackNode struct {
	dir  bool
	meta dirMeta // a directory's
	link string  // a symlink's target; "" for other non-directories
	kids map[string]*stackNode
}

// dirMeta is what the diff digest covers of a directory.
type dirMeta struct {
	mode     uint32 // permission bits, 07777
	uid, gid uint32
}

// implicitDir is what containerd's extractor gives a parent directory
// that a layer names no header for (archive.mkparent: mode 0755, set with
// chmod, owned by the extracting root).
var implicitDir = dirMeta{mode: 0o755}

// NewStack returns an empty view: no layers yet.
func NewStack() *Stack {
	return &Stack{root: &stackNode{dir: true, meta: implicitDir}}
}

func split(p string) []string {
	p = strings.Trim(path.Clean("/"+p), "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// lookup returns the node at p, nil when p does not exist; a path below a
// non-directory does not exist.
func (s *Stack) lookup(p string) *stackNode {
	n := s.root
	for _, c := range split(p) {
		if !n.dir {
			return nil
		}
		if n = n.kids[c]; n == nil {
			return nil
		}
	}
	return n
}

// nonDirAncestor returns the nearest proper ancestor of p that exists and is
// not a directory.
func (s *Stack) nonDirAncestor(p string) (string, bool) {
	n := s.root
	cs := split(p)
	for i, c := range cs[:max(len(cs)-1, 0)] {
		if n = n.kids[c]; n == nil {
			return "", false
		}
		if !n.dir {
			return "/" + strings.Join(cs[:i+1], "/"), true
		}
	}
	return "", false
}

// resolve follows the symlinks of the view in p, as containerd's
// extractor does with an entry's parent directory (continuity's
// fs.RootPath: inside the root, ".." stops at it). A path through a
// non-directory that is not a symlink is an error.
func (s *Stack) resolve(p string) (string, error) {
	return resolveIn(p, func(cur string) (string, bool, error) {
		n := s.lookup(cur)
		switch {
		case n == nil || n.dir:
			return "", false, nil
		case n.link == "":
			return "", false, fmt.Errorf("%s is not a directory", cur)
		}
		return n.link, true, nil
	})
}

// resolveIn follows symlinks in p inside the root: ".." stops at the root,
// an absolute target starts over from it, and a component that is no
// symlink is taken as it is. readlink reports the target of the cleaned
// absolute path cur, and whether cur is a symlink at all.
func resolveIn(p string, readlink func(cur string) (target string, ok bool, err error)) (string, error) {
	todo := split(p)
	var out []string
	for hops := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			continue
		}
		target, ok, err := readlink("/" + strings.Join(append(out, c), "/"))
		if err != nil {
			return "", err
		}
		if !ok {
			out = append(out, c)
			continue
		}
		if hops++; hops > 255 {
			return "", fmt.Errorf("too many symlinks in %s", p)
		}
		if strings.HasPrefix(target, "/") {
			out = nil
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return "/" + strings.Join(out, "/"), nil
}

// putDir makes p a directory with metadata m, creating missing parents as
// an extractor does. A directory put over a non-directory starts empty;
// one put over a directory keeps its content and takes m (containerd
// chowns and chmods an existing directory to its header's).
func (s *Stack) putDir(p string, m dirMeta) {
	s.putNode(p, &stackNode{dir: true, meta: m})
}

// putNonDir makes p a non-directory (a symlink when link is not empty),
// creating missing parents as an extractor does.
func (s *Stack) putNonDir(p, link string) {
	s.putNode(p, &stackNode{link: link})
}

// putNode puts n at p (see putDir).
func (s *Stack) putNode(p string, nn *stackNode) {
	cs := split(p)
	if len(cs) == 0 {
		return
	}
	n := s.root
	for _, c := range cs[:len(cs)-1] {
		k := n.kids[c]
		if k == nil || !k.dir {
			k = &stackNode{dir: true, meta: implicitDir}
			n.child(c, k)
		}
		n = k
	}
	last := cs[len(cs)-1]
	if k := n.kids[last]; nn.dir && k != nil && k.dir {
		k.meta = nn.meta
		return
	}
	n.child(last, nn)
}

func (n *stackNode) child(name string, k *stackNode) {
	if n.kids == nil {
		n.kids = map[string]*stackNode{}
	}
	n.kids[name] = k
}

// remove deletes p and everything below it.
func (s *Stack) remove(p string) {
	cs := split(p)
	if len(cs) == 0 {
		return
	}
	if n := s.lookup(path.Dir("/" + strings.Join(cs, "/"))); n != nil && n.dir {
		delete(n.kids, cs[len(cs)-1])
	}
}

// clear empties directory p (an opaque whiteout) but for what keep holds
// and the directories above it.
func (s *Stack) clear(p string, keep map[string]bool) {
	n := s.lookup(p)
	if n == nil || !n.dir {
		return
	}
	var walk func(n *stackNode, p string)
	walk = func(n *stackNode, p string) {
		for name, k := range n.kids {
			cp := path.Join(p, name)
			if !keep[cp] {
				delete(n.kids, name)
			} else if k.dir {
				walk(k, cp)
			}
		}
	}
	walk(n, path.Clean("/"+p))
}

const stackMagic = "buildtrace-stack-v3\n"

// MarshalBinary encodes the view (for a cache of what base layers leave):
// a pre-order walk, each node a type byte and, for a directory, its mode,
// owner and children by name, for a symlink its target; a SHA-256 of all
// of it ends it.
func (s *Stack) MarshalBinary() ([]byte, error) {
	b := []byte(stackMagic)
	var enc func(n *stackNode)
	enc = func(n *stackNode) {
		if !n.dir {
			if n.link == "" {
				b = append(b, 0)
				return
			}
			b = append(b, 2)
			b = binary.AppendUvarint(b, uint64(len(n.link)))
			b = append(b, n.link...)
			return
		}
		b = append(b, 1)
		b = binary.AppendUvarint(b, uint64(n.meta.mode))
		b = binary.AppendUvarint(b, uint64(n.meta.uid))
		b = binary.AppendUvarint(b, uint64(n.meta.gid))
		b = binary.AppendUvarint(b, uint64(len(n.kids)))
		for _, name := range slices.Sorted(maps.Keys(n.kids)) {
			b = binary.AppendUvarint(b, uint64(len(name)))
			b = append(b, name...)
			enc(n.kids[name])
		}
	}
	enc(s.root)
	sum := sha256.Sum256(b)
	return append(b, sum[:]...), nil
}

// UnmarshalBinary decodes what MarshalBinary wrote, refusing anything
// damaged.
func (s *Stack) UnmarshalBinary(data []byte) error {
	if len(data) < len(stackMagic)+sha256.Size || string(data[:len(stackMagic)]) != stackMagic {
		return errors.New("not an encoded layer stack")
	}
	body := data[:len(data)-sha256.Size]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], data[len(body):]) {
		return errors.New("encoded layer stack: checksum mismatch")
	}
	r := bytes.NewReader(body[len(stackMagic):])
	var dec func(depth int) (*stackNode, error)
	dec = func(depth int) (*stackNode, error) {
		if depth > 4096 {
			return nil, errors.New("encoded layer stack: too deep")
		}
		t, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		switch t {
		case 0:
			return &stackNode{}, nil
		case 2:
			link, err := readString(r)
			if err != nil {
				return nil, err
			}
			return &stackNode{link: link}, nil
		case 1:
		default:
			return nil, fmt.Errorf("encoded layer stack: node type %d", t)
		}
		n := &stackNode{dir: true}
		var meta [3]uint64
		for i := range meta {
			if meta[i], err = binary.ReadUvarint(r); err != nil {
				return nil, err
			}
			if meta[i] > 1<<32-1 || i == 0 && meta[i] > 0o7777 {
				return nil, errors.New("encoded layer stack: bad directory metadata")
			}
		}
		n.meta = dirMeta{mode: uint32(meta[0]), uid: uint32(meta[1]), gid: uint32(meta[2])}
		count, err := binary.ReadUvarint(r)
		if err != nil {
			return nil, err
		}
		for range count {
			name, err := readString(r)
			if err != nil {
				return nil, err
			}
			k, err := dec(depth + 1)
			if err != nil {
				return nil, err
			}
			n.child(name, k)
		}
		return n, nil
	}
	root, err := dec(0)
	if err != nil {
		return fmt.Errorf("decoding layer stack: %w", err)
	}
	if r.Len() != 0 || !root.dir {
		return errors.New("encoded layer stack: trailing data")
	}
	s.root = root
	return nil
}

// readString reads a non-empty length-prefixed string of MarshalBinary.
func readString(r *bytes.Reader) (string, error) {
	l, err := binary.ReadUvarint(r)
	if err != nil {
		return "", err
	}
	if l == 0 || l > uint64(r.Len()) {
		return "", errors.New("encoded layer stack: bad string length")
	}
	b := make([]byte, l)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}
