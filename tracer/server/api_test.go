package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/sign"
	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
	"github.com/buildtrace/buildtrace/tracer/peer"
	"github.com/buildtrace/buildtrace/tracer/probe"
	"github.com/buildtrace/buildtrace/tracer/store"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// quietSource stands in for the probe's counters: this test feeds
// synthetic events, so there is nothing in the kernel to count.
type quietSource struct{}

func (quietSource) Sync(context.Context) error     { return nil }
func (quietSource) Stats(uint64) probe.CgroupStats { return probe.CgroupStats{Emitted: 4} }
func (quietSource) Traffic(uint64) []probe.Traffic { return nil }
func (quietSource) Forget(uint64)                  {}

type apiFixture struct {
	t       *testing.T
	dir     string
	signer  *sign.Signer
	pubPath string
	srv     *Server
	st      *store.Store
	addr    string // the TCP API
	admin   string // the admin socket
	http    *http.Server
	adminHS *http.Server
	// frontendOf is the build the TCP caller is the frontend of ("": the
	// caller is no frontend): it stands in for peer.Finder, which reads
	// /proc and BuildKit's bundles and is tested end to end in test/e2e.
	frontendOf atomic.Value
	container  atomic.Value // the frontend's container ID
	key        []byte       // the frontend's request key
}

