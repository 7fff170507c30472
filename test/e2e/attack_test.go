package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/registry"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
	"github.com/buildtrace/buildtrace/test/lab"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The attack tests do what the threat model's attackers can do, the way
// they would do it: a hostile RUN step and a local unprivileged user talk
// to the tracer; someone with push access to the registry edits an honest
// image and its attestation and pushes the result. Every attack must be
// refused (docs/threat-model.md names each test).

// forgery is an edit of an honest single-platform image, pushed under a
// new tag: a new config, layers, manifest, attestation manifest and index,
// each consistent with the others as a registry writer would make them.
type forgery struct {
	config    func(*ocispec.Image)
	layers    func([]ocispec.Descriptor) []ocispec.Descriptor
	predicate func(map[string]any)
	statement func([]byte) []byte // on the raw statement, after predicate
}

func forge(t *testing.T, ctx context.Context, img *registry.Image, newRef string, f forgery) {
	t.Helper()
	c := registry.New(registry.Options{})
	if img.Index == nil || len(img.Manifests) != 1 {
		t.Fatalf("%s: want an index with one image manifest", img.Ref)
	}
	m := img.Manifests[0]
	cfg := m.Config
	cfg.History = slices.Clone(cfg.History)
	if f.config != nil {
		f.config(&cfg)
	}
	cd := pushJSON(t, ctx, c, newRef, ocispec.MediaTypeImageConfig, cfg)
	mf := m.Manifest
	mf.Config = cd
	mf.Layers = slices.Clone(mf.Layers)
	if f.layers != nil {
		mf.Layers = f.layers(mf.Layers)
	}
	md := pushJSON(t, ctx, c, newRef, ocispec.MediaTypeImageManifest, mf)
	md.Platform = m.Descriptor.Platform
	subject := registry.Manifest{Descriptor: md, Platform: m.Platform, Manifest: mf, Config: cfg}
	oldHex := m.Descriptor.Digest.Encoded()
	republish(t, ctx, img, &subject, newRef, func(st []byte) []byte {
		st = bytes.ReplaceAll(st, []byte(oldHex), []byte(md.Digest.Encoded()))
		if f.predicate != nil {
			var doc map[string]any
			if err := json.Unmarshal(st, &doc); err != nil {
				t.Fatal(err)
			}
			f.predicate(doc["predicate"].(map[string]any))
			var err error
			if st, err = json.Marshal(doc); err != nil {
				t.Fatal(err)
			}
		}
		if f.statement != nil {
			st = f.statement(st)
		}
		return st
	})
}

// predicateSteps returns buildtrace.steps of a decoded predicate.
func predicateSteps(p map[string]any) []any {
	return p["buildtrace"].(map[string]any)["steps"].([]any)
}

func stepWith(t *testing.T, p map[string]any, instrPrefix string) map[string]any {
	t.Helper()
	for _, s := range predicateSteps(p) {
		if st := s.(map[string]any); strings.HasPrefix(fmt.Sprint(st["instruction"]), instrPrefix) {
			return st
		}
	}
	t.Fatalf("predicate has no step %q", instrPrefix)
	return nil
}

// dropStep removes a step and every monitorLog entry of it.
func dropStep(p map[string]any, id string) {
	bt := p["buildtrace"].(map[string]any)
	bt["steps"] = slices.DeleteFunc(predicateSteps(p), func(s any) bool { return s.(map[string]any)["stepID"] == id })
	log := p["monitorLog"].(map[string]any)
	log["process"] = slices.DeleteFunc(log["process"].([]any), func(x any) bool { return x.(map[string]any)["step"] == id })
	log["network"] = slices.DeleteFunc(log["network"].([]any), func(x any) bool {
		return x.(map[string]any)["invokingProcess"].(map[string]any)["step"] == id
	})
	log["fileAccess"] = slices.DeleteFunc(log["fileAccess"].([]any), func(x any) bool {
		return x.(map[string]any)["annotations"].(map[string]any)["step"] == id
	})
}

// layerOf returns the index in the manifest of the layer made by the
// history entry whose created_by starts with prefix.
func layerOf(t *testing.T, cfg ocispec.Image, prefix string) int {
	t.Helper()
	i := 0
	for _, h := range cfg.History {
		if h.EmptyLayer {
			continue
		}
		if strings.HasPrefix(h.CreatedBy, prefix) {
			return i
		}
		i++
	}
	t.Fatalf("no layer made by %q", prefix)
	return -1
}

