package fsdiff

import (
	"path"
	"strings"
)

// Stack is the merged view of the layer tars applied so far, bottom first:
// which paths exist and whether each is a directory. FromLayer reads it to
// see what an extractor would replace: a directory entry over a lower
// non-directory deletes it, and an entry below a lower non-directory is
// written through a symlink or over a file.
type Stack struct {
	root *stackNode
}

type stackNode struct {
	dir  bool
	kids map[string]*stackNode
}

// NewStack returns an empty view: no layers yet.
func NewStack() *Stack {
	return &Stack{root: &stackNode{dir: true}}
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

// put makes p a directory or a non-directory, creating missing parents as
// an extractor does. A non-directory, or a directory put over a
// non-directory, starts empty.
func (s *Stack) put(p string, dir bool) {
	cs := split(p)
	if len(cs) == 0 {
		return
	}
	n := s.root
	for _, c := range cs[:len(cs)-1] {
		k := n.kids[c]
		if k == nil || !k.dir {
			k = &stackNode{dir: true}
			n.child(c, k)
		}
		n = k
	}
	last := cs[len(cs)-1]
	if k := n.kids[last]; dir && k != nil && k.dir {
		return // a directory header over a directory keeps its content
	}
	n.child(last, &stackNode{dir: dir})
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

// clear empties directory p (an opaque whiteout).
func (s *Stack) clear(p string) {
	if n := s.lookup(p); n != nil && n.dir {
		n.kids = nil
	}
}
