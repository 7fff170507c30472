package server

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// blobs holds content the frontend hands over for BuildKit to fetch with an
// HTTP source: an attestation too large to travel inline in an LLB
// definition (gRPC messages stop at 16 MiB). Content-addressed, in memory,
// kept for blobTTL.
type blobs struct {
	mu    sync.Mutex
	byHex map[string]blob
	total int64
}

type blob struct {
	data    []byte
	expires time.Time
}

const (
	blobTTL      = 15 * time.Minute
	blobMaxBytes = 1 << 30 // per blob
	blobMaxTotal = 4 << 30 // all blobs held at once
)

func (b *blobs) expire(now time.Time) {
	for k, v := range b.byHex {
		if now.After(v.expires) {
			b.total -= int64(len(v.data))
			delete(b.byHex, k)
		}
	}
}

func (s *Server) putBlob(w http.ResponseWriter, r *http.Request) {
	want := r.PathValue("sha256")
	if len(want) != 64 {
		writeError(w, http.StatusBadRequest, "invalid blob name %q: want the 64 hex characters of its sha256", want)
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, blobMaxBytes+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading blob: %v", err)
		return
	}
	if len(data) > blobMaxBytes {
		writeError(w, http.StatusRequestEntityTooLarge, "blob larger than %d bytes", blobMaxBytes)
		return
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != want {
		writeError(w, http.StatusBadRequest, "blob content has sha256 %s, not %s", got, want)
		return
	}
	now := time.Now()
	s.blobs.mu.Lock()
	defer s.blobs.mu.Unlock()
	s.blobs.expire(now)
	if old, ok := s.blobs.byHex[want]; ok {
		s.blobs.total -= int64(len(old.data))
	}
	if s.blobs.total+int64(len(data)) > blobMaxTotal {
		writeError(w, http.StatusInsufficientStorage, "holding %d bytes of blobs already, at most %d", s.blobs.total, blobMaxTotal)
		return
	}
	s.blobs.byHex[want] = blob{data: data, expires: now.Add(blobTTL)}
	s.blobs.total += int64(len(data))
	w.WriteHeader(http.StatusCreated)
}

func (s *Server) getBlob(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("sha256")
	s.blobs.mu.Lock()
	b, ok := s.blobs.byHex[name]
	s.blobs.mu.Unlock()
	if !ok || time.Now().After(b.expires) {
		writeError(w, http.StatusNotFound, "no blob %s (they are kept %s)", name, blobTTL)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", fmt.Sprint(len(b.data)))
	w.Header().Set("ETag", `"sha256:`+name+`"`)
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(b.data)
}