func TestAttackRegistryWriter(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	key := l.TracerPub
	n := randHex(8)
	body := `FROM BASE
COPY nonce.txt /nonce.txt
RUN echo built > /built.txt
RUN wget -q -O /fetched.json http://127.0.0.1:5000/v2/
`
	dir := lab.WriteContext(t, map[string]string{
		"Dockerfile": "# syntax=" + l.Frontend + "\n" + strings.ReplaceAll(body, "BASE", l.BaseImage),
		"nonce.txt":  n,
	})
	honest := l.Ref("attack")
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: honest, Push: true})
	flagged := writePolicy(t, "egress:\n  flagged: [127.0.0.0/8]\n")
	img := l.Image(t, ctx, honest)

	out, code := runCLI(t, l, "verify", honest, "--key", key)
	expectCode(t, out, code, 0, "verify", honest)

	mustFail := func(t *testing.T, ref string, wants []string, extra ...string) string {
		t.Helper()
		args := append([]string{"verify", ref, "--key", key}, extra...)
		out, code := runCLI(t, l, args...)
		expectCode(t, out, code, 1, args...)
		for _, w := range wants {
			if !strings.Contains(out, w) {
				t.Errorf("verify output lacks %q:\n%s", w, out)
			}
		}
		return out
	}

	t.Run("drop a step and relabel its layer COPY", func(t *testing.T) {
		forged := l.Ref("attack")
		var wgetStep string
		forge(t, ctx, img, forged, forgery{
			config: func(c *ocispec.Image) {
				for i, h := range c.History {
					if strings.HasPrefix(h.CreatedBy, "RUN /bin/sh -c wget") {
						c.History[i].CreatedBy = "COPY fetched.json /fetched.json # buildkit"
					}
				}
			},
			predicate: func(p map[string]any) {
				wgetStep = stepWith(t, p, "RUN wget")["stepID"].(string)
				dropStep(p, wgetStep)
			},
		})
		// Even under a policy flagging what the dropped step contacted.
		out := mustFail(t, forged, []string{"[content]", "[policy egress.flagged]", "127.0.0.1:5000"}, "--policy", flagged)
		if !strings.Contains(out, "RUN wget") {
			t.Errorf("the dropped step is not named from the signed plan:\n%s", out)
		}
	})

	t.Run("rewrite an instruction", func(t *testing.T) {
		forged := l.Ref("attack")
		forge(t, ctx, img, forged, forgery{predicate: func(p map[string]any) {
			stepWith(t, p, "RUN wget")["instruction"] = "RUN echo nothing to see"
		}})
		mustFail(t, forged, []string{"[content]", "instruction"})
	})

	t.Run("invent a cached step for a RUN layer", func(t *testing.T) {
		forged := l.Ref("attack")
		// A layer that adds a file, relabelled as a cached RUN in history
		// and explained by an invented cached step in the predicate.
		layer := pushBytes(t, ctx, registry.New(registry.Options{}), forged, ocispec.MediaTypeImageLayer, tarOf(t, map[string]string{"usr/bin/backdoor": "#!/bin/sh\n"}))
		forge(t, ctx, img, forged, forgery{
			config: func(c *ocispec.Image) {
				c.History = append(c.History, ocispec.History{CreatedBy: "RUN /bin/sh -c make # buildkit"})
				c.RootFS.DiffIDs = append(c.RootFS.DiffIDs, layer.Digest)
			},
			layers: func(ls []ocispec.Descriptor) []ocispec.Descriptor { return append(ls, layer) },
			predicate: func(p map[string]any) {
				bt := p["buildtrace"].(map[string]any)
				bt["steps"] = append(predicateSteps(p), map[string]any{"stepID": strings.Repeat("ab", 16), "status": "cached", "instruction": "RUN make"})
			},
		})
		mustFail(t, forged, []string{"[content]", "[binding]"}, "--policy", writePolicy(t, "cached:\n  allow: true\n"))
	})

	t.Run("replace a RUN layer, history says COPY", func(t *testing.T) {
		forged := l.Ref("attack")
		i := layerOf(t, img.Manifests[0].Config, "RUN /bin/sh -c wget")
		layer := pushBytes(t, ctx, registry.New(registry.Options{}), forged, ocispec.MediaTypeImageLayer, tarOf(t, map[string]string{"fetched.json": "{evil}"}))
		forge(t, ctx, img, forged, forgery{
			config: func(c *ocispec.Image) {
				for k, h := range c.History {
					if strings.HasPrefix(h.CreatedBy, "RUN /bin/sh -c wget") {
						c.History[k].CreatedBy = "COPY fetched.json / # buildkit"
					}
				}
			},
			layers: func(ls []ocispec.Descriptor) []ocispec.Descriptor { ls[i] = layer; return ls },
		})
		mustFail(t, forged, []string{"[binding]"})
	})

	t.Run("replace a COPY layer that a traced run ran on", func(t *testing.T) {
		forged := l.Ref("attack")
		i := layerOf(t, img.Manifests[0].Config, "COPY nonce.txt")
		layer := pushBytes(t, ctx, registry.New(registry.Options{}), forged, ocispec.MediaTypeImageLayer, tarOf(t, map[string]string{"nonce.txt": "evil"}))
		forge(t, ctx, img, forged, forgery{layers: func(ls []ocispec.Descriptor) []ocispec.Descriptor { ls[i] = layer; return ls }})
		mustFail(t, forged, []string{"[binding]"})
	})

	t.Run("replace a base layer", func(t *testing.T) {
		// The config's diff_ids and history are rewritten to match: only
		// the base manifest the signed plan pins can catch it.
		forged := l.Ref("attack")
		layer := pushBytes(t, ctx, registry.New(registry.Options{}), forged, ocispec.MediaTypeImageLayer, tarOf(t, map[string]string{"bin/sh": "#!/evil\n"}))
		forge(t, ctx, img, forged, forgery{
			config: func(c *ocispec.Image) { c.RootFS.DiffIDs[0] = layer.Digest },
			layers: func(ls []ocispec.Descriptor) []ocispec.Descriptor { ls[0] = layer; return ls },
		})
		mustFail(t, forged, []string{"[binding]", "base image"})
	})

	t.Run("attach an admin trace", func(t *testing.T) {
		// Root on the build host can read any trace on the admin socket;
		// such a trace is signed for the admin, not for the frontend.
		var p map[string]any
		st, _ := img.ForManifest(img.Manifests[0].Descriptor.Digest)
		s, _ := st.Statement(attest.PredicateType)
		var doc map[string]any
		json.Unmarshal(s.Data, &doc)
		p = doc["predicate"].(map[string]any)
		id := p["monitoredProcess"].(map[string]any)["event"].(string)
		env, err := tracerapi.AdminClient(l.TracerAdmin).Trace(ctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		forged := l.Ref("attack")
		forge(t, ctx, img, forged, forgery{predicate: func(p map[string]any) {
			dt, _ := json.Marshal(env)
			var e any
			json.Unmarshal(dt, &e)
			p["buildtrace"].(map[string]any)["envelope"] = e
		}})
		mustFail(t, forged, []string{"[requester]"})
	})

	t.Run("attach another build's trace", func(t *testing.T) {
		other := l.Ref("attack")
		dir := lab.WriteContext(t, map[string]string{
			"Dockerfile": "# syntax=" + l.Frontend + "\n" + strings.ReplaceAll("FROM BASE\nCOPY nonce.txt /nonce.txt\nRUN echo other > /built.txt\n", "BASE", l.BaseImage),
			"nonce.txt":  n,
		})
		l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: other, Push: true})
		oimg := l.Image(t, ctx, other)
		oatt, _ := oimg.ForManifest(oimg.Manifests[0].Descriptor.Digest)
		ost, _ := oatt.Statement(attest.PredicateType)
		forged := l.Ref("attack")
		forge(t, ctx, img, forged, forgery{statement: func(st []byte) []byte {
			// The other build's whole statement, its subject pointed here.
			var doc, odoc map[string]any
			json.Unmarshal(st, &doc)
			json.Unmarshal(ost.Data, &odoc)
			odoc["subject"] = doc["subject"]
			dt, _ := json.Marshal(odoc)
			return dt
		}})
		mustFail(t, forged, []string{"[binding]"})
	})

	t.Run("a layer blob rewritten in the registry's storage", func(t *testing.T) {
		// A fresh image whose RUN layer no other test shares.
		victim := l.Ref("attack")
		dir := lab.WriteContext(t, map[string]string{
			"Dockerfile": "# syntax=" + l.Frontend + "\n" + strings.ReplaceAll("FROM BASE\nRUN echo "+randHex(8)+" > /victim.txt\n", "BASE", l.BaseImage),
		})
		l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: victim, Push: true})
		vimg := l.Image(t, ctx, victim)
		ls := vimg.Manifests[0].Manifest.Layers
		d := ls[len(ls)-1].Digest
		data := filepath.Join(l.Dir, "registry", "data", "docker", "registry", "v2", "blobs", "sha256", d.Encoded()[:2], d.Encoded(), "data")
		raw, err := os.ReadFile(data)
		if err != nil {
			t.Fatalf("the lab registry's storage: %v", err)
		}
		// Same size, other bytes.
		raw[len(raw)/2] ^= 0xff
		if err := os.WriteFile(data, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		out := mustFail(t, victim, []string{"[binding]"})
		if !strings.Contains(out, "does not match its digest") {
			t.Errorf("the blob's digest mismatch is not named:\n%s", out)
		}
	})

	t.Run("unknown fields are ignored", func(t *testing.T) {
		forged := l.Ref("attack")
		forge(t, ctx, img, forged, forgery{predicate: func(p map[string]any) {
			p["x-future"] = map[string]any{"verdict": "pass"}
			p["buildtrace"].(map[string]any)["x-note"] = "ignore me"
			stepWith(t, p, "RUN wget")["x-cached"] = true
		}})
		out, code := runCLI(t, l, "verify", forged, "--key", key)
		expectCode(t, out, code, 0, "verify", forged)
		mustFail(t, forged, []string{"[policy egress.flagged]"}, "--policy", flagged)
	})

	t.Run("show and diff do not call a forgery verified", func(t *testing.T) {
		forged := l.Ref("attack")
		var wgetStep string
		forge(t, ctx, img, forged, forgery{predicate: func(p map[string]any) {
			wgetStep = stepWith(t, p, "RUN wget")["stepID"].(string)
			dropStep(p, wgetStep)
		}})
		out, code := runCLI(t, l, "show", forged, "--key", key)
		expectCode(t, out, code, 0)
		if !strings.Contains(out, "UNVERIFIED") || strings.Contains(out, "verified with key") {
			t.Errorf("show calls a forged attestation verified:\n%s", out)
		}
		// diff --key refuses to compare content that is not verified;
		// honest against honest with --key sees the signed step list.
		out, code = runCLI(t, l, "diff", honest, forged, "--key", key)
		if code == 0 {
			t.Errorf("diff --key exited 0 on a forged image:\n%s", out)
		}
		if !strings.Contains(out, "UNVERIFIED") {
			t.Errorf("diff does not say what is unverified:\n%s", out)
		}
	})
}

