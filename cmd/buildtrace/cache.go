package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/buildtrace/buildtrace/pkg/verify"
)

// cacheFlag adds --cache-dir: where verify keeps what base images' layers
// leave for the layers above them, so a base is read once (docs/cli.md).
func cacheFlag(fs *flag.FlagSet) *string {
	def := ""
	if d, err := os.UserCacheDir(); err == nil {
		def = filepath.Join(d, "buildtrace", "base")
	}
	return fs.String("cache-dir", def, `cache of base image layers' file types ("" for none)`)
}

// dirCache is verify.Cache as one file per key in a directory only its
// owner can read or write: its entries decide verdicts.
type dirCache struct{ dir string }

// openCache returns the cache in dir, nil for none. A directory that
// someone else owns or can write is not used: another local user could
// plant a view of a base that decides a verdict.
func openCache(dir string, stderr io.Writer) verify.Cache {
	if dir == "" {
		return nil
	}
	if err := ownedPrivate(dir, true); err != nil && !errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(stderr, "buildtrace: not using --cache-dir: %v\n", err)
		return nil
	}
	return dirCache{dir: dir}
}

// ownedPrivate: p is a directory (or regular file) of this user that no
// one else can write.
func ownedPrivate(p string, dir bool) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case dir && !fi.IsDir(), !dir && !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a plain directory or file", p)
	case !ok || int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%s belongs to another user", p)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%s can be written by other users (mode %v)", p, fi.Mode().Perm())
	}
	return nil
}

func (c dirCache) Get(key string) ([]byte, bool) {
	p := filepath.Join(c.dir, key)
	if ownedPrivate(c.dir, true) != nil || ownedPrivate(p, false) != nil {
		return nil, false
	}
	b, err := os.ReadFile(p)
	return b, err == nil
}

// Put is best effort: a cache that cannot be written only costs time.
func (c dirCache) Put(key string, data []byte) {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return
	}
	f, err := os.CreateTemp(c.dir, key+".*")
	if err != nil {
		return
	}
	_, werr := f.Write(data)
	if cerr := f.Close(); werr != nil || cerr != nil {
		os.Remove(f.Name())
		return
	}
	if err := os.Rename(f.Name(), filepath.Join(c.dir, key)); err != nil {
		os.Remove(f.Name())
	}
}
