package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/registry"
	"github.com/buildtrace/buildtrace/test/lab"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The CLI tests run bin/buildtrace as a user would, built fresh from this
// tree, against images the buildtrace frontend built and buildtraced traced.

var (
	cliOnce sync.Once
	cliPath string
	cliErr  error
)

func buildtraceCLI(t *testing.T, l *lab.Lab) string {
	t.Helper()
	cliOnce.Do(func() {
		dir, err := os.MkdirTemp("", "buildtrace-cli-")
		if err != nil {
			cliErr = err
			return
		}
		cliPath = filepath.Join(dir, "buildtrace")
		out, err := exec.Command("go", "build", "-o", cliPath, filepath.Join(l.Repo, "cmd", "buildtrace")).CombinedOutput()
		if err != nil {
			cliErr = errors.New(string(out))
		}
	})
	if cliErr != nil {
		t.Fatalf("building cmd/buildtrace: %v", cliErr)
	}
	return cliPath
}

// runCLI runs the CLI and returns its output and exit code.
func runCLI(t *testing.T, l *lab.Lab, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(buildtraceCLI(t, l), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode()
	}
	t.Fatalf("running buildtrace %v: %v", args, err)
	return "", -1
}

func expectCode(t *testing.T, out string, code, want int, args ...string) {
	t.Helper()
	if code != want {
		t.Fatalf("buildtrace %s: exit %d, want %d\n%s", strings.Join(args, " "), code, want, out)
	}
}

// cliBuild builds and pushes a Dockerfile body (BASE is the lab base image)
// through the buildtrace frontend and returns the image reference.
func cliBuild(t *testing.T, ctx context.Context, l *lab.Lab, tag, body string) string {
	t.Helper()
	dir := lab.WriteContext(t, map[string]string{
		"Dockerfile": "# syntax=" + l.Frontend + "\n" + strings.ReplaceAll(body, "BASE", l.BaseImage),
	})
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: tag, Push: true})
	return tag
}

