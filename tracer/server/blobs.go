package server

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
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
	// total counts the bytes held plus those reserved by PUTs still
	// reading their body, so concurrent PUTs cannot overcommit.
	total int64
	// Limits; zero means blobMaxBytes and blobMaxTotal. Fields so tests
	// can use small ones.
	maxBytes int64 // per blob
	maxTotal int64 // held and reserved at once
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

// BlobReadTimeout bounds the reading of one PUT blob's body. The daemon's
// server-wide timeouts must be longer.
const BlobReadTimeout = 2 * time.Minute

func (b *blobs) limits() (perBlob, total int64) {
	perBlob, total = b.maxBytes, b.maxTotal
	if perBlob <= 0 {
		perBlob = blobMaxBytes
	}
	if total <= 0 {
		total = blobMaxTotal
	}
	return perBlob, total
}

func (b *blobs) expire(now time.Time) {
	for k, v := range b.byHex {
		if now.After(v.expires) {
			b.total -= int64(len(v.data))
			delete(b.byHex, k)
		}
	}
}

// validBlobName reports whether name is the lowercase hex of a sha256.
func validBlobName(name string) bool {
	if len(name) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// putBlob decides from the declared length alone whether the blob may be
// held, reserving its bytes before reading any of the body: a client
// cannot make the tracer buffer what it will then refuse.
func (s *Server) putBlob(w http.ResponseWriter, r *http.Request) {
	want := r.PathValue("sha256")
	if !validBlobName(want) {
		writeError(w, http.StatusBadRequest, "invalid blob name %q: want the 64 lowercase hex characters of its sha256", want)
		return
	}
	n := r.ContentLength
	if n < 0 {
		writeError(w, http.StatusLengthRequired, "a blob PUT needs a Content-Length")
		return
	}
	maxBytes, maxTotal := s.blobs.limits()
	if n > maxBytes {
		writeError(w, http.StatusRequestEntityTooLarge, "blob of %d bytes is larger than %d bytes", n, maxBytes)
		return
	}

	s.blobs.mu.Lock()
	s.blobs.expire(time.Now())
	if s.blobs.total+n > maxTotal {
		held := s.blobs.total
		s.blobs.mu.Unlock()
		writeError(w, http.StatusInsufficientStorage, "holding %d bytes of blobs already, at most %d", held, maxTotal)
		return
	}
	s.blobs.total += n
	s.blobs.mu.Unlock()
	committed := false
	defer func() {
		if !committed {
			s.blobs.mu.Lock()
			s.blobs.total -= n
			s.blobs.mu.Unlock()
		}
	}()

	// The server's ReadTimeout is longer, to let trace requests wait.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(BlobReadTimeout))
	body := http.MaxBytesReader(w, r.Body, n)
	h := sha256.New()
	data := make([]byte, n) // no more than reserved
	if _, err := io.ReadFull(io.TeeReader(body, h), data); err != nil {
		writeError(w, http.StatusBadRequest, "reading blob: body shorter than its Content-Length of %d bytes: %v", n, err)
		return
	}
	if _, err := io.ReadFull(body, make([]byte, 1)); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "reading blob: body longer than its Content-Length of %d bytes", n)
		return
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		writeError(w, http.StatusBadRequest, "blob content has sha256 %s, not %s", got, want)
		return
	}

	now := time.Now()
	s.blobs.mu.Lock()
	if old, ok := s.blobs.byHex[want]; ok {
		// Same content (same digest) already held: keep one copy, and
		// let the reservation go.
		old.expires = now.Add(blobTTL)
		s.blobs.byHex[want] = old
	} else {
		s.blobs.byHex[want] = blob{data: data, expires: now.Add(blobTTL)}
		committed = true // the reservation now counts the held bytes
	}
	s.blobs.mu.Unlock()
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
