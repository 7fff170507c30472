package server

import (
	"bytes"
	"context"
	"io"
	"net/http"
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
	c := &tracerapi.Client{Addr: f.addr}
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
}