func writePolicy(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// repoTag splits "host/repo:tag" into "host/repo" and the tag.
func repoOf(ref string) string {
	i := strings.LastIndex(ref, ":")
	if i > strings.LastIndex(ref, "/") {
		return ref[:i]
	}
	return ref
}

func pushJSON(t *testing.T, ctx context.Context, c *registry.Client, ref, mediaType string, v any) ocispec.Descriptor {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return pushBytes(t, ctx, c, ref, mediaType, data)
}

func pushBytes(t *testing.T, ctx context.Context, c *registry.Client, ref, mediaType string, data []byte) ocispec.Descriptor {
	t.Helper()
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	target := ref
	if mediaType == ocispec.MediaTypeImageManifest {
		target = repoOf(ref) + "@" + d.Digest.String() // by digest: do not move ref's tag
	}
	if err := c.Push(ctx, target, d, data); err != nil {
		t.Fatal(err)
	}
	return d
}

// republish writes img's index to newRef with the image manifest taken from
// subject (nil: img's own) and img's runtime-trace statement replaced by
// edit(statement) — what an attacker with push access can do.
func republish(t *testing.T, ctx context.Context, img *registry.Image, subject *registry.Manifest, newRef string, edit func([]byte) []byte) {
	t.Helper()
	c := registry.New(registry.Options{})
	if img.Index == nil || len(img.Manifests) != 1 {
		t.Fatalf("%s: want an index with one image manifest", img.Ref)
	}
	if subject == nil {
		subject = &img.Manifests[0]
	}
	att, ok := img.ForManifest(img.Manifests[0].Descriptor.Digest)
	if !ok {
		t.Fatalf("%s: no attestation manifest", img.Ref)
	}
	am := att.Manifest
	am.Layers = append([]ocispec.Descriptor(nil), am.Layers...)
	found := false
	for i, l := range am.Layers {
		if l.Annotations[registry.AnnotationPredicateType] != attest.PredicateType {
			continue
		}
		found = true
		data := edit(append([]byte(nil), att.Statements[i].Data...))
		nd := pushBytes(t, ctx, c, newRef, l.MediaType, data)
		nd.Annotations = l.Annotations
		am.Layers[i] = nd
	}
	if !found {
		t.Fatalf("%s: no runtime-trace statement", img.Ref)
	}
	amd := pushJSON(t, ctx, c, newRef, ocispec.MediaTypeImageManifest, am)
	amd.Annotations = map[string]string{}
	for k, v := range att.Descriptor.Annotations {
		amd.Annotations[k] = v
	}
	amd.Annotations[registry.AnnotationReferenceDigest] = subject.Descriptor.Digest.String()
	amd.Platform = att.Descriptor.Platform
	idx := *img.Index
	idx.Manifests = []ocispec.Descriptor{subject.Descriptor, amd}
	data, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := c.Push(ctx, newRef, d, data); err != nil {
		t.Fatal(err)
	}
}

// flipByteAfter changes one byte of the first occurrence of needle after
// marker (so the edit lands in the predicate's clear-text observations).
func flipByteAfter(t *testing.T, data []byte, marker, needle string) []byte {
	t.Helper()
	m := bytes.Index(data, []byte(marker))
	if m < 0 {
		t.Fatalf("statement has no %q", marker)
	}
	i := bytes.Index(data[m:], []byte(needle))
	if i < 0 {
		t.Fatalf("statement has no %q after %q", needle, marker)
	}
	pos := m + i + len(needle) - 1
	data[pos] ^= 0x01 // "1" -> "0"
	return data
}

func TestCLIVerifyShowDiff(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	key := l.TracerPub
	n := randHex(8)
	body := `FROM BASE
RUN echo ` + n + ` > /nonce.txt
RUN wget -q -O /fetched.json http://127.0.0.1:5000/v2/
`
	honest := cliBuild(t, ctx, l, l.Ref("cli"), body)

	t.Run("honest build passes", func(t *testing.T) {
		out, code := runCLI(t, l, "verify", honest, "--key", key)
		expectCode(t, out, code, 0, "verify", honest)
		if !strings.Contains(out, "layers: 3; bound to the base manifest 1, to traced runs 2,") {
			t.Errorf("binding not reported:\n%s", out)
		}
		out, code = runCLI(t, l, "verify", honest, "--key", key, "--output", "json")
		expectCode(t, out, code, 0)
		var rep struct {
			Pass      bool
			Platforms []struct{ Failures []any }
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.Pass || len(rep.Platforms) != 1 {
			t.Fatalf("json report: %v\n%s", err, out)
		}
	})

	t.Run("show", func(t *testing.T) {
		html := filepath.Join(t.TempDir(), "report.html")
		out, code := runCLI(t, l, "show", honest, "--key", key, "--html", html)
		expectCode(t, out, code, 0)
		for _, want := range []string{"signature: verified with key", "RUN wget", "[executed]", "tcp 127.0.0.1:5000", "/fetched.json", "/nonce.txt"} {
			if !strings.Contains(out, want) {
				t.Errorf("show output lacks %q:\n%s", want, out)
			}
		}
		page, err := os.ReadFile(html)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(page, []byte("127.0.0.1:5000")) || bytes.Contains(page, []byte("<script")) {
			t.Errorf("HTML report lacks the egress or is not self-contained")
		}
		if !bytes.Contains(page, []byte(`<meta http-equiv="Content-Security-Policy" content="default-src 'none';`)) {
			t.Errorf("HTML report has no Content-Security-Policy")
		}
		// Each step's duration in the table is the one its timeline row
		// shows: the same interval, as the tracer saw the container.
		table := regexp.MustCompile(`<td class="n step-duration">([^<]+)</td>`).FindAllSubmatch(page, -1)
		rows := regexp.MustCompile(`<tr class="step executed">.*?<td class="d">([^<]+)</td>`).FindAllSubmatch(page, -1)
		if len(table) != 2 || len(rows) != 2 {
			t.Errorf("HTML report: %d step durations in the table, %d timeline rows; want 2 each", len(table), len(rows))
		} else {
			for i := range table {
				if !bytes.Equal(table[i][1], rows[i][1]) {
					t.Errorf("step %d: %s in the table, %s on the timeline", i, table[i][1], rows[i][1])
				}
			}
		}
		out, code = runCLI(t, l, "show", honest, "--key", key, "--format", "markdown")
		expectCode(t, out, code, 0)
		for _, want := range []string{"| step | status | duration |", "### Dockerfile:", "| tcp 127.0.0.1:5000 |"} {
			if !strings.Contains(out, want) {
				t.Errorf("show --format markdown lacks %q:\n%s", want, out)
			}
		}
		out, code = runCLI(t, l, "show", honest)
		expectCode(t, out, code, 0)
		if !strings.Contains(out, "signature: UNVERIFIED: not checked") {
			t.Errorf("show without --key must say the signature was not checked:\n%s", out)
		}
	})

	t.Run("wrong key fails", func(t *testing.T) {
		dir := t.TempDir()
		out, code := runCLI(t, l, "keygen", "--private", filepath.Join(dir, "k"), "--public", filepath.Join(dir, "k.pub"))
		expectCode(t, out, code, 0)
		out, code = runCLI(t, l, "verify", honest, "--key", filepath.Join(dir, "k.pub"))
		expectCode(t, out, code, 1)
		if !strings.Contains(out, "[signature]") {
			t.Errorf("failure not named:\n%s", out)
		}
	})

	t.Run("one byte changed fails", func(t *testing.T) {
		img := l.Image(t, ctx, honest)
		tampered := l.Ref("cli")
		republish(t, ctx, img, nil, tampered, func(st []byte) []byte {
			return flipByteAfter(t, st, `"monitorLog"`, "127.0.0.1")
		})
		out, code := runCLI(t, l, "verify", tampered, "--key", key)
		expectCode(t, out, code, 1)
		if !strings.Contains(out, "[content]") {
			t.Errorf("failure not named:\n%s", out)
		}
		// The untouched republication still verifies: the edit is what fails.
		same := l.Ref("cli")
		republish(t, ctx, img, nil, same, func(st []byte) []byte { return st })
		out, code = runCLI(t, l, "verify", same, "--key", key)
		expectCode(t, out, code, 0)
	})

	t.Run("attestation moved to another image fails", func(t *testing.T) {
		other := cliBuild(t, ctx, l, repoOf(honest)+":other-"+n, "FROM BASE\nRUN echo evil "+n+" > /nonce.txt\nRUN wget -q -O /fetched.json http://127.0.0.1:5000/v2/\n")
		img := l.Image(t, ctx, honest)
		oimg := l.Image(t, ctx, other)
		moved := l.Ref("cli")
		// Rewrite the (unsigned) statement subject too, so only the
		// layer binding can catch it.
		oldHex, newHex := img.Manifests[0].Descriptor.Digest.Encoded(), oimg.Manifests[0].Descriptor.Digest.Encoded()
		republish(t, ctx, img, &oimg.Manifests[0], moved, func(st []byte) []byte {
			return bytes.ReplaceAll(st, []byte(oldHex), []byte(newHex))
		})
		out, code := runCLI(t, l, "verify", moved, "--key", key)
		expectCode(t, out, code, 1)
		if !strings.Contains(out, "[binding]") || strings.Contains(out, "[subject]") {
			t.Errorf("want a binding failure only:\n%s", out)
		}
	})

	for _, tc := range []struct{ name, policy, rule string }{
		{"egress.flagged", "egress:\n  flagged: [127.0.0.0/8]\n", "egress.flagged"},
		{"egress.allowed", "egress:\n  allowed: ['*.debian.org']\n", "egress.allowed"},
		{"binaries.denied", "binaries:\n  denied: [wget]\n", "binaries.denied"},
		{"files.denyWrite", "files:\n  denyWrite: [/nonce.txt]\n", "files.denyWrite"},
		{"resources", "resources:\n  maxPeakMemoryBytes: 1\n", "resources.maxPeakMemoryBytes"},
		{"cel", "cel:\n- name: offline\n  expr: step.network.size() == 0\n", "cel:offline"},
		{"example flagged-egress", "", "egress.flagged"},
	} {
		t.Run("policy "+tc.name+" fails", func(t *testing.T) {
			p := filepath.Join(l.Repo, "examples", "policies", "flagged-egress.yaml")
			if tc.policy != "" {
				p = writePolicy(t, tc.policy)
			}
			out, code := runCLI(t, l, "verify", honest, "--key", key, "--policy", p)
			expectCode(t, out, code, 1)
			if !strings.Contains(out, "[policy "+tc.rule+"]") || !strings.Contains(out, "Dockerfile:") {
				t.Errorf("failure does not name rule %s and step:\n%s", tc.rule, out)
			}
		})
	}

	t.Run("policy that holds passes", func(t *testing.T) {
		p := writePolicy(t, "egress:\n  allowed: [127.0.0.1:5000]\nbinaries:\n  denied: [curl]\nresources:\n  maxWallSeconds: 600\n")
		out, code := runCLI(t, l, "verify", honest, "--key", key, "--policy", p)
		expectCode(t, out, code, 0)
	})

	t.Run("cached rebuild verifies with its evidence", func(t *testing.T) {
		again := cliBuild(t, ctx, l, l.Ref("cli"), body)
		out, code := runCLI(t, l, "verify", again, "--key", key)
		expectCode(t, out, code, 0)
		if strings.Count(out, "cached (evidence)") != 2 {
			t.Errorf("want both steps cached with evidence:\n%s", out)
		}
	})

	t.Run("diff reports a new destination", func(t *testing.T) {
		out, code := runCLI(t, l, "diff", honest, honest)
		expectCode(t, out, code, 0)
		newer := cliBuild(t, ctx, l, l.Ref("cli"), body+"RUN wget -q -O /health.json http://"+l.TracerAddr+"/v1/health\n")
		out, code = runCLI(t, l, "diff", honest, newer, "--key", key)
		expectCode(t, out, code, 1)
		if !strings.Contains(out, "+ destination tcp "+l.TracerAddr) {
			t.Errorf("new destination not reported:\n%s", out)
		}
	})

	t.Run("usage errors exit 2", func(t *testing.T) {
		out, code := runCLI(t, l, "verify", honest)
		expectCode(t, out, code, 2)
		out, code = runCLI(t, l, "verify", l.Registry+"/test/does-not-exist:x", "--key", key)
		expectCode(t, out, code, 2)
	})
}
