// Package store keeps sealed steps on disk (bbolt), so a restart of the
// tracer loses nothing it sealed. Steps are keyed by build trace ID, step
// ID and container ID; whole builds expire after a retention period.
package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/buildtrace/buildtrace/pkg/trace"
)

// DefaultRetention is how long a build's steps are kept after its last
// step was sealed. A build's trace is fetched by the frontend right after
// the build, so a week leaves ample room for re-fetching and debugging.
const DefaultRetention = 7 * 24 * time.Hour

var (
	stepsBucket  = []byte("steps")  // traceID/stepID/containerID → JSON trace.Step
	buildsBucket = []byte("builds") // traceID → last seal time (unix nanos, big endian)
)

// Store is the embedded database. It is safe for concurrent use.
type Store struct {
	db *bolt.DB
}

// Open opens (creating) the database in dir.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	path := filepath.Join(dir, "traces.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{stepsBucket, buildsBucket} {
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
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func stepKey(traceID, stepID, containerID string) []byte {
	return []byte(traceID + "/" + stepID + "/" + containerID)
}

// Unattributed is the trace ID under which a step whose build could not be
// decided is stored: key unattributed/<step id>/<container id>. Its
// retention runs per step ID (builds key unattributed/<step id>).
const Unattributed = trace.AttributionNone

// Put stores a sealed step of build traceID (Unattributed for a step
// without one) at time now.
func (s *Store) Put(traceID string, step trace.Step, now time.Time) error {
	v, err := json.Marshal(step)
	if err != nil {
		return fmt.Errorf("encoding step %s: %w", step.StepID, err)
	}
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(now.UnixNano()))
	err = s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(stepsBucket).Put(stepKey(traceID, step.StepID, step.ContainerID), v); err != nil {
			return err
		}
		build := traceID
		if traceID == Unattributed {
			build = Unattributed + "/" + step.StepID
		}
		return tx.Bucket(buildsBucket).Put([]byte(build), ts[:])
	})
	if err != nil {
		return fmt.Errorf("storing step %s of build %s: %w", step.StepID, traceID, err)
	}
	return nil
}

// Steps returns the sealed steps of build traceID, in key order.
func (s *Store) Steps(traceID string) ([]trace.Step, error) {
	var out []trace.Step
	prefix := []byte(traceID + "/")
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(stepsBucket).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var st trace.Step
			if err := json.Unmarshal(v, &st); err != nil {
				return fmt.Errorf("decoding %s: %w", k, err)
			}
			out = append(out, st)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading steps of build %s: %w", traceID, err)
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
// returns how many builds it deleted.
func (s *Store) Expire(cutoff time.Time) (int, error) {
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
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
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
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
	return n, nil
}