func newFixture(t *testing.T, dir string, maxWait time.Duration) *apiFixture {
	t.Helper()
	priv, pub := filepath.Join(dir, "key.pem"), filepath.Join(dir, "key.pub")
	if _, err := os.Stat(priv); err != nil {
		if err := sign.GenerateKeyPair(priv, pub); err != nil {
			t.Fatal(err)
		}
	}
	signer, err := sign.LoadSigner(context.Background(), priv)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	// An empty host mount table: no step finds its overlay, so its diff
	// fails, which the trace must report.
	mi := filepath.Join(dir, "mountinfo")
	if err := os.WriteFile(mi, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f := &apiFixture{t: t, dir: dir, key: bytes.Repeat([]byte{7}, tracerapi.KeyLen)}
	f.frontendOf.Store("")
	f.container.Store("fe1")
	srv := New(Config{
		Identify: func(*http.Request) (*peer.Frontend, error) {
			id := f.frontendOf.Load().(string)
			if id == "" {
				return nil, peer.ErrNotFrontend
			}
			return &peer.Frontend{PID: 7, ContainerID: f.container.Load().(string), TraceID: id, Executable: "/run", ExecutableDigest: "sha256:fe", RequestKey: f.key}, nil
		},
		Source:    quietSource{},
		Store:     st,
		Signer:    signer,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Tracer:    trace.Tracer{Name: "buildtraced", Version: "test", Host: "h", Kernel: "k", Since: time.Now().UTC()},
		MaxWait:   maxWait,
		Mountinfo: mi,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler()}
	go hs.Serve(ln)
	sock := filepath.Join(dir, fmt.Sprintf("admin%d.sock", time.Now().UnixNano()%1e6))
	aln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	as := &http.Server{Handler: srv.AdminHandler()}
	go as.Serve(aln)
	f.signer, f.pubPath, f.srv, f.st, f.addr, f.admin, f.http, f.adminHS = signer, pub, srv, st, ln.Addr().String(), sock, hs, as
	t.Cleanup(f.close)
	return f
}

// client is the frontend's: it signs with the frontend's key.
func (f *apiFixture) client() *tracerapi.Client {
	return &tracerapi.Client{Addr: f.addr, Auth: tracerapi.NewAuth(f.key)}
}

func (f *apiFixture) close() {
	if f.http == nil {
		return
	}
	f.http.Close()
	f.adminHS.Close()
	f.srv.WaitSeals()
	f.st.Close()
	f.http = nil
}

// get fetches (on the admin socket) and verifies a trace.
func (f *apiFixture) get(id string, wait time.Duration) *trace.Build {
	f.t.Helper()
	env, err := tracerapi.AdminClient(f.admin).Trace(context.Background(), id, wait)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.verify(env)
}

func (f *apiFixture) verify(env *dsse.Envelope) *trace.Build {
	f.t.Helper()
	v, err := sign.LoadVerifier(context.Background(), f.pubPath)
	if err != nil {
		f.t.Fatal(err)
	}
	payload, err := sign.Verify(context.Background(), v, env, trace.PayloadType)
	if err != nil {
		f.t.Fatalf("trace does not verify: %v", err)
	}
	var b trace.Build
	if err := json.Unmarshal(payload, &b); err != nil {
		f.t.Fatal(err)
	}
	return &b
}

const buildA = "0af7651916cd43dd8448eb211c80319c"

func TestAPI(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir, 1500*time.Millisecond)
	step := steptag.NewID([]byte("api"))
	path := "/" + steptag.CgroupParent(step) + "/buildkit/cont1"
	now := time.Now()
	ev := func(e probe.Event) { e.CgroupID = 77; f.srv.Handle(e) }

	adminHTTP := tracerapi.AdminClient(f.admin).HTTP
	// A bad ID is refused with a clear error.
	for _, bad := range []string{"xyz", strings.Repeat("0", 32), strings.ToUpper(buildA)} {
		res, err := adminHTTP.Get("http://buildtraced" + tracerapi.TracePath + bad)
		if err != nil {
			t.Fatal(err)
		}
		var e tracerapi.ErrorResponse
		json.NewDecoder(res.Body).Decode(&e)
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(e.Error, "invalid build trace ID") {
			t.Errorf("GET %s = %d %q, want 400 with an explanation", bad, res.StatusCode, e.Error)
		}
	}
	res, err := adminHTTP.Get("http://buildtraced" + tracerapi.TracePath + buildA + "?wait=soon")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("bad wait answered %d", res.StatusCode)
	}

	// Health names the signing key.
	h, err := (&tracerapi.Client{Addr: f.addr}).Health(context.Background())
	if err != nil || h.KeyID != f.signer.KeyID() || h.Version != "test" {
		t.Fatalf("health = %+v, %v", h, err)
	}

	// An unknown build is an error, never an empty signed trace.
	if _, err := tracerapi.AdminClient(f.admin).Trace(context.Background(), "ffffffffffffffffffffffffffffffff", 0); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("unknown build answered %v, want 404", err)
	}

	ev(probe.Event{Kind: probe.KindCgroupMkdir, Time: now, Cgroup: &probe.CgroupInfo{Path: path}})
	ev(probe.Event{Kind: probe.KindExec, Time: now, PID: 4190001, PPID: 4190000, Exec: &probe.ExecInfo{Binary: "/bin/sh", Argv: []string{"sh"}, TraceID: buildA, FirstInCgroup: true}})

	// The step runs: a short wait returns with it pending.
	start := time.Now()
	b := f.get(buildA, 300*time.Millisecond)
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("wait of 300ms returned after %v", took)
	}
	if len(b.Steps) != 0 || len(b.Pending) != 1 || b.Pending[0] != step {
		t.Errorf("running build = steps %d pending %v", len(b.Steps), b.Pending)
	}
	// The server's --max-wait bounds a longer wait.
	start = time.Now()
	f.get(buildA, time.Hour)
	if took := time.Since(start); took < 1500*time.Millisecond || took > 5*time.Second {
		t.Errorf("wait of 1h with max 1.5s took %v", took)
	}

	// A waiting request returns as soon as the step is sealed.
	go func() {
		time.Sleep(200 * time.Millisecond)
		ev(probe.Event{Kind: probe.KindExit, Time: now.Add(time.Second), PID: 4190001, Exit: &probe.ExitInfo{Code: 3}})
		ev(probe.Event{Kind: probe.KindCgroupRmdir, Time: now.Add(2 * time.Second), Cgroup: &probe.CgroupInfo{Path: path}})
	}()
	start = time.Now()
	b = f.get(buildA, time.Minute)
	if took := time.Since(start); took > 1400*time.Millisecond {
		t.Errorf("sealed step was served after %v, not as soon as it was sealed", took)
	}
	checkSealed(t, b, step)
	if b.Tracer.Name != "buildtraced" || b.BuildTraceID != buildA {
		t.Errorf("build header = %+v", b)
	}

	// A restart with the same store still serves it.
	f.close()
	f2 := newFixture(t, dir, time.Second)
	checkSealed(t, f2.get(buildA, 0), step)
}

