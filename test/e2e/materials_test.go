package e2e

import (
	"context"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/test/lab"
)

// TestMaterials: a RUN downloads a file with wget from the lab registry
// and writes a local one. The signed trace lists the download as a
// material of the step (endpoint, process, the URL from wget's argv, the
// diff's digest) and not the local file; the attestation carries it under
// steps[].runs[].materials, verify passes, and show prints it under
// "downloaded".
func TestMaterials(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n := randHex(8)
	body := `FROM BASE
RUN mkdir -p /app && echo ` + n + ` > /app/local.txt && wget -q -O /app/registry.json http://127.0.0.1:5000/v2/ && \
    wget -q -O /tmp/dl.tmp http://127.0.0.1:5000/v2/_catalog && mv /tmp/dl.tmp /app/moved.json
`
	ref := cliBuild(t, ctx, l, l.Ref("materials"), body)

	pred := runtimeTrace(t, ctx, l, ref)
	b := fetchSignedTrace(t, ctx, l, pred.Buildtrace.BuildTraceID)
	var step *trace.Step
	for i := range b.Steps {
		if _, ok := findProcess(&b.Steps[i], func(p trace.Process) bool { return argvHas(p, "/app/registry.json") }); ok {
			step = &b.Steps[i]
		}
	}
	if step == nil {
		t.Fatalf("no step of the signed trace ran the wget: %+v", b.Steps)
	}
	var diffSum string
	for _, c := range step.Diff.Changes {
		if c.Path == "/app/registry.json" {
			diffSum = c.SHA256
		}
	}
	if diffSum == "" {
		t.Fatalf("the step's diff lacks /app/registry.json: %+v", step.Diff.Changes)
	}
	var got *trace.Material
	for i, m := range step.Materials {
		if m.Path == "/app/local.txt" {
			t.Errorf("a local file is listed as a material: %+v", m)
		}
		if m.Path == "/app/registry.json" {
			got = &step.Materials[i]
		}
	}
	if got == nil {
		t.Fatalf("the signed trace lists no material /app/registry.json: %+v\nfiles %+v\nnetwork %+v", step.Materials, step.Files, step.Network)
	}
	t.Logf("material: %+v url %+v", *got, got.URL)
	if got.Endpoint.Protocol != "tcp" || got.Endpoint.IP != "127.0.0.1" || got.Endpoint.Port != 5000 {
		t.Errorf("material endpoint = %+v", got.Endpoint)
	}
	if path.Base(materialArg0(got.Argv)) != "wget" && path.Base(got.Binary) != "wget" {
		t.Errorf("material process = %s %q, want wget", got.Binary, got.Argv)
	}
	if got.SHA256 != diffSum {
		t.Errorf("material sha256 %s, the diff's %s", got.SHA256, diffSum)
	}
	if u := got.URL; u == nil || u.Scheme != "http" || u.Host != "127.0.0.1" || u.Port != 5000 || u.Path != "/v2/" || u.Method != "GET" {
		t.Errorf("material URL = %+v", got.URL)
	}
	// Downloaded to a temp file that mv renamed into place: the
	// material is the final path, written by the second wget.
	moved := false
	for _, m := range step.Materials {
		if m.Path == "/app/moved.json" {
			moved = true
			if m.URL == nil || m.URL.Path != "/v2/_catalog" || m.Endpoint.Port != 5000 || !slices.Contains(m.Argv, "/tmp/dl.tmp") {
				t.Errorf("renamed material = %+v (url %+v)", m, m.URL)
			}
		}
	}
	if !moved {
		t.Errorf("the file renamed from the download is no material: %+v\nfiles %+v", step.Materials, step.Files)
	}

	// The attestation's readable copy.
	found := false
	for _, s := range pred.Buildtrace.Steps {
		for _, r := range s.Runs {
			for _, m := range r.Materials {
				if m.Name == "/app/registry.json" {
					found = true
					a := m.Annotations
					if m.URI != "http://127.0.0.1:5000/v2/" || m.Digest["sha256"] != strings.TrimPrefix(diffSum, "sha256:") || a.Endpoint != "tcp://127.0.0.1:5000" || a.URLPath != "/v2/" || a.Method != "GET" {
						t.Errorf("attestation material = %+v", m)
					}
				}
			}
		}
	}
	if !found {
		t.Errorf("the attestation lists no material /app/registry.json")
	}

	out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub)
	expectCode(t, out, code, 0, "verify", ref)
	out, code = runCLI(t, l, "show", ref, "--key", l.TracerPub)
	expectCode(t, out, code, 0, "show", ref)
	i := strings.Index(out, "downloaded")
	if i < 0 {
		t.Fatalf("show prints no downloaded section:\n%s", out)
	}
	sec := out[i:]
	if j := strings.Index(sec, "\n  files"); j > 0 {
		sec = sec[:j]
	}
	for _, want := range []string{"/app/registry.json", "127.0.0.1:5000", "wget", "GET http://127.0.0.1:5000/v2/"} {
		if !strings.Contains(sec, want) {
			t.Errorf("show's downloaded section lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(sec, "/app/local.txt") {
		t.Errorf("show lists the local file as downloaded:\n%s", out)
	}
}

func materialArg0(ss []string) string {
	if len(ss) == 0 {
		return ""
	}
	return ss[0]
}
