package store

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// The big values (sealed steps, evidence envelopes) live in files under
// <state>/blobs, read with read(2): bbolt reads through a memory mapping,
// and every value read through it stayed in the daemon's RSS. The index
// names each file and holds its size and digest.

var (
	// ErrMissing: the index names a blob file that is not there.
	ErrMissing = errors.New("stored value missing")
	// ErrCorrupt: a blob file is not what the index says it holds.
	ErrCorrupt = errors.New("stored value corrupt")
)

// blobRef is an index entry: the file that holds a value, and what it
// must be.
type blobRef struct {
	Blob   string `json:"blob"` // file name under blobs/, blobNameLen hex digits
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// blobNameLen: a name is 16 random bytes in hex. Names never derive from
// trace, step or container IDs (which build clients choose), so no ID can
// name a path; validBlobName checks names read back from the index.
const blobNameLen = 32

func validBlobName(name string) bool {
	if len(name) != blobNameLen {
		return false
	}
	for _, c := range []byte(name) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// openBlobDir creates (or checks) dir as a directory only its owner can
// read, never through a symlink: other local users must not read traces.
func openBlobDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating blob directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("blob directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("blob directory %s is not a directory", dir)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("blob directory: %w", err)
		}
	}
	return nil
}

// writeBlob writes data to a new file and returns its index entry. With
// sync, the file and its directory entry are on disk when it returns, so
// an index entry committed after it never names a lost file. The file is
// created under its final, fresh random name (O_EXCL): until the index
// names it nothing reads it, so a crash mid-write leaves only an
// unreferenced file that the next Open removes, as a temporary file and a
// rename would.
func (s *Store) writeBlob(data []byte, sync bool) (blobRef, error) {
	var rnd [blobNameLen / 2]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return blobRef{}, err
	}
	name := hex.EncodeToString(rnd[:])
	path := filepath.Join(s.blobs, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return blobRef{}, fmt.Errorf("creating blob: %w", err)
	}
	_, err = f.Write(data)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && sync {
		err = s.syncBlobDir()
	}
	if err != nil {
		os.Remove(path)
		return blobRef{}, fmt.Errorf("writing blob %s: %w", name, err)
	}
	sum := sha256.Sum256(data)
	return blobRef{Blob: name, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}, nil
}

func (s *Store) syncBlobDir() error {
	d, err := os.Open(s.blobs)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// readBlob reads the value r names and checks it is the one indexed: a
// missing or changed file is an error, never another value.
func (s *Store) readBlob(r blobRef) ([]byte, error) {
	if !validBlobName(r.Blob) {
		return nil, fmt.Errorf("%w: invalid blob name %q in the index", ErrCorrupt, r.Blob)
	}
	f, err := os.OpenFile(filepath.Join(s.blobs, r.Blob), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: blob %s", ErrMissing, r.Blob)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() != r.Size {
		return nil, fmt.Errorf("%w: blob %s is not the indexed value", ErrCorrupt, r.Blob)
	}
	data := make([]byte, r.Size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("reading blob %s: %w", r.Blob, err)
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != r.SHA256 {
		return nil, fmt.Errorf("%w: blob %s is not the indexed value", ErrCorrupt, r.Blob)
	}
	return data, nil
}

// removeBlobs deletes blob files whose index entries are gone. A file
// that cannot be removed is an orphan, removed by the next Open.
func (s *Store) removeBlobs(names []string) {
	for _, n := range names {
		if validBlobName(n) {
			os.Remove(filepath.Join(s.blobs, n))
		}
	}
}

// sweep removes every file under blobs/ that the index does not name:
// what a crash between writing a blob and committing its index entry, or
// after an entry's deletion, left behind. Called from Open, before any
// write can be under way.
func (s *Store) sweep(referenced map[string]bool) (int, error) {
	entries, err := os.ReadDir(s.blobs)
	if err != nil {
		return 0, fmt.Errorf("listing blobs: %w", err)
	}
	n := 0
	for _, e := range entries {
		if referenced[e.Name()] || e.IsDir() {
			continue
		}
		if err := os.Remove(filepath.Join(s.blobs, e.Name())); err == nil {
			n++
		}
	}
	return n, nil
}