// tarOf is an uncompressed layer tar holding files.
func tarOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(content))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestAttackTracerRefusesOthers: no RUN step, no local user and no host
// process gets a signed trace or can register a plan; only the build's
// own frontend can.
func TestAttackTracerRefusesOthers(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	// A hostile RUN step of a buildtrace build asks for its own build's
	// trace, registers a plan and asks for a seal, with its build's trace
	// ID from its own environment.
	script := `id=$(echo $TRACEPARENT | cut -d- -f2)
for p in "/v1/builds/$id" ; do wget -q -O- "http://` + l.TracerAddr + `$p" 2>&1 | sed "s/^/GET-ANSWER /"; done
for p in "/v1/builds/$id/plan" "/v1/builds/$id/seal" ; do wget -q -O- --post-data '{"id":"x","platform":"linux/amd64","wait":"1s"}' "http://` + l.TracerAddr + `$p" 2>&1 | sed "s/^/POST-ANSWER /"; done
echo STEP-DONE`
	dir := lab.WriteContext(t, map[string]string{
		"Dockerfile": "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\nRUN " + strings.ReplaceAll(script, "\n", " ; ") + " ; echo " + randHex(8) + "\n",
	})
	res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: l.Ref("attack"), Push: true})
	if !strings.Contains(res.Output, "STEP-DONE") {
		t.Fatalf("the step did not run:\n%s", res.Output)
	}
	requireRefusals(t, res.Output, 3)

	// A local unprivileged user, and root on the host outside any
	// container: refused too. Use a build ID the tracer knows.
	id := knownBuildID(t, l)
	for _, u := range []struct {
		name string
		cred *syscall.Credential
	}{{"nobody", &syscall.Credential{Uid: 65534, Gid: 65534}}, {"host root", nil}} {
		for _, req := range []struct{ method, path, body string }{
			{"GET", "/v1/builds/" + id, ""},
			{"POST", "/v1/builds/" + id + "/plan", `{"id":"x","platform":"linux/amd64"}`},
			{"POST", "/v1/builds/" + id + "/seal", `{"wait":"0s"}`},
			{"PUT", "/v1/blobs/" + digest.FromString("x").Encoded(), "x"},
		} {
			args := []string{"-s", "-o", "-", "-w", "\n%{http_code}", "-X", req.method, "http://" + l.TracerAddr + req.path}
			if req.body != "" {
				args = append(args, "--data-binary", req.body)
			}
			cmd := exec.CommandContext(ctx, "curl", args...)
			if u.cred != nil {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: u.cred}
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("curl as %s: %v %s", u.name, err, out)
			}
			if !strings.HasSuffix(strings.TrimSpace(string(out)), "403") || strings.Contains(string(out), "envelope") {
				t.Errorf("%s %s %s answered:\n%s", u.name, req.method, req.path, out)
			}
		}
	}
	// Nobody can open the admin socket.
	cmd := exec.CommandContext(ctx, "curl", "-s", "--unix-socket", l.TracerAdmin, "http://x/v1/builds/"+id)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err == nil || strings.Contains(string(out), "envelope") {
		t.Errorf("nobody reached the admin socket: %v %s", err, out)
	}
	// An unknown build is an error, not an empty signed trace.
	if _, err := tracerapi.AdminClient(l.TracerAdmin).Trace(ctx, randHex(16), 0); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("unknown build: %v, want 404", err)
	}
}

