package verify

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/fsdiff"
	"github.com/buildtrace/buildtrace/pkg/policy"
	"github.com/buildtrace/buildtrace/pkg/sign"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

const traceID = "0af7651916cd43dd8448eb211c80319c"

// fixture is a signed build of two RUN steps and the image it made.
type fixture struct {
	dir        string
	pub        string
	target     Target
	blobs      map[digest.Digest][]byte
	statement  map[string]any
	baseLayers []ocispec.Descriptor
}

func layerTar(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	dirs := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		// Parents first, as BuildKit's differ writes a new directory.
		for i, c := range name {
			if d := name[:i+1]; c == '/' && !dirs[d] {
				dirs[d] = true
				if err := tw.WriteHeader(&tar.Header{Name: d, Mode: 0o755, Typeflag: tar.TypeDir, ModTime: time.Unix(0, 0)}); err != nil {
					t.Fatal(err)
				}
			}
		}
		content := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(content))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func diffDigest(t *testing.T, blob []byte) string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	d, _, err := fsdiff.FromLayer(context.Background(), zr, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func uncompressedDigest(t *testing.T, blob []byte) digest.Digest {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	d, err := digest.FromReader(zr)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newFixture(t *testing.T, mutate func(b *trace.Build)) *fixture {
	t.Helper()
	return newSigningFixture(t, func(b *trace.Build, _ func(trace.Build) *dsse.Envelope) {
		if mutate != nil {
			mutate(b)
		}
	})
}

// newSigningFixture is newFixture whose mutate can sign other builds'
// traces with the fixture's key (evidence).
func newSigningFixture(t *testing.T, mutate func(b *trace.Build, sign func(trace.Build) *dsse.Envelope)) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "k"), filepath.Join(dir, "k.pub")
	if err := sign.GenerateKeyPair(priv, pub); err != nil {
		t.Fatal(err)
	}
	f := &fixture{dir: dir, pub: pub, blobs: map[digest.Digest][]byte{}}
	base := layerTar(t, map[string]string{"bin/sh": "busybox"})
	l1 := layerTar(t, map[string]string{"built-on.txt": "x86_64\n"})
	l2 := layerTar(t, map[string]string{"app/registry.json": "{}"})
	var layers []ocispec.Descriptor
	var diffIDs []digest.Digest
	for _, b := range [][]byte{base, l1, l2} {
		d := digest.FromBytes(b)
		f.blobs[d] = b
		layers = append(layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: int64(len(b))})
		diffIDs = append(diffIDs, uncompressedDigest(t, b))
	}
	start := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	exit := 0
	b := trace.Build{
		Version: trace.Version, BuildTraceID: traceID,
		Tracer:      trace.Tracer{Name: "buildtraced", Version: "test", Host: "lab", Kernel: "6.18", Since: start.Add(-time.Hour)},
		GeneratedAt: start.Add(time.Minute),
		Steps: []trace.Step{
			{StepID: "11111111111111111111111111111111", ContainerID: "c1", Start: start.Add(time.Second), End: start.Add(2 * time.Second),
				Processes:    []trace.Process{{PID: 100, Exec: true, Binary: "/bin/sh", Argv: []string{"/bin/sh", "-c", "uname -m > /built-on.txt"}, ExitCode: &exit, Start: start.Add(time.Second)}},
				Files:        []trace.FileOp{{Op: trace.OpCreate, Path: "/built-on.txt", PID: 100, Time: start.Add(time.Second)}},
				Diff:         trace.Diff{Digest: diffDigest(t, l1)},
				Resources:    trace.Resources{WallNanos: 1e9, Processes: 1},
				Completeness: trace.Completeness{Complete: true, FollowedFromStart: true}},
			{StepID: "22222222222222222222222222222222", ContainerID: "c2", Start: start.Add(3 * time.Second), End: start.Add(4 * time.Second),
				Processes: []trace.Process{
					{PID: 200, Exec: true, Binary: "/bin/sh", Argv: []string{"/bin/sh", "-c", "wget ..."}, ExitCode: &exit, Start: start.Add(3 * time.Second)},
					{PID: 201, PPID: 200, Exec: true, Binary: "/bin/wget", Argv: []string{"wget", "-q", "-O", "/app/registry.json", "http://127.0.0.1:5000/v2/"}, ExitCode: &exit, Start: start.Add(3 * time.Second)},
				},
				Network:      []trace.Destination{{Protocol: "tcp", IP: "127.0.0.1", Port: 5000, Op: "connect", PIDs: []uint32{201}, Count: 1, First: start.Add(3 * time.Second)}},
				Diff:         trace.Diff{Digest: diffDigest(t, l2), Changes: []trace.FileChange{{Change: trace.ChangeCreated, Path: "/app/registry.json", Type: "file"}}},
				Resources:    trace.Resources{WallNanos: 1e9, Processes: 2},
				Completeness: trace.Completeness{Complete: true, FollowedFromStart: true}},
		},
	}
	b.Sealed = true
	b.Requester = trace.Requester{Kind: trace.RequesterFrontend, PID: 9, ContainerID: "fe", Executable: "/run", ExecutableDigest: "sha256:fe"}
	b.Plan = []trace.PlanPart{{
		ID: "sha256:part", Platform: "linux/amd64", Received: start,
		Base: &trace.BaseImage{Ref: "127.0.0.1:5000/library/busybox@sha256:base", Digest: "sha256:base"},
		Layers: []trace.LayerOp{
			{Kind: trace.LayerRun, OpDigest: "sha256:op1", StepID: "11111111111111111111111111111111"},
			{Kind: trace.LayerRun, OpDigest: "sha256:op2", StepID: "22222222222222222222222222222222"},
		},
		Steps: []trace.PlanStep{
			{StepID: "11111111111111111111111111111111", OpDigest: "sha256:op1", Instruction: "RUN uname -m > /built-on.txt", Stage: "stage-0", Platform: "linux/amd64",
				Args: []string{"/bin/sh", "-c", "uname -m > /built-on.txt"}, Locations: []trace.Location{{File: "Dockerfile", StartLine: 3, EndLine: 3}}},
			{StepID: "22222222222222222222222222222222", OpDigest: "sha256:op2", Instruction: "RUN wget -q -O /app/registry.json http://127.0.0.1:5000/v2/", Stage: "stage-0", Platform: "linux/amd64",
				Locations: []trace.Location{{File: "Dockerfile", StartLine: 4, EndLine: 5}}},
		},
	}}
	b.Results = map[string]string{"linux/amd64": "sha256:part"}
	f.baseLayers = layers[:1]
	s, err := sign.LoadSigner(ctx, priv)
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(&b, func(o trace.Build) *dsse.Envelope {
			dt, err := json.Marshal(o)
			if err != nil {
				t.Fatal(err)
			}
			env, err := sign.Sign(ctx, s, trace.PayloadType, dt)
			if err != nil {
				t.Fatal(err)
			}
			return env
		})
	}
	payload, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	env, err := sign.Sign(ctx, s, trace.PayloadType, payload)
	if err != nil {
		t.Fatal(err)
	}
	pred, err := attest.Derive(attest.Input{
		Envelope: env, BuildStart: start, Platform: "linux/amd64", BuildTraceID: traceID, Monitored: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	predJSON, err := attest.Marshal(pred)
	if err != nil {
		t.Fatal(err)
	}
	f.target = Target{
		Platform: "linux/amd64",
		Image:    ocispec.Manifest{Layers: layers},
		Config: ocispec.Image{RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}, History: []ocispec.History{
			{CreatedBy: "COPY rootfs/ / # buildkit"},
			{CreatedBy: "ENV A=b", EmptyLayer: true},
			{CreatedBy: "RUN /bin/sh -c uname -m > /built-on.txt # buildkit"},
			{CreatedBy: "RUN /bin/sh -c wget -q -O /app/registry.json http://127.0.0.1:5000/v2/ # buildkit"},
		}},
	}
	mf, _ := json.Marshal(f.target.Image)
	f.target.Manifest = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(mf), Size: int64(len(mf))}
	f.statement = map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"predicateType": attest.PredicateType,
		"subject":       []any{map[string]any{"name": "img", "digest": map[string]any{"sha256": f.target.Manifest.Digest.Encoded()}}},
		"predicate":     json.RawMessage(predJSON),
	}
	f.target.Statement, _ = json.Marshal(f.statement)
	return f
}

