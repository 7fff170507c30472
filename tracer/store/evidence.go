package store

import (
	"bytes"
	"encoding/json"
	"errors"
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
	envelopesBucket = []byte("envelopes") // traceID → JSON envelopeRef: seal time and the envelope's blob
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

// envelopeRef is an envelope's index entry: when its build was sealed
// (expiry needs no more) and the blob that holds the envelope.
type envelopeRef struct {
	Sealed time.Time `json:"sealed"`
	blobRef
}

// PutEvidence keeps a sealed build's envelope and indexes its runs. An
// envelope already held is replaced (a re-sealed build).
func (s *Store) PutEvidence(traceID string, envelope []byte, runs []RunRef, now time.Time) error {
	ref, err := s.writeBlob(envelope, true)
	if err != nil {
		return fmt.Errorf("keeping the envelope of build %s: %w", traceID, err)
	}
	dt, err := json.Marshal(envelopeRef{Sealed: now.UTC(), blobRef: ref})
	if err != nil {
		return err
	}
	var replaced []string
	s.mu.RLock()
	err = s.db.Update(func(tx *bolt.Tx) error {
		replaced = nil
		eb, rb := tx.Bucket(envelopesBucket), tx.Bucket(runsBucket)
		if prev := eb.Get([]byte(traceID)); prev != nil {
			var old envelopeRef
			if json.Unmarshal(prev, &old) == nil {
				replaced = append(replaced, old.Blob)
			}
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
	s.mu.RUnlock()
	if err != nil {
		s.removeBlobs([]string{ref.Blob})
		return fmt.Errorf("keeping the envelope of build %s: %w", traceID, err)
	}
	s.deleteBlobs(replaced)
	return nil
}

// Evidence returns, newest first, up to limit runs of stepID whose build
// envelope is still held, one per distinct diff digest, with the envelope.
// An envelope whose file is missing or corrupt is left out and named in
// the error, next to what was found.
func (s *Store) Evidence(stepID string, limit int) ([]RunRef, [][]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var refs []RunRef
	var held []envelopeRef
	err := s.db.View(func(tx *bolt.Tx) error {
		rb, eb := tx.Bucket(runsBucket), tx.Bucket(envelopesBucket)
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
			var e envelopeRef
			if err := json.Unmarshal(raw, &e); err != nil {
				return fmt.Errorf("envelope index of build %s: %w", r.BuildTraceID, err)
			}
			kept = append(kept, r)
			held = append(held, e)
		}
		refs = kept
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	var out []RunRef
	var envs [][]byte
	var errs []error
	for i, r := range refs {
		if len(out) == limit {
			break
		}
		env, err := s.readBlob(held[i].blobRef)
		if err != nil {
			errs = append(errs, fmt.Errorf("envelope of build %s: %w", r.BuildTraceID, err))
			continue
		}
		out = append(out, r)
		envs = append(envs, env)
	}
	return out, envs, errors.Join(errs...)
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
	s.mu.Lock()
	defer s.mu.Unlock()
	var ev Eviction
	var files []string
	err := s.db.Update(func(tx *bolt.Tx) error {
		ev, files = Eviction{}, nil
		eb, rb := tx.Bucket(envelopesBucket), tx.Bucket(runsBucket)
		type held struct {
			id string
			envelopeRef
		}
		var all []held
		var total int64
		// The index alone: seal times and sizes, no envelope is read.
		err := eb.ForEach(func(k, v []byte) error {
			h := held{id: string(k)}
			_ = json.Unmarshal(v, &h.envelopeRef) // undecodable: sealed at zero, goes first
			all = append(all, h)
			total += h.Size
			return nil
		})
		if err != nil {
			return err
		}
		sort.Slice(all, func(i, j int) bool { return all[i].Sealed.Before(all[j].Sealed) })
		gone := map[string]bool{}
		for _, h := range all {
			if !h.Sealed.Before(cutoff) && total <= maxBytes {
				break
			}
			if err := eb.Delete([]byte(h.id)); err != nil {
				return err
			}
			gone[h.id] = true
			files = append(files, h.Blob)
			total -= h.Size
			ev.Builds++
			ev.Bytes += h.Size
		}
		ev.HeldBuilds, ev.HeldBytes = len(all)-ev.Builds, total
		if len(gone) == 0 {
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
	if err != nil {
		return Eviction{}, fmt.Errorf("expiring evidence: %w", err)
	}
	s.removeBlobs(files)
	return ev, nil
}
