package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/test/lab"
)

// TestRedTeam4InjectIntoFrontendConnection: a hostile RUN step (root in
// its container with BuildKit's default capabilities, CAP_NET_RAW among
// them, on the host's network as in the lab) speaks on its own build's
// frontend's keep-alive connection to the tracer
// (testdata/redteam4/inject.c). It finds the connection in /proc/net/tcp,
// learns its sequence numbers from the duplicate ACK the tracer sends for
// an out-of-window segment, and injects a request with a raw IP socket.
// The tracer identifies callers by the kernel's record of the socket at
// the other end of the 4-tuple (tracer/peer): that socket is the
// frontend's, so the bytes the step wrote must still not be taken for the
// frontend's. The request asks to seal another build, so that the answer
// says who the tracer took the caller for without changing anything.
func TestRedTeam4InjectIntoFrontendConnection(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	_, port, err := net.SplitHostPort(l.TracerAddr)
	if err != nil {
		t.Fatalf("lab tracer %q: %v", l.TracerAddr, err)
	}
	other := randHex(16) // a build the step's frontend is not
	df := "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\n" +
		"COPY --chmod=0755 inject /usr/local/bin/inject\n" +
		`RUN ["/usr/local/bin/inject", "` + port + `", "/v1/builds/` + other + `/seal", "` + randHex(8) + `"]` + "\n"
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "inject": staticTestdataC(t, "redteam4", "inject")})
	// The frontend's connection is reset by the step: the build may fail
	// or end unmonitored; what matters is what the tracer answered.
	res := l.Buildx(ctx, lab.Build{Context: dir, Tag: l.Ref("redteam4-inject")})
	var answers []string
	for _, line := range strings.Split(res.Output, "\n") {
		if i := strings.Index(line, "RT4 "); i >= 0 {
			t.Logf("step: %s", line[i:])
			if strings.HasPrefix(line[i:], "RT4 RESP ") && strings.Contains(line, "HTTP/1.1 ") {
				answers = append(answers, line[i:])
			}
		}
	}
	if !strings.Contains(res.Output, "RT4 RAW ok") {
		t.Skipf("the step could not open a raw socket (no CAP_NET_RAW): the attack cannot run here:\n%s", res.Output)
	}
	if len(answers) == 0 {
		t.Fatalf("the step got no answer from the tracer on any connection: the attack did not run:\n%s", res.Output)
	}
	for _, a := range answers {
		if strings.Contains(a, "the caller is the frontend of build") {
			t.Errorf("ATTACK: the tracer took bytes a step injected into a frontend's connection for the frontend's: %s", a)
		} else if !strings.Contains(a, " 403 ") {
			t.Errorf("the injected request was not refused: %s", a)
		}
	}
}

// TestRedTeam4LocalUserCgroup: a local unprivileged user (uid 65534)
// tries to make a cgroup named like a BuildKit container's
// (/buildkit/<id>, where tracer/peer looks for frontends) in the cgroup2
// hierarchy the tracer reads: directly, and through a cgroup2 mount of
// its own in new user, mount and cgroup namespaces. Without a delegated
// subtree (none on the lab host) both must fail; a process of the user's
// can then never be in a cgroup the tracer takes for a container's.
func TestRedTeam4LocalUserCgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP (needs root to run as uid 65534)")
	}
	const root = "/sys/fs/cgroup/unified"
	if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
		t.Skipf("SKIP (no cgroup2 hierarchy at %s: %v)", root, err)
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	name := "buildkit/rt4" + randHex(8)
	script := `for d in ` + root + ` ` + root + `/buildkit; do [ -d $d ] && mkdir $d/rt4probe 2>/dev/null && echo "RT4 MADE $d/rt4probe"; done; ` +
		`mkdir -p ` + root + `/` + name + ` 2>/dev/null && echo "RT4 MADE ` + name + `"; ` +
		`if unshare -Urm --cgroup true 2>/dev/null; then echo "RT4 USERNS ok"; ` +
		`unshare -Urm --cgroup sh -c 'mkdir -p /tmp/rt4cg && mount -t cgroup2 none /tmp/rt4cg 2>/dev/null && echo "RT4 MOUNTED" && mkdir -p /tmp/rt4cg/` + name + ` && echo "RT4 MADE in own mount"'; fi; echo RT4 DONE`
	out, err := runCmdAs(nobody, "sh", "-c", script)
	t.Logf("as uid 65534: %v\n%s", err, out)
	t.Cleanup(func() {
		for _, d := range []string{root + "/" + name, root + "/buildkit/rt4probe", root + "/rt4probe"} {
			os.Remove(d)
		}
	})
	if !strings.Contains(out, "RT4 DONE") {
		t.Fatalf("the probe did not run: %v\n%s", err, out)
	}
	if strings.Contains(out, "RT4 MADE") {
		t.Errorf("ATTACK: uid 65534 made a cgroup in the hierarchy the tracer reads:\n%s", out)
	}
	// Whatever the user made in its own namespaces, the tracer's view
	// has no such cgroup.
	if _, err := os.Stat(filepath.Join(root, name)); err == nil {
		t.Errorf("ATTACK: %s/%s exists", root, name)
	}
}

// TestRedTeam4InsecureQuickAndCached: a RUN --security=insecure step that
// exits at once (before a loaded tracer would get round to it; the bundle
// is read when buildkitd writes it, before runc starts), in a stage the
// final image only copies from, and the same build again, served from
// BuildKit's cache (the cached step's evidence is the first run). Both
// images must fail verify, for the insecure step.
func TestRedTeam4InsecureQuickAndCached(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	nonce := randHex(8)
	df := "# syntax=" + l.Frontend + "\n" +
		"FROM " + l.BaseImage + " AS evil\n" +
		"RUN --security=insecure echo rt4-" + nonce + " > /out\n" +
		"FROM " + l.BaseImage + "\n" +
		"COPY --from=evil /out /out\n"
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": df})
	for i, name := range []string{"redteam4-insecure", "redteam4-insecure-cached"} {
		ref := l.Ref(name)
		res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true, Args: []string{"--allow", "security.insecure"}})
		if runs, cached := cachedRuns(res.Output); i == 1 && cached != runs {
			t.Logf("the second build ran %d of its %d RUN steps again (cached: %d)", runs-cached, runs, cached)
		}
		out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub)
		if code == 0 {
			t.Errorf("ATTACK: verify %s passes an image built with a RUN --security=insecure step:\n%s", ref, out)
		} else if !strings.Contains(out, "not vouched for") && !strings.Contains(out, "CAP_SYS_ADMIN") &&
			(i == 0 || !strings.Contains(out, "step was cached")) {
			// The rebuild's step has no evidence (its only run is not
			// vouched for), so it is refused as an unproven cached step.
			t.Errorf("verify %s refuses, but not for the insecure step:\n%s", ref, out)
		}
		t.Logf("build %d (%s): verify exit %d", i+1, ref, code)
	}
}