func (f *fixture) opts(t *testing.T, pub, policyYAML string) Options {
	t.Helper()
	v, err := sign.LoadVerifier(context.Background(), pub)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Verifier: v, OpenLayer: func(_ context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(f.blobs[d.Digest])), nil
	}, BaseLayers: func(context.Context, string, string) ([]ocispec.Descriptor, error) {
		return f.baseLayers, nil
	}}
	if policyYAML != "" {
		p, err := policy.Parse([]byte(policyYAML))
		if err != nil {
			t.Fatal(err)
		}
		o.Policy, _ = policy.Compile(p)
	}
	return o
}

func checks(r *Result) string {
	var s []string
	for _, f := range r.Failures {
		c := f.Check
		if f.Rule != "" {
			c += ":" + f.Rule
		}
		s = append(s, c)
	}
	return strings.Join(s, ",")
}

func TestHonestBuildPasses(t *testing.T) {
	f := newFixture(t, nil)
	r := Verify(context.Background(), f.target, f.opts(t, f.pub, ""))
	if !r.Pass() {
		t.Fatalf("honest build failed: %+v", r.Failures)
	}
	if len(r.Layers) != 3 || r.Layers[0].Binding != BindBase || r.Layers[1].StepID != "11111111111111111111111111111111" || r.Layers[2].StepID != "22222222222222222222222222222222" || r.Layers[2].Binding != BindRun {
		t.Fatalf("layers not bound in order: %+v", r.Layers)
	}
}

