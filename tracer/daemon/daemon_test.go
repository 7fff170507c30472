package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/sign"
	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
	"github.com/buildtrace/buildtrace/tracer/probe"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to load eBPF programs and create cgroups")
		}
		t.Skip("SKIP (needs root: loads eBPF programs and creates cgroups)")
	}
}

func TestCheckListen(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:7390": true, "[::1]:1": true, "localhost:80": true,
		"0.0.0.0:7390": false, ":7390": false, "10.0.0.1:80": false, "nonsense": false,
	} {
		if err := CheckListen(addr, false); (err == nil) != ok {
			t.Errorf("CheckListen(%q) = %v", addr, err)
		}
	}
	if err := CheckListen("0.0.0.0:7390", true); err != nil {
		t.Errorf("--allow-non-loopback not honoured: %v", err)
	}
	if _, _, err := ParseFlags("t", nil); err == nil || !strings.Contains(err.Error(), "--key") {
		t.Errorf("missing --key accepted: %v", err)
	}
	c, _, err := ParseFlags("t", []string{"--key", "k.pem", "--max-wait", "5s"})
	if err != nil || c.MaxWait != 5*time.Second || c.Listen != tracerapi.DefaultAddr || c.State != "/var/lib/buildtrace" {
		t.Errorf("ParseFlags = %+v, %v", c, err)
	}
	c, _, err = ParseFlags("t", []string{"--key", "k.pem", "--listen", "127.0.0.2:1", "--listen", "172.17.0.1:7390"})
	if err != nil || c.Listen != "127.0.0.2:1" || len(c.AlsoListen) != 1 || c.AlsoListen[0] != "172.17.0.1:7390" {
		t.Errorf("--listen twice: %+v, %v", c, err)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestDaemonRealProbe runs the daemon with the real probe, runs a process
// in a tagged cgroup and reads back its signed trace.
func TestDaemonRealProbe(t *testing.T) {
	requireRoot(t)
	if err := probe.Check(""); err != nil {
		t.Fatalf("probe cannot run here: %v", err)
	}
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "key.pem"), filepath.Join(dir, "key.pub")
	if err := sign.GenerateKeyPair(priv, pub); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			Listen: addr, Key: priv, State: filepath.Join(dir, "state"), MaxWait: 30 * time.Second,
			CgroupRoot: probe.DefaultCgroupRoot, Version: "test",
			Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	}()
	client := &tracerapi.Client{Addr: addr}
	var health *tracerapi.Health
	for deadline := time.Now().Add(20 * time.Second); ; {
		h, err := client.Health(ctx)
		if err == nil {
			health = h
			break
		}
		select {
		case err := <-done:
			t.Fatalf("daemon exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not come up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	step := steptag.NewID([]byte(randHex(8)))
	traceID := randHex(16)
	container := "it" + randHex(6)
	stepDir := filepath.Join(probe.DefaultCgroupRoot, steptag.CgroupParent(step))
	cg := filepath.Join(stepDir, "buildkit", container)
	if err := os.MkdirAll(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.Remove(cg)
		os.Remove(filepath.Dir(cg))
		os.Remove(stepDir)
	}()
	out := filepath.Join(dir, "x")
	// The process joins the cgroup, then its first exec there carries
	// TRACEPARENT, like runc's init exec'ing a RUN command.
	cmd := exec.Command("/bin/busybox", "sh", "-c",
		`echo $$ > `+filepath.Join(cg, "cgroup.procs")+`; exec /bin/busybox sh -c "echo hi > `+out+`; exit 3"`)
	cmd.Env = []string{"PATH=/bin:/usr/bin", "TRACEPARENT=00-" + traceID + "-" + randHex(8) + "-01", "SECRET_TOKEN=do-not-record"}
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("command: %v", err)
	}
	if err := os.Remove(cg); err != nil {
		t.Fatal(err)
	}

	// Not a container buildkitd started: there is no OCI bundle, so the
	// step's build cannot be decided (TRACEPARENT in the environment does
	// not count). It is sealed and kept as unattributed, never dropped,
	// and no trace of the build ID it claimed exists.
	admin := tracerapi.AdminClient(filepath.Join(dir, "state", "admin.sock"))
	if _, err := admin.Trace(ctx, traceID, 0); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a trace of the claimed build: %v, want 404", err)
	}
	if _, err := client.Trace(ctx, traceID, 0); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("a trace on the TCP API: %v, want 403", err)
	}
	if health.KeyID == "" {
		t.Error("health names no key")
	}
	var steps []trace.Step
	for deadline := time.Now().Add(20 * time.Second); len(steps) == 0; time.Sleep(100 * time.Millisecond) {
		if steps, err = admin.Unattributed(ctx, step); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the step was not sealed as unattributed")
		}
	}
	dt, _ := json.Marshal(steps)
	if strings.Contains(string(dt), "do-not-record") || strings.Contains(string(dt), "SECRET_TOKEN") {
		t.Fatal("the store holds the process environment")
	}
	s := steps[0]
	if s.Attribution != trace.AttributionNone {
		t.Errorf("attribution %q, want %q", s.Attribution, trace.AttributionNone)
	}
	if s.StepID != step || s.ContainerID != container {
		t.Errorf("step %s/%s, want %s/%s", s.StepID, s.ContainerID, step, container)
	}
	var sh *trace.Process
	for i, p := range s.Processes {
		if p.Exec && (p.Filename == "/bin/busybox" || p.Binary == "/bin/busybox") && len(p.Argv) == 4 && strings.Contains(p.Argv[3], "exit 3") {
			sh = &s.Processes[i]
		}
	}
	if sh == nil {
		t.Fatalf("no process for the exec'd shell in %+v", s.Processes)
	}
	if sh.ExitCode == nil || *sh.ExitCode != 3 || sh.PID != uint32(cmd.Process.Pid) {
		t.Errorf("shell = %+v, want pid %d exit 3", sh, cmd.Process.Pid)
	}
	var wrote bool
	for _, f := range s.Files {
		if f.Path == out && (f.Op == trace.OpCreate || f.Op == trace.OpWrite || f.Op == trace.OpTruncate) {
			wrote = true
		}
	}
	if !wrote {
		t.Errorf("no file op on %s in %+v", out, s.Files)
	}
	if !s.Completeness.FollowedFromStart || s.Completeness.EventsEmitted == 0 {
		t.Errorf("completeness = %+v", s.Completeness)
	}
	// No overlay: the diff fails and the step is incomplete for it.
	if s.Diff.Error == "" || s.Completeness.Complete || !strings.Contains(strings.Join(s.Completeness.Reasons, "\n"), "no file-system diff") {
		t.Errorf("diff %+v completeness %+v", s.Diff, s.Completeness)
	}
	t.Logf("step: %d processes, %d file ops, reasons %q", len(s.Processes), len(s.Files), s.Completeness.Reasons)
}

// testWriter sends the daemon's log to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
