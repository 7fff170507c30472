package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Evidence for cached steps: the signed envelopes of sealed builds, and an
// index from each step that ran in one of them to where its run is. When
// BuildKit serves a step from its cache, the tracer puts the envelope of
// the build that ran it into the new build's trace.
var (
	envelopesBucket = []byte("envelopes") // traceID → stored envelope (JSON storedEnvelope)
	runsBucket      = []byte("runs")      // stepID/diffDigest → JSON RunRef (the latest)
)

// DefaultEvidenceRetention is how long a sealed build's envelope is kept
// as evidence for later cached builds.
const DefaultEvidenceRetention = 30 * 24 * time.Hour

// DefaultEvidenceMaxBytes bounds the envelopes kept as evidence.
const DefaultEvidenceMaxBytes = 1 << 30

// RunRef says where a step's run is: which sealed build, which container.
type RunRef struct {
	StepID       string    `json:"stepID"`
	DiffDigest   string    `json:"diffDigest"`
	BuildTraceID string    `json:"buildTraceID"`
	ContainerID  string    `json:"containerID"`
	Sealed       time.Time `json:"sealed"`
}

type storedEnvelope struct {
	Sealed   time.Time       `json:"sealed"`
	Envelope json.RawMessage `json:"envelope"`
}

// PutEvidence keeps a sealed build's envelope and indexes its runs. An
// envelope already held is replaced (a re-sealed build).
func (s *Store) PutEvidence(traceID string, envelope []byte, runs []RunRef, now time.Time) error {
	dt, err := json.Marshal(storedEnvelope{Sealed: now.UTC(), Envelope: envelope})
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		eb, err := tx.CreateBucketIfNotExists(envelopesBucket)
		if err != nil {
			return err
		}
		rb, err := tx.CreateBucketIfNotExists(runsBucket)
		if err != nil {
			return err
		}
		if err := eb.Put([]byte(traceID), dt); err != nil {
			return err
		}
		for _, r := range runs {
			r.BuildTraceID, r.Sealed = traceID, now.UTC()
			v, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if err := rb.Put([]byte(r.StepID+"/"+r.DiffDigest), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Evidence returns, newest first, up to limit runs of stepID whose build
// envelope is still held, one per distinct diff digest, with the envelope.
func (s *Store) Evidence(stepID string, limit int) ([]RunRef, [][]byte, error) {
	var refs []RunRef
	var envs [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		rb, eb := tx.Bucket(runsBucket), tx.Bucket(envelopesBucket)
		if rb == nil || eb == nil {
			return nil
		}
		c := rb.Cursor()
		prefix := []byte(stepID + "/")
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var r RunRef
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("run index %s: %w", k, err)
			}
			refs = append(refs, r)
		}
		sort.SliceStable(refs, func(i, j int) bool { return refs[i].Sealed.After(refs[j].Sealed) })
		kept := refs[:0]
		for _, r := range refs {
			raw := eb.Get([]byte(r.BuildTraceID))
			if raw == nil {
				continue // evicted
			}
			var se storedEnvelope
			if err := json.Unmarshal(raw, &se); err != nil {
				return fmt.Errorf("envelope of build %s: %w", r.BuildTraceID, err)
			}
			kept = append(kept, r)
			envs = append(envs, append([]byte(nil), se.Envelope...))
			if len(kept) == limit {
				break
			}
		}
		refs = kept
		return nil
	})
	return refs, envs, err
}

// Eviction says what ExpireEvidence removed.
type Eviction struct {
	Builds int   `json:"builds"`
	Bytes  int64 `json:"bytes"`
	// Held is what is left.
	HeldBuilds int   `json:"heldBuilds"`
	HeldBytes  int64 `json:"heldBytes"`
}

// ExpireEvidence removes envelopes sealed before cutoff, then the oldest
// ones until at most maxBytes are held, and the index entries of removed
// builds.
func (s *Store) ExpireEvidence(cutoff time.Time, maxBytes int64) (Eviction, error) {
	var ev Eviction
	err := s.db.Update(func(tx *bolt.Tx) error {
		eb, rb := tx.Bucket(envelopesBucket), tx.Bucket(runsBucket)
		if eb == nil {
			return nil
		}
		type held struct {
			id     string
			sealed time.Time
			size   int64
		}
		var all []held
		var total int64
		err := eb.ForEach(func(k, v []byte) error {
			var se storedEnvelope
			_ = json.Unmarshal(v, &se)
			all = append(all, held{string(k), se.Sealed, int64(len(v))})
			total += int64(len(v))
			return nil
		})
		if err != nil {
			return err
		}
		sort.Slice(all, func(i, j int) bool { return all[i].sealed.Before(all[j].sealed) })
		gone := map[string]bool{}
		for _, h := range all {
			if !h.sealed.Before(cutoff) && total <= maxBytes {
				break
			}
			if err := eb.Delete([]byte(h.id)); err != nil {
				return err
			}
			gone[h.id] = true
			total -= h.size
			ev.Builds++
			ev.Bytes += h.size
		}
		ev.HeldBuilds, ev.HeldBytes = len(all)-ev.Builds, total
		if rb == nil || len(gone) == 0 {
			return nil
		}
		var dead [][]byte
		err = rb.ForEach(func(k, v []byte) error {
			var r RunRef
			if json.Unmarshal(v, &r) != nil || gone[r.BuildTraceID] {
				dead = append(dead, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range dead {
			if err := rb.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	return ev, err
}