func checkSealed(t *testing.T, b *trace.Build, step string) {
	t.Helper()
	if len(b.Pending) != 0 || len(b.Steps) != 1 {
		t.Fatalf("steps %d pending %v, want one sealed step", len(b.Steps), b.Pending)
	}
	s := b.Steps[0]
	if s.StepID != step || s.ContainerID != "cont1" || len(s.Processes) != 1 || s.Processes[0].ExitCode == nil || *s.Processes[0].ExitCode != 3 {
		t.Errorf("step = %+v", s)
	}
	if s.Diff.Error == "" || s.Completeness.Complete || s.Completeness.EventsEmitted != 4 {
		t.Errorf("step without overlay: diff %+v completeness %+v", s.Diff, s.Completeness)
	}
	if !strings.Contains(strings.Join(s.Completeness.Reasons, "\n"), "no file-system diff") {
		t.Errorf("reasons %q do not name the missing diff", s.Completeness.Reasons)
	}
}

// TestOnlyTheBuildsFrontend: the TCP API serves no trace by GET, refuses
// plans and seals from anyone but the build's own frontend, and seals a
// build only with its plan, signed with the requester.
func TestOnlyTheBuildsFrontend(t *testing.T) {
	f := newFixture(t, t.TempDir(), time.Second)
	ctx := context.Background()
	c := f.client()
	res, err := http.Get("http://" + f.addr + tracerapi.TracePath + buildA)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden {
		t.Errorf("GET trace on TCP = %d, want 403", res.StatusCode)
	}
	part := trace.PlanPart{ID: "sha256:p", Platform: "linux/amd64", Layers: []trace.LayerOp{}, Steps: []trace.PlanStep{}}
	if err := c.PutPlan(ctx, buildA, part); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("plan from a non-frontend: %v", err)
	}
	f.frontendOf.Store("ffffffffffffffffffffffffffffffff")
	if err := c.PutPlan(ctx, buildA, part); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("plan from another build's frontend: %v", err)
	}
	f.frontendOf.Store(buildA)
	if _, err := c.Seal(ctx, buildA, 0, nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("seal without a plan: %v", err)
	}
	if err := c.PutPlan(ctx, buildA, part); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Seal(ctx, buildA, 0, map[string]string{"linux/amd64": "sha256:other"}); err == nil {
		t.Error("sealed with a result no plan part names")
	}
	env, err := c.Seal(ctx, buildA, 0, map[string]string{"linux/amd64": "sha256:p"})
	if err != nil {
		t.Fatal(err)
	}
	b := f.verify(env)
	if !b.Sealed || b.Requester.Kind != trace.RequesterFrontend || b.Requester.ExecutableDigest != "sha256:fe" || len(b.Plan) != 1 || b.Plan[0].Received.IsZero() || b.Results["linux/amd64"] != "sha256:p" {
		t.Errorf("sealed trace = %+v", b)
	}
	if ab := f.get(buildA, 0); ab.Requester.Kind != trace.RequesterAdmin {
		t.Errorf("admin trace requester = %+v", ab.Requester)
	}
	// A later build with the same trace ID (one TRACEPARENT for a whole CI
	// job) registers its own plan once the first is sealed.
	f.container.Store("fe2")
	part2 := trace.PlanPart{ID: "sha256:p2", Platform: "linux/amd64", Layers: []trace.LayerOp{}, Steps: []trace.PlanStep{}}
	if err := c.PutPlan(ctx, buildA, part2); err != nil {
		t.Fatalf("a later build's plan: %v", err)
	}
	env, err = c.Seal(ctx, buildA, 0, map[string]string{"linux/amd64": "sha256:p2"})
	if err != nil {
		t.Fatal(err)
	}
	if b := f.verify(env); len(b.Plan) != 1 || b.Plan[0].ID != "sha256:p2" || b.Requester.ContainerID != "fe2" {
		t.Errorf("the later build's trace = %+v", b)
	}
	// While a build is not sealed, another frontend cannot take it over.
	const other = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
	f.frontendOf.Store(other)
	f.container.Store("fe3")
	if err := c.PutPlan(ctx, other, part); err != nil {
		t.Fatal(err)
	}
	f.container.Store("fe4")
	if err := c.PutPlan(ctx, other, part); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("a second frontend joined an unsealed build: %v", err)
	}
}
