package main

import (
	"flag"
	"os"
	"path/filepath"

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

func openCache(dir string) verify.Cache {
	if dir == "" {
		return nil
	}
	return dirCache{dir: dir}
}

func (c dirCache) Get(key string) ([]byte, bool) {
	b, err := os.ReadFile(filepath.Join(c.dir, key))
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