func TestTamperOneByte(t *testing.T) {
	f := newFixture(t, nil)
	// Change one byte of an observation the predicate shows in the clear.
	s := string(f.target.Statement)
	i := strings.Index(s, `"ip":"127.0.0.1"`)
	if i < 0 {
		t.Fatalf("no ip in statement: %s", s)
	}
	f.target.Statement = []byte(s[:i] + `"ip":"127.0.0.2"` + s[i+len(`"ip":"127.0.0.1"`):])
	r := Verify(context.Background(), f.target, f.opts(t, f.pub, ""))
	if checks(r) != CheckContent || !strings.Contains(r.Failures[0].Event, "monitorLog.network[0].ip") {
		t.Fatalf("got %q: %+v", checks(r), r.Failures)
	}
}

func TestTamperSignedPayload(t *testing.T) {
	f := newFixture(t, nil)
	var pred map[string]any
	json.Unmarshal(f.statement["predicate"].(json.RawMessage), &pred)
	env := pred["buildtrace"].(map[string]any)["envelope"].(map[string]any)
	p := []byte(env["payload"].(string))
	// Flip one base64 character of the payload.
	if p[10] == 'A' {
		p[10] = 'B'
	} else {
		p[10] = 'A'
	}
	env["payload"] = string(p)
	f.statement["predicate"] = pred
	f.target.Statement, _ = json.Marshal(f.statement)
	r := Verify(context.Background(), f.target, f.opts(t, f.pub, ""))
	if checks(r) != CheckSignature {
		t.Fatalf("got %q: %+v", checks(r), r.Failures)
	}
}

func TestWrongKey(t *testing.T) {
	f := newFixture(t, nil)
	other := filepath.Join(t.TempDir(), "o.pub")
	if err := sign.GenerateKeyPair(filepath.Join(filepath.Dir(other), "o"), other); err != nil {
		t.Fatal(err)
	}
	r := Verify(context.Background(), f.target, f.opts(t, other, ""))
	if checks(r) != CheckSignature {
		t.Fatalf("got %q: %+v", checks(r), r.Failures)
	}
}