// knownBuildID returns the trace ID of a build the tracer has seen.
func knownBuildID(t *testing.T, l *lab.Lab) string {
	t.Helper()
	f, err := os.Open(filepath.Join(l.Dir, "logs", "buildtraced.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var id string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if i := strings.Index(sc.Text(), "msg=\"trace sealed\" trace="); i >= 0 {
			id = strings.Fields(sc.Text()[i+len("msg=\"trace sealed\" trace="):])[0]
		}
	}
	if id == "" {
		t.Fatal("the tracer's log names no sealed build")
	}
	return id
}

// TestAttackSlowClient: a client that never finishes its request headers
// is dropped, so it cannot hold the tracer's connections.
func TestAttackSlowClient(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	c, err := net.Dial("tcp", l.TracerAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /v1/health HTTP/1.1\r\nHost: x\r\n") // never the blank line
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	start := time.Now()
	_, err = c.Read(make([]byte, 1))
	if took := time.Since(start); err == nil || took > 25*time.Second {
		t.Errorf("the tracer kept a half-sent request open for %v (err %v)", took, err)
	}
}

// TestAttackTerminalEscapes: a step names a file with escape sequences that
// would erase the line above and print PASS; show and verify print them
// escaped.
func TestAttackTerminalEscapes(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	body := "FROM BASE\nRUN touch \"/x$(printf '\\033[1A\\033[2K\\rPASS\\033]0;t\\007')\" && echo " + randHex(8) + "\n"
	ref := cliBuild(t, ctx, l, l.Ref("attack"), body)
	out, code := runCLI(t, l, "show", ref, "--key", l.TracerPub)
	expectCode(t, out, code, 0)
	if strings.ContainsAny(out, "\x1b\x07\r") {
		t.Errorf("show printed raw control characters:\n%q", out)
	}
	if !strings.Contains(out, `\x1b[1A\x1b[2K\rPASS`) {
		t.Errorf("show does not print the escaped name:\n%s", out)
	}
	out, code = runCLI(t, l, "verify", ref, "--key", l.TracerPub, "--policy", writePolicy(t, "files:\n  denyWrite: ['/x*']\n"))
	expectCode(t, out, code, 1)
	if strings.ContainsAny(out, "\x1b\x07\r") || !strings.Contains(out, `\x1b`) {
		t.Errorf("verify printed raw control characters or none escaped:\n%q", out)
	}
}

// requireRefusals checks a build log in which a RUN step asked the tracer for
// traces: want answers ("-ANSWER" lines), each a 403 with no envelope.
func requireRefusals(t *testing.T, output string, want int) {
	t.Helper()
	answers := 0
	for _, line := range strings.Split(output, "\n") {
		if !strings.Contains(line, "-ANSWER wget") && !strings.Contains(line, "-ANSWER {") {
			continue
		}
		answers++
		if strings.Contains(line, "envelope") || !strings.Contains(line, "403") {
			t.Errorf("the tracer answered a RUN step: %s", line)
		}
	}
	if answers != want {
		t.Errorf("want %d refusals in the build log, got %d:\n%s", want, answers, output)
	}
}
