// Package store keeps sealed steps on disk, so a restart of the tracer
// loses nothing it sealed. Steps are keyed by build trace ID, step ID and
// container ID; whole builds expire after a retention period.
//
// A small bbolt index (<state>/index.db) holds keys, seal times and, for
// each value, the blob file under <state>/blobs that holds it with its
// size and digest. The values themselves are read from their files: what
// bbolt reads stays mapped into the daemon, so the index must not grow
// with what is stored.
package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/buildtrace/buildtrace/pkg/trace"
)

// DefaultRetention is how long a build's steps are kept after its last
// step was sealed. A build's trace is fetched by the frontend right after
// the build, so a week leaves ample room for re-fetching and debugging.
const DefaultRetention = 7 * 24 * time.Hour

// Files in the state directory.
const (
	IndexFile  = "index.db"  // the bbolt index
	BlobDir    = "blobs"     // one file per stored value
	legacyFile = "traces.db" // the store before the index: values inside bbolt
)

var (
	stepsBucket  = []byte("steps")  // traceID/stepID/containerID → JSON blobRef of a JSON trace.Step
	buildsBucket = []byte("builds") // traceID → last seal time (unix nanos, big endian)
)

// Store is the index and its blob files. It is safe for concurrent use.
type Store struct {
	db    *bolt.DB
	blobs string
	// mu orders blob deletion after readers: readers and writers of new
	// blobs hold it shared, whoever deletes blob files holds it alone, so
	// a value is never deleted between reading its index entry and its
	// file.
	mu sync.RWMutex
}