func TestMovedToOtherImage(t *testing.T) {
	f := newFixture(t, nil)
	// Another image with a different RUN layer, same statement, subject
	// rewritten to the new manifest (the statement is not signed).
	evil := layerTar(t, map[string]string{"app/registry.json": "{evil}"})
	d := digest.FromBytes(evil)
	f.blobs[d] = evil
	f.target.Image.Layers[2] = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: int64(len(evil))}
	mf, _ := json.Marshal(f.target.Image)
	f.target.Manifest.Digest = digest.FromBytes(mf)
	f.statement["subject"] = []any{map[string]any{"name": "img", "digest": map[string]any{"sha256": f.target.Manifest.Digest.Encoded()}}}
	f.target.Statement, _ = json.Marshal(f.statement)
	r := Verify(context.Background(), f.target, f.opts(t, f.pub, ""))
	if checks(r) != CheckBinding {
		t.Fatalf("got %q: %+v", checks(r), r.Failures)
	}
}

func TestSubjectMismatch(t *testing.T) {
	f := newFixture(t, nil)
	f.target.Manifest.Digest = digest.FromString("other")
	r := Verify(context.Background(), f.target, f.opts(t, f.pub, ""))
	if checks(r) != CheckSubject {
		t.Fatalf("got %q: %+v", checks(r), r.Failures)
	}
}

func TestIncomplete(t *testing.T) {
	f := newFixture(t, func(b *trace.Build) {
		b.Steps[1].Completeness = trace.Completeness{Complete: false, FollowedFromStart: true, EventsDropped: 3}
	})
	r := Verify(context.Background(), f.target, f.opts(t, f.pub, ""))
	if checks(r) != CheckCompleteness || !strings.Contains(r.Failures[0].Event, "3 events dropped") || r.Failures[0].Location != "Dockerfile:4-5" {
		t.Fatalf("got %q: %+v", checks(r), r.Failures)
	}
	r = Verify(context.Background(), f.target, f.opts(t, f.pub, "incomplete:\n  allow: true\n"))
	if !r.Pass() {
		t.Fatalf("incomplete.allow: %+v", r.Failures)
	}
}

func TestCached(t *testing.T) {
	// Step 1 did not run in this build: its layer came from the cache.
	f := newFixture(t, func(b *trace.Build) { b.Steps = b.Steps[1:] })
	r := Verify(context.Background(), f.target, f.opts(t, f.pub, ""))
	if checks(r) != CheckCached+","+CheckBinding {
		t.Fatalf("got %q: %+v", checks(r), r.Failures)
	}
	r = Verify(context.Background(), f.target, f.opts(t, f.pub, "cached:\n  allow: true\n"))
	if !r.Pass() || r.Layers[1].Binding != BindCached {
		t.Fatalf("cached.allow: %+v %+v", r.Failures, r.Layers)
	}
}

func TestPolicyFailureNamesStepAndProcess(t *testing.T) {
	f := newFixture(t, nil)
	r := Verify(context.Background(), f.target, f.opts(t, f.pub, "egress:\n  flagged: [127.0.0.0/8]\n"))
	if checks(r) != "policy:egress.flagged" {
		t.Fatalf("got %q: %+v", checks(r), r.Failures)
	}
	fl := r.Failures[0]
	if fl.Location != "Dockerfile:4-5" || !strings.HasPrefix(fl.Instruction, "RUN wget") || fl.PID != 201 || fl.Argv[0] != "wget" || !strings.Contains(fl.Event, "127.0.0.1:5000") {
		t.Fatalf("failure lacks step/process/event: %+v", fl)
	}
}

