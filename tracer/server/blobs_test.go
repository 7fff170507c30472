package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/tracerapi"
)

// TestBlobs: content handed over with PutBlob comes back from the URL
// BuildKit's HTTP source will fetch; a name that is not the content's
// digest is refused, and an unknown blob is a 404.
func TestBlobs(t *testing.T) {
	f := newFixture(t, t.TempDir(), time.Second)
	f.frontendOf.Store(buildA) // blob writes are for a build's frontend
	c := f.client()
	data := bytes.Repeat([]byte("attestation "), 1<<20) // 12 MiB
	url, dgst, err := c.PutBlob(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(dgst, "sha256:") || !strings.HasSuffix(url, strings.TrimPrefix(dgst, "sha256:")) {
		t.Fatalf("url %s, digest %s", url, dgst)
	}
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
		t.Fatalf("GET %s: %s, %d bytes back of %d", url, res.Status, len(got), len(data))
	}

	wrong := "http://" + f.addr + tracerapi.BlobPath + strings.Repeat("0", 64)
	req, _ := http.NewRequest(http.MethodPut, wrong, bytes.NewReader([]byte("x")))
	signAs(req, f.key, 100, strings.Repeat("0", 64))
	status := func(res *http.Response, err error) int {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := status(http.DefaultClient.Do(req)); code != http.StatusBadRequest {
		t.Errorf("PUT with a wrong digest: %d, want 400", code)
	}
	if code := status(http.Get(wrong)); code != http.StatusNotFound {
		t.Errorf("GET of an unknown blob: %d, want 404", code)
	}

	// A chunked body has no Content-Length to reserve by.
	req, _ = http.NewRequest(http.MethodPut, url, io.MultiReader(bytes.NewReader(data)))
	signAs(req, f.key, 101, strings.TrimPrefix(dgst, "sha256:"))
	if code := status(http.DefaultClient.Do(req)); code != http.StatusLengthRequired {
		t.Errorf("chunked PUT: %d, want 411", code)
	}
}

func newBlobServer(maxBytes, maxTotal int64) *Server {
	return &Server{blobs: blobs{byHex: make(map[string]blob), maxBytes: maxBytes, maxTotal: maxTotal}}
}

func blobName(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// put sends a PUT of body declaring length (-1: none) to putBlob, past
// the check of the caller that Handler puts in front of it.
func put(s *Server, name string, body io.Reader, length int64) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPut, tracerapi.BlobPath+name, body)
	req.SetPathValue("sha256", name)
	req.ContentLength = length
	rec := httptest.NewRecorder()
	s.putBlob(rec, req)
	return rec
}

func get(s *Server, name string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, tracerapi.BlobPath+name, nil)
	req.SetPathValue("sha256", name)
	rec := httptest.NewRecorder()
	s.getBlob(rec, req)
	return rec
}

func (s *Server) blobTotal() int64 {
	s.blobs.mu.Lock()
	defer s.blobs.mu.Unlock()
	return s.blobs.total
}

// unread fails the test if the handler reads the body: the refusals
// below must be decided from the headers alone.
type unread struct{ t *testing.T }

func (u unread) Read([]byte) (int, error) {
	u.t.Error("body read")
	return 0, io.EOF
}

func TestBlobPutRefusedUnread(t *testing.T) {
	s := newBlobServer(10, 16)
	name := strings.Repeat("a", 64)
	if rec := put(s, name, unread{t}, -1); rec.Code != http.StatusLengthRequired {
		t.Errorf("no Content-Length: %d, want 411", rec.Code)
	}
	if rec := put(s, name, unread{t}, 11); rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("Content-Length over the per-blob max: %d, want 413", rec.Code)
	}
	good := []byte("0123456789")
	if rec := put(s, blobName(good), bytes.NewReader(good), 10); rec.Code != http.StatusCreated {
		t.Fatalf("good blob: %d %s", rec.Code, rec.Body)
	}
	if rec := put(s, name, unread{t}, 7); rec.Code != http.StatusInsufficientStorage {
		t.Errorf("over the total: %d, want 507", rec.Code)
	}
	for _, bad := range []string{strings.Repeat("A", 64), strings.Repeat("a", 63), strings.Repeat("g", 64), strings.Repeat("a", 65)} {
		if rec := put(s, bad, unread{t}, 1); rec.Code != http.StatusBadRequest {
			t.Errorf("name %q: %d, want 400", bad, rec.Code)
		}
	}
	if got := s.blobTotal(); got != 10 {
		t.Errorf("total %d after refusals, want 10", got)
	}
}