// Open opens (creating) the store in dir. A store of an earlier version
// (values inside traces.db) is moved into the index and blob files; blob
// files the index does not name (left by a crash) are removed.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	s := &Store{blobs: filepath.Join(dir, BlobDir)}
	if err := openBlobDir(s.blobs); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, IndexFile)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	s.db = db
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{stepsBucket, buildsBucket, envelopesBucket, runsBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialising store %s: %w", path, err)
	}
	legacy := filepath.Join(dir, legacyFile)
	if _, err := os.Stat(legacy); err == nil {
		if err := s.migrate(legacy); err != nil {
			db.Close()
			return nil, fmt.Errorf("moving the earlier store %s into %s (move it aside to start with an empty store): %w", legacy, path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		db.Close()
		return nil, err
	}
	referenced, err := s.blobNames()
	if err == nil {
		_, err = s.sweep(referenced)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("removing unreferenced blobs: %w", err)
	}
	return s, nil
}

// Close closes the index.
func (s *Store) Close() error { return s.db.Close() }

// blobNames is every blob file the index names.
func (s *Store) blobNames() (map[string]bool, error) {
	names := map[string]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{stepsBucket, envelopesBucket} {
			err := tx.Bucket(b).ForEach(func(_, v []byte) error {
				var r blobRef
				if json.Unmarshal(v, &r) == nil && r.Blob != "" {
					names[r.Blob] = true
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return names, err
}

func stepKey(traceID, stepID, containerID string) []byte {
	return []byte(traceID + "/" + stepID + "/" + containerID)
}

// Unattributed is the trace ID under which a step whose build could not be
// decided is stored: key unattributed/<step id>/<container id>. Its
// retention runs per step ID (builds key unattributed/<step id>).
const Unattributed = trace.AttributionNone

// Put stores a sealed step of build traceID (Unattributed for a step
// without one) at time now. The step is on disk when Put returns.
func (s *Store) Put(traceID string, step trace.Step, now time.Time) error {
	v, err := json.Marshal(step)
	if err != nil {
		return fmt.Errorf("encoding step %s: %w", step.StepID, err)
	}
	ref, err := s.writeBlob(v, true)
	if err != nil {
		return fmt.Errorf("storing step %s of build %s: %w", step.StepID, traceID, err)
	}
	idx, err := json.Marshal(ref)
	if err != nil {
		return err
	}
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(now.UnixNano()))
	var replaced []string
	s.mu.RLock()
	err = s.db.Update(func(tx *bolt.Tx) error {
		replaced = nil // Update may run the function again
		steps, key := tx.Bucket(stepsBucket), stepKey(traceID, step.StepID, step.ContainerID)
		if prev := steps.Get(key); prev != nil {
			var old blobRef
			if json.Unmarshal(prev, &old) == nil {
				replaced = append(replaced, old.Blob)
			}
		}
		if err := steps.Put(key, idx); err != nil {
			return err
		}
		build := traceID
		if traceID == Unattributed {
			build = Unattributed + "/" + step.StepID
		}
		return tx.Bucket(buildsBucket).Put([]byte(build), ts[:])
	})
	s.mu.RUnlock()
	if err != nil {
		s.removeBlobs([]string{ref.Blob})
		return fmt.Errorf("storing step %s of build %s: %w", step.StepID, traceID, err)
	}
	s.deleteBlobs(replaced)
	return nil
}

// deleteBlobs removes the files of index entries that are gone, once no
// reader can still be reading them.
func (s *Store) deleteBlobs(names []string) {
	if len(names) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeBlobs(names)
}

// Steps returns the sealed steps of build traceID, in key order. A step
// whose file is missing or corrupt is an error (ErrMissing, ErrCorrupt),
// never left out.
func (s *Store) Steps(traceID string) ([]trace.Step, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	type entry struct {
		key string
		ref blobRef
	}
	var entries []entry
	prefix := []byte(traceID + "/")
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(stepsBucket).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var r blobRef
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("index entry %s: %w", k, err)
			}
			entries = append(entries, entry{string(k), r})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading steps of build %s: %w", traceID, err)
	}
	out := make([]trace.Step, 0, len(entries))
	for _, e := range entries {
		v, err := s.readBlob(e.ref)
		if err != nil {
			return nil, fmt.Errorf("reading step %s: %w", e.key, err)
		}
		var st trace.Step
		if err := json.Unmarshal(v, &st); err != nil {
			return nil, fmt.Errorf("decoding step %s: %w", e.key, err)
		}
		out = append(out, st)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// UnattributedSteps returns the sealed steps of the given step IDs whose
// build could not be decided, in key order: a build's signed trace can list
// them with its own (a step ID names one ExecOp of one plan).
func (s *Store) UnattributedSteps(stepIDs []string) ([]trace.Step, error) {
	var out []trace.Step
	for _, id := range stepIDs {
		if id == "" || bytes.ContainsRune([]byte(id), '/') {
			continue
		}
		steps, err := s.Steps(Unattributed + "/" + id)
		if err != nil {
			return nil, err
		}
		out = append(out, steps...)
	}
	return out, nil
}

// Expire deletes every build whose last step was sealed before cutoff and
// returns how many builds it deleted. It reads the index only.
func (s *Store) Expire(cutoff time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	var gone []string
	err := s.db.Update(func(tx *bolt.Tx) error {
		n, gone = 0, nil
		builds, steps := tx.Bucket(buildsBucket), tx.Bucket(stepsBucket)
		var old [][]byte
		err := builds.ForEach(func(k, v []byte) error {
			if len(v) == 8 && int64(binary.BigEndian.Uint64(v)) < cutoff.UnixNano() {
				old = append(old, bytes.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, id := range old {
			prefix := append(bytes.Clone(id), '/')
			c := steps.Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Seek(prefix) {
				var r blobRef
				if json.Unmarshal(v, &r) == nil {
					gone = append(gone, r.Blob)
				}
				if err := c.Delete(); err != nil {
					return err
				}
			}
			if err := builds.Delete(id); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("expiring builds sealed before %s: %w", cutoff.Format(time.RFC3339), err)
	}
	// After the commit: a crash in between leaves orphans, not entries
	// without files.
	s.removeBlobs(gone)
	return n, nil
}