func TestUnmonitored(t *testing.T) {
	pred, err := attest.Derive(attest.Input{BuildTraceID: traceID, Platform: "linux/amd64", UnmonitoredReason: "tracer unreachable",
		Steps: []attest.StepInfo{{StepID: "11111111111111111111111111111111", Instruction: "RUN true"}}})
	if err != nil {
		t.Fatal(err)
	}
	pj, _ := attest.Marshal(pred)
	st, _ := json.Marshal(map[string]any{"_type": "https://in-toto.io/Statement/v1", "predicateType": attest.PredicateType,
		"subject": []any{map[string]any{"digest": map[string]any{"sha256": digest.FromString("m").Encoded()}}}, "predicate": json.RawMessage(pj)})
	r := Verify(context.Background(), Target{Manifest: ocispec.Descriptor{Digest: digest.FromString("m")}, Statement: st}, Options{})
	if checks(r) != CheckCompleteness {
		t.Fatalf("got %q: %+v", checks(r), r.Failures)
	}
}

func TestSignedPlanDecides(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(b *trace.Build)
		want   string
	}{
		{"unsealed", func(b *trace.Build) { b.Sealed, b.Pending = false, []string{"x"} }, CheckCompleteness},
		{"admin", func(b *trace.Build) { b.Requester = trace.Requester{Kind: trace.RequesterAdmin} }, CheckRequester},
		{"other platform", func(b *trace.Build) { b.Results = map[string]string{"linux/arm64": "sha256:part"} }, CheckContent},
		{"unplanned run", func(b *trace.Build) { b.Steps[0].StepID = "33333333333333333333333333333333" }, CheckContent},
		{"argv differs", func(b *trace.Build) { b.Steps[0].Processes[0].Argv = []string{"/bin/sh", "-c", "true"} }, CheckContent},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, c.mutate)
			r := Verify(context.Background(), f.target, f.opts(t, f.pub, ""))
			if !strings.Contains(","+checks(r)+",", ","+c.want+",") {
				t.Fatalf("got %q, want %s: %+v", checks(r), c.want, r.Failures)
			}
		})
	}
}

func TestUnknownFieldIgnored(t *testing.T) {
	f := newFixture(t, nil)
	var pred map[string]any
	json.Unmarshal(f.statement["predicate"].(json.RawMessage), &pred)
	pred["futureField"] = map[string]any{"x": 1}
	pred["buildtrace"].(map[string]any)["complete"] = true
	pred["buildtrace"].(map[string]any)["steps"].([]any)[0].(map[string]any)["note"] = "hello"
	f.statement["predicate"] = pred
	f.target.Statement, _ = json.Marshal(f.statement)
	r := Verify(context.Background(), f.target, f.opts(t, f.pub, ""))
	if !r.Pass() {
		t.Fatalf("unknown fields changed the verdict: %+v", r.Failures)
	}
}

func TestDroppedStepInPredicate(t *testing.T) {
	f := newFixture(t, nil)
	var pred map[string]any
	json.Unmarshal(f.statement["predicate"].(json.RawMessage), &pred)
	bt := pred["buildtrace"].(map[string]any)
	bt["steps"] = bt["steps"].([]any)[:1]
	f.statement["predicate"] = pred
	f.target.Statement, _ = json.Marshal(f.statement)
	r := Verify(context.Background(), f.target, f.opts(t, f.pub, "egress:\n  flagged: [127.0.0.0/8]\n"))
	if !strings.Contains(checks(r), CheckContent) || !strings.Contains(checks(r), "policy:egress.flagged") {
		t.Fatalf("a step dropped from the readable copy was not caught, or its run not checked: %q %+v", checks(r), r.Failures)
	}
}

