package server

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/buildtrace/buildtrace/pkg/fsdiff"
)

// lowerCache remembers the diff digest of each lower snapshot directory:
// BuildKit's snapshots are immutable once committed, and every later step
// of a build stacks on the same ones, so each is hashed once.
type lowerCache struct {
	mu sync.Mutex
	m  map[lowerKey]string
}

// lowerKey names a snapshot directory by path and inode, so a directory
// recreated under the same path (a wiped BuildKit state) is hashed again.
type lowerKey struct {
	path  string
	ino   uint64
	ctime int64
}

const maxLowerCache = 65_536

// lowerDigests returns the diff digest of each of a container's lower
// layers (top first), each computed against the layers below it. An
// entry is "" when it could not be computed.
func (s *Server) lowerDigests(ctx context.Context, lowers []string) ([]string, error) {
	out := make([]string, len(lowers))
	var firstErr error
	for i, dir := range lowers {
		fi, err := os.Stat(dir)
		if err != nil {
			firstErr = cmpErr(firstErr, err)
			continue
		}
		k := lowerKey{path: dir}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			k.ino, k.ctime = st.Ino, st.Ctim.Nano()
		}
		s.lowers.mu.Lock()
		d, ok := s.lowers.m[k]
		s.lowers.mu.Unlock()
		if !ok {
			diff, err := fsdiff.FromUpper(ctx, dir, fsdiff.Options{Lowers: lowers[i+1:]})
			if err != nil {
				firstErr = cmpErr(firstErr, fmt.Errorf("lower layer %s: %w", dir, err))
				continue
			}
			d = diff.Digest
			s.lowers.mu.Lock()
			if s.lowers.m == nil || len(s.lowers.m) >= maxLowerCache {
				s.lowers.m = map[lowerKey]string{}
			}
			s.lowers.m[k] = d
			s.lowers.mu.Unlock()
		}
		out[i] = d
	}
	return out, firstErr
}

func cmpErr(have, err error) error {
	if have != nil {
		return have
	}
	return err
}