// blocking signals its first Read, then waits for release.
type blocking struct {
	started, release chan struct{}
	r                io.Reader
}

func (b *blocking) Read(p []byte) (int, error) {
	if b.started != nil {
		close(b.started)
		b.started = nil
		<-b.release
	}
	return b.r.Read(p)
}

// TestBlobPutReserves: a PUT still reading its body holds its share of the
// quota, so a second one that fits only alone is refused.
func TestBlobPutReserves(t *testing.T) {
	s := newBlobServer(10, 16)
	a := []byte("0123456789")
	body := &blocking{started: make(chan struct{}), release: make(chan struct{}), r: bytes.NewReader(a)}
	started := body.started
	done := make(chan int)
	go func() { done <- put(s, blobName(a), body, 10).Code }()
	<-started
	if rec := put(s, strings.Repeat("b", 64), unread{t}, 10); rec.Code != http.StatusInsufficientStorage {
		t.Errorf("second PUT while the first reads: %d, want 507", rec.Code)
	}
	close(body.release)
	if code := <-done; code != http.StatusCreated {
		t.Errorf("first PUT: %d, want 201", code)
	}
	if got := s.blobTotal(); got != 10 {
		t.Errorf("total %d, want 10", got)
	}
}

// TestBlobPutBadBody: a body that is not what its name and length say is
// refused, and its reservation given back.
func TestBlobPutBadBody(t *testing.T) {
	s := newBlobServer(10, 10)
	data := []byte("0123456789")
	for _, c := range []struct {
		what   string
		name   string
		body   []byte
		length int64
	}{
		{"digest mismatch", strings.Repeat("0", 64), data, 10},
		{"short body", blobName(data), data[:5], 10},
		{"long body", blobName(data[:3]), data, 3},
	} {
		if rec := put(s, c.name, bytes.NewReader(c.body), c.length); rec.Code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", c.what, rec.Code)
		}
		if got := s.blobTotal(); got != 0 {
			t.Errorf("%s: total %d, want 0: reservation not released", c.what, got)
		}
	}
	// The whole quota is free again.
	if rec := put(s, blobName(data), bytes.NewReader(data), 10); rec.Code != http.StatusCreated {
		t.Errorf("PUT after refusals: %d %s", rec.Code, rec.Body)
	}
}

func TestBlobRoundTrip(t *testing.T) {
	s := newBlobServer(10, 16)
	data := []byte("attest")
	name := blobName(data)
	for i := range 2 { // the same content twice is held once
		if rec := put(s, name, bytes.NewReader(data), int64(len(data))); rec.Code != http.StatusCreated {
			t.Fatalf("PUT %d: %d %s", i, rec.Code, rec.Body)
		}
		if got := s.blobTotal(); got != int64(len(data)) {
			t.Errorf("PUT %d: total %d, want %d", i, got, len(data))
		}
	}
	rec := get(s, name)
	if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), data) {
		t.Errorf("GET: %d %q, want 200 %q", rec.Code, rec.Body, data)
	}

	// An expired blob gives its bytes back.
	s.blobs.mu.Lock()
	b := s.blobs.byHex[name]
	b.expires = time.Now().Add(-time.Second)
	s.blobs.byHex[name] = b
	s.blobs.mu.Unlock()
	if rec := get(s, name); rec.Code != http.StatusNotFound {
		t.Errorf("GET of an expired blob: %d, want 404", rec.Code)
	}
	big := []byte("0123456789")
	if rec := put(s, blobName(big), bytes.NewReader(big), 10); rec.Code != http.StatusCreated {
		t.Errorf("PUT after expiry: %d %s", rec.Code, rec.Body)
	}
}