// TestRunBindsOnlyWhereItRan: a run's layer binds only above the layers it
// ran on (its signed lower digests).
func TestRunBindsOnlyWhereItRan(t *testing.T) {
	var l1 string
	f := newFixture(t, func(b *trace.Build) {
		l1 = b.Steps[0].Diff.Digest
		b.Steps[1].Lowers = []string{l1, "sha256:base-layer"}
	})
	r := Verify(context.Background(), f.target, f.opts(t, f.pub, ""))
	if !r.Pass() {
		t.Fatalf("honest lowers: %+v", r.Failures)
	}
	f = newFixture(t, func(b *trace.Build) {
		b.Steps[1].Lowers = []string{fsdiff.EmptyDigest, "sha256:something-else", "sha256:base-layer"}
	})
	r = Verify(context.Background(), f.target, f.opts(t, f.pub, ""))
	if checks(r) != CheckBinding {
		t.Fatalf("a run bound above layers it did not run on: %q %+v", checks(r), r.Failures)
	}
	// A lower the tracer could not hash: the run vouches for nothing
	// below it, so it binds nowhere (redteam12: the COPY layer below it
	// was otherwise bound by plan position only).
	f = newFixture(t, func(b *trace.Build) {
		b.Steps[1].Lowers = []string{l1, ""}
	})
	r = Verify(context.Background(), f.target, f.opts(t, f.pub, ""))
	if checks(r) != CheckBinding {
		t.Fatalf("a run with an unhashed lower bound a layer: %q %+v", checks(r), r.Failures)
	}
}

type mapCache map[string][]byte

func (m mapCache) Get(k string) ([]byte, bool) { b, ok := m[k]; return b, ok }
func (m mapCache) Put(k string, b []byte)      { m[k] = b }

// TestBaseCache: what the base's layers leave is read once and then taken
// from the cache; a damaged entry is read again, not trusted.
func TestBaseCache(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, nil)
	opts := f.opts(t, f.pub, "")
	open := opts.OpenLayer
	baseReads := 0
	opts.OpenLayer = func(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
		if d.Digest == f.baseLayers[0].Digest {
			baseReads++
		}
		return open(ctx, d)
	}
	cache := mapCache{}
	opts.BaseCache = cache
	for i, want := range []int{1, 1} {
		if r := Verify(ctx, f.target, opts); !r.Pass() {
			t.Fatalf("run %d: %+v", i, r.Failures)
		}
		if baseReads != want || len(cache) != 1 {
			t.Fatalf("run %d: base read %d times, cache %d entries; want %d, 1", i, baseReads, len(cache), want)
		}
	}
	for k, b := range cache {
		b[len(b)/2] ^= 1
		cache[k] = b
	}
	if r := Verify(ctx, f.target, opts); !r.Pass() || baseReads != 2 {
		t.Fatalf("damaged entry: pass %v, base read %d times (want 2): %+v", r.Pass(), baseReads, r.Failures)
	}
	// The entry decides: one saying the base has a file at /app makes the
	// layer that writes /app/registry.json unreadable.
	s := fsdiff.NewStack()
	if err := s.Apply(ctx, tarOf(t, "app")); err != nil {
		t.Fatal(err)
	}
	b, _ := s.MarshalBinary()
	for k := range cache {
		cache[k] = b
	}
	if r := Verify(ctx, f.target, opts); r.Pass() || !strings.Contains(checks(r), CheckBinding) || baseReads != 2 {
		t.Fatalf("cache entry not used: pass %v, base reads %d, %+v", r.Pass(), baseReads, r.Failures)
	}
}

func tarOf(t *testing.T, file string) io.Reader {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(layerTar(t, map[string]string{file: "x"})))
	if err != nil {
		t.Fatal(err)
	}
	return zr
}

// TestDiffIDs: verify reads each layer's uncompressed bytes as the config's
// rootfs.diff_ids name them, which a puller checks too, so both read the
// same tar whatever either makes of the compression.
func TestDiffIDs(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, nil)
	opts := f.opts(t, f.pub, "")
	f.target.Config.RootFS.DiffIDs[2] = digest.FromString("another tar")
	if r := Verify(ctx, f.target, opts); r.Pass() || !strings.Contains(checks(r), CheckBinding) {
		t.Fatalf("another diff_id passed: %+v", r.Failures)
	} else {
		t.Log(r.Failures)
	}
	f.target.Config.RootFS.DiffIDs = f.target.Config.RootFS.DiffIDs[:2]
	if r := Verify(ctx, f.target, opts); r.Pass() {
		t.Fatal("a missing diff_id passed")
	}
}
