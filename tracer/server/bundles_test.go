package server

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/tracer/rootfs"
)

// TestBundleReadWhenWritten: a container's bundle is read as soon as
// buildkitd closes its config.json, so it is known even after BuildKit
// unmounted the root and removed the bundle.
func TestBundleReadWhenWritten(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir, time.Second)
	exec := filepath.Join(dir, "executor")
	if err := os.MkdirAll(filepath.Join(exec, "frontend"), 0o711); err != nil {
		t.Fatal(err)
	}
	mi := filepath.Join(dir, "mountinfo")
	f.srv.cfg.Mountinfo = mi
	f.srv.watchExecutorOf(rootfs.Layout{Bundle: filepath.Join(exec, "frontend"), Namespace: rootfs.Namespace{Mountinfo: mi}})

	bundle := filepath.Join(exec, "c2")
	upper := filepath.Join(dir, "upper")
	for _, d := range []string{filepath.Join(bundle, "rootfs"), upper, filepath.Join(dir, "lower")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	line := "45 27 0:39 / " + filepath.Join(bundle, "rootfs") + " rw,relatime - overlay overlay rw,lowerdir=" +
		filepath.Join(dir, "lower") + ",upperdir=" + upper + ",workdir=" + filepath.Join(dir, "work") + "\n"
	if err := os.WriteFile(mi, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := `{"process":{"env":["TRACEPARENT=00-` + buildA + `-00f067aa0ba902b7-01"]}}`
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var l rootfs.Layout
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var ok bool
		if l, ok = f.srv.bundleOf("c2"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the bundle was not read when it was written")
		}
	}
	if l.TraceID != buildA || l.Upper != upper {
		t.Fatalf("read %+v", l)
	}
	// Gone from the host: what was read stays.
	os.WriteFile(mi, nil, 0o644)
	os.RemoveAll(bundle)
	if l, ok := f.srv.bundleOf("c2"); !ok || l.TraceID != buildA {
		t.Fatalf("after removal: %+v %v", l, ok)
	}
}

// TestNonce: a container naming a build with a nonce belongs to it only
// when it carries the nonce.
func TestNonce(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir, time.Second)
	write := func(name, noProxy string) rootfs.Layout {
		b := filepath.Join(dir, name)
		os.MkdirAll(b, 0o755)
		env := `"TRACEPARENT=00-` + buildA + `-00f067aa0ba902b7-01"`
		if noProxy != "" {
			env += `,"NO_PROXY=` + noProxy + `","no_proxy=` + noProxy + `"`
		}
		cfg := filepath.Join(b, "config.json")
		os.WriteFile(cfg, []byte(`{"process":{"env":[`+env+`]}}`), 0o644)
		// What the tracer reads of a bundle, as Early and Opened do.
		rb, err := rootfs.ReadBundle(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return rootfs.Layout{Bundle: b, TraceID: rb.TraceID, NoProxy: rb.NoProxy}
	}
	step := steptag.Container{StepID: "s1", ContainerID: "c1"}
	// No plan for the build: the bundle's TRACEPARENT decides.
	if id, _ := f.srv.checkNonce(step, write("a", ""), ""); id != buildA {
		t.Fatalf("no plan: %q", id)
	}
	fe := trace.Requester{Kind: trace.RequesterFrontend, ContainerID: "fe"}
	const root = "the frontend's nonce root"
	n0nce, other := steptag.StepNonce(root, "s1"), steptag.StepNonce(root, "s2")
	// A nonce a request carries is kept out of the signed plan (and never read).
	part := trace.PlanPart{ID: "p", Platform: "linux/amd64", Steps: []trace.PlanStep{{StepID: "s1", Nonce: n0nce}, {StepID: "s2", Nonce: other}}}
	if err := f.srv.plans.add(buildA, fe, root, part); err != nil {
		t.Fatal(err)
	}
	// Another step's nonce, none, or a look-alike: not the build's.
	for _, np := range []string{"", "buildtrace-" + other + ".invalid", "xbuildtrace-" + n0nce + ".invalid"} {
		if id, why := f.srv.checkNonce(step, write("c"+np, np), ""); id != "" || why == "" {
			t.Fatalf("NO_PROXY %q: attributed to %q", np, id)
		}
	}
	if id, _ := f.srv.checkNonce(step, write("b", "example.com,buildtrace-"+n0nce+".invalid"), ""); id != buildA {
		t.Fatalf("with the nonce: %q", id)
	}
	// A second container with the step's nonce is not the step's run.
	if id, why := f.srv.checkNonce(steptag.Container{StepID: "s1", ContainerID: "c9"}, write("d", "buildtrace-"+n0nce+".invalid"), ""); id != "" || why == "" {
		t.Fatalf("a second container with the nonce: attributed to %q", id)
	}
	// The signed plan never carries the nonces.
	_, parts, _ := f.srv.plans.get(buildA)
	for _, p := range public(parts) {
		for _, st := range p.Steps {
			if st.Nonce != "" {
				t.Fatalf("public plan holds a nonce: %+v", st)
			}
		}
	}
}
