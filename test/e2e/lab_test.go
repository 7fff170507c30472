package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/test/lab"
)

// TestHelloBuildsAndPushes builds examples/hello through the lab's buildx
// builder and reads the pushed index back with containerd's remotes.
func TestHelloBuildsAndPushes(t *testing.T) {
	l := lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ref := l.Ref("hello")
	l.MustBuild(t, ctx, lab.Build{Context: filepath.Join(l.Repo, "examples", "hello"), Tag: ref, Push: true})
	img := l.Image(t, ctx, ref)
	if len(img.Manifests) != 1 {
		t.Fatalf("want 1 image manifest, got %d", len(img.Manifests))
	}
	m := img.Manifests[0]
	if m.Platform.OS != "linux" || m.Platform.Architecture != "amd64" {
		t.Errorf("platform = %+v, want linux/amd64", m.Platform)
	}
	if len(m.Manifest.Layers) < 2 {
		t.Errorf("want the base layer plus the example's layers, got %d layers", len(m.Manifest.Layers))
	}
	if got := strings.Join(m.Config.Config.Cmd, " "); got != "cat /app/greeting.txt" {
		t.Errorf("CMD = %q", got)
	}
}

// TestProvenanceAttestationFound checks the helper finds BuildKit's own
// provenance attestation manifest in the index.
func TestProvenanceAttestationFound(t *testing.T) {
	l := lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ref := l.Ref("hello-provenance")
	l.MustBuild(t, ctx, lab.Build{
		Context: filepath.Join(l.Repo, "examples", "hello"), Tag: ref, Push: true,
		Args: []string{"--attest", "type=provenance,mode=max"},
	})
	img := l.Image(t, ctx, ref)
	if img.Index == nil || len(img.Manifests) != 1 {
		t.Fatalf("want an index with one image manifest, got index=%v manifests=%d", img.Index != nil, len(img.Manifests))
	}
	att, ok := img.ForManifest(img.Manifests[0].Descriptor.Digest)
	if !ok {
		t.Fatalf("no attestation manifest refers to %s", img.Manifests[0].Descriptor.Digest)
	}
	st, ok := att.Statement("https://slsa.dev/provenance/v0.2")
	if !ok {
		st, ok = att.Statement("https://slsa.dev/provenance/v1")
	}
	if !ok {
		t.Fatalf("attestation has no provenance statement: %+v", att.Statements)
	}
	var statement struct {
		Subject []struct {
			Digest map[string]string `json:"digest"`
		} `json:"subject"`
	}
	if err := json.Unmarshal(st.Data, &statement); err != nil {
		t.Fatalf("provenance statement: %v", err)
	}
	want := strings.TrimPrefix(img.Manifests[0].Descriptor.Digest.String(), "sha256:")
	if len(statement.Subject) == 0 || statement.Subject[0].Digest["sha256"] != want {
		t.Errorf("provenance subject %+v, want sha256 %s", statement.Subject, want)
	}
}

// TestLabRestartsKilledBuildkitd kills buildkitd and checks `make lab`'s
// script brings it back.
func TestLabRestartsKilledBuildkitd(t *testing.T) {
	l := lab.Require(t)
	l.Kill(t, "buildkitd")
	time.Sleep(500 * time.Millisecond)
	l.Up(t)
	out, err := exec.Command(filepath.Join(l.Repo, "hack", "lab.sh"), "status").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "buildkitd    up") {
		t.Fatalf("buildkitd not back: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l.MustBuild(t, ctx, lab.Build{Context: filepath.Join(l.Repo, "examples", "hello")})
}
