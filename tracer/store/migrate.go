package store

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// migrate moves a store of an earlier version (one bbolt file, values
// inside it) into the index and blob files, then removes it, so an
// upgrade loses nothing sealed. The old file is mapped only while this
// runs. A crash part way leaves the old file, and orphan blobs that Open
// removes; the next Open migrates again.
func (s *Store) migrate(path string) error {
	old, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, ReadOnly: true})
	if err != nil {
		return err
	}
	type put struct{ bucket, key, value []byte }
	var puts []put
	var written []string
	blob := func(v []byte) ([]byte, error) {
		// No sync per file: one syncfs below covers them all.
		ref, err := s.writeBlob(v, false)
		if err != nil {
			return nil, err
		}
		written = append(written, ref.Blob)
		return json.Marshal(ref)
	}
	err = old.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(stepsBucket); b != nil {
			err := b.ForEach(func(k, v []byte) error {
				idx, err := blob(v)
				puts = append(puts, put{stepsBucket, append([]byte(nil), k...), idx})
				return err
			})
			if err != nil {
				return err
			}
		}
		if b := tx.Bucket(envelopesBucket); b != nil {
			err := b.ForEach(func(k, v []byte) error {
				var se struct {
					Sealed   time.Time       `json:"sealed"`
					Envelope json.RawMessage `json:"envelope"`
				}
				if json.Unmarshal(v, &se) != nil {
					return nil // unreadable before, never served: dropped
				}
				ref, err := s.writeBlob(se.Envelope, false)
				if err != nil {
					return err
				}
				written = append(written, ref.Blob)
				idx, err := json.Marshal(envelopeRef{Sealed: se.Sealed, blobRef: ref})
				puts = append(puts, put{envelopesBucket, append([]byte(nil), k...), idx})
				return err
			})
			if err != nil {
				return err
			}
		}
		// Small values: copied as they are.
		for _, name := range [][]byte{buildsBucket, runsBucket} {
			if b := tx.Bucket(name); b != nil {
				err := b.ForEach(func(k, v []byte) error {
					puts = append(puts, put{name, append([]byte(nil), k...), append([]byte(nil), v...)})
					return nil
				})
				if err != nil {
					return err
				}
			}
		}
		return nil
	})
	old.Close()
	if err == nil {
		err = s.syncBlobs()
	}
	if err != nil {
		s.removeBlobs(written)
		return err
	}
	var replaced []string
	err = s.db.Update(func(tx *bolt.Tx) error {
		replaced = nil
		for _, p := range puts {
			b := tx.Bucket(p.bucket)
			if prev := b.Get(p.key); prev != nil {
				var r blobRef
				if json.Unmarshal(prev, &r) == nil && r.Blob != "" {
					replaced = append(replaced, r.Blob)
				}
			}
			if err := b.Put(p.key, p.value); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.removeBlobs(written)
		return err
	}
	s.removeBlobs(replaced)
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing the migrated store: %w", err)
	}
	return nil
}

// syncBlobs puts every blob written so far, and the directory, on disk.
func (s *Store) syncBlobs() error {
	d, err := os.Open(s.blobs)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("syncing blobs: %w", err)
	}
	return nil
}
