package frontend

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/solver/pb"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"google.golang.org/protobuf/proto"
)

func TestParseSettings(t *testing.T) {
	s, err := ParseSettings(map[string]string{})
	if err != nil || s.Tracer != tracerapi.DefaultAddr || s.Unmonitored != UnmonitoredFail || s.Wait != DefaultWait {
		t.Fatalf("defaults = %+v, %v", s, err)
	}
	s, err = ParseSettings(map[string]string{
		"build-arg:BUILDTRACE_TRACER": "127.0.0.1:9", "build-arg:BUILDTRACE_UNMONITORED": "allow", "build-arg:BUILDTRACE_WAIT": "5s",
	})
	if err != nil || s.Tracer != "127.0.0.1:9" || s.Unmonitored != UnmonitoredAllow || s.Wait != 5*time.Second {
		t.Fatalf("settings = %+v, %v", s, err)
	}
	for _, bad := range []map[string]string{{"build-arg:BUILDTRACE_UNMONITORED": "maybe"}, {"build-arg:BUILDTRACE_WAIT": "soon"}} {
		if _, err := ParseSettings(bad); err == nil {
			t.Errorf("ParseSettings(%v) accepted", bad)
		}
	}
}

func TestTraceIDFromTraceparent(t *testing.T) {
	id, err := TraceIDFromTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if err != nil || id != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("= %q, %v", id, err)
	}
	for _, bad := range []string{"", "00-xyz-00f067aa0ba902b7-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"} {
		if _, err := TraceIDFromTraceparent(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"

func tracerServer(t *testing.T, b *trace.Build) *httptest.Server {
	t.Helper()
	dt, _ := json.Marshal(b)
	env := &dsse.Envelope{PayloadType: trace.PayloadType, Payload: base64.StdEncoding.EncodeToString(dt), Signatures: []dsse.Signature{{KeyID: "k", Sig: "cw=="}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req tracerapi.SealRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		if r.Method != http.MethodPost || r.URL.Path != tracerapi.TracePath+traceID+tracerapi.SealSuffix || req.Wait != "2s" {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(tracerapi.ErrorResponse{Error: "no such build " + r.URL.Path})
			return
		}
		json.NewEncoder(w).Encode(tracerapi.TraceResponse{Envelope: env})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestObserve(t *testing.T) {
	ctx := context.Background()
	srv := tracerServer(t, &trace.Build{Version: trace.Version, BuildTraceID: traceID, Tracer: trace.Tracer{Name: "buildtraced"}})
	addr := strings.TrimPrefix(srv.URL, "http://")

	obs, err := observe(ctx, Settings{Tracer: addr, Unmonitored: UnmonitoredFail, Wait: 2 * time.Second}, nil, traceID, nil, nil)
	if err != nil || !obs.monitored || obs.envelope == nil || obs.build.BuildTraceID != traceID {
		t.Fatalf("observe = %+v, %v", obs, err)
	}

	// A closed port: fail names the address, allow yields an unmonitored build.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	_, err = observe(ctx, Settings{Tracer: dead, Unmonitored: UnmonitoredFail, Wait: time.Second}, nil, traceID, nil, nil)
	if err == nil || !strings.Contains(err.Error(), dead) || !strings.Contains(err.Error(), ArgUnmonitored) {
		t.Errorf("fail mode error = %v", err)
	}
	obs, err = observe(ctx, Settings{Tracer: dead, Unmonitored: UnmonitoredAllow, Wait: time.Second}, nil, traceID, nil, nil)
	if err != nil || obs.monitored || obs.reason == "" || obs.traceID != traceID {
		t.Errorf("allow mode = %+v, %v", obs, err)
	}

	// A tracer answering with another build's trace is not trusted.
	other := tracerServer(t, &trace.Build{Version: trace.Version, BuildTraceID: strings.Repeat("9", 32)})
	if _, err := observe(ctx, Settings{Tracer: strings.TrimPrefix(other.URL, "http://"), Unmonitored: UnmonitoredFail, Wait: 2 * time.Second}, nil, traceID, nil, nil); err == nil {
		t.Error("accepted another build's trace")
	}
}

// fakeGateway stands in for BuildKit's gateway in this unit test of the
// solve wrapper: it records requests and returns a fresh ref per solve.
type fakeGateway struct {
	client.Client
	reqs []client.SolveRequest
}

type fakeRef struct {
	client.Reference
	n int
}

func (f *fakeGateway) Solve(ctx context.Context, req client.SolveRequest) (*client.Result, error) {
	f.reqs = append(f.reqs, req)
	res := client.NewResult()
	res.SetRef(&fakeRef{n: len(f.reqs)})
	return res, nil
}

func TestTagClientSolve(t *testing.T) {
	ctx := context.Background()
	g := &fakeGateway{}
	tc := &tagClient{Client: g}

	solve := func(cmd string) *client.Result {
		st := llb.Image("127.0.0.1:5000/library/busybox:latest").Run(llb.Shlex(cmd), llb.WithCustomName("[ 1/1] RUN "+cmd)).Root()
		def, err := st.Marshal(ctx)
		if err != nil {
			t.Fatal(err)
		}
		res, err := tc.Solve(ctx, client.SolveRequest{Definition: def.ToPB()})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	r1, r2 := solve("echo one"), solve("echo two")
	if _, err := tc.Solve(ctx, client.SolveRequest{Frontend: "gateway.v0"}); err != nil {
		t.Fatal(err)
	}

	if len(g.reqs) != 3 || !g.reqs[0].Evaluate || g.reqs[2].Evaluate {
		t.Fatalf("requests: %d, evaluate %v %v", len(g.reqs), g.reqs[0].Evaluate, g.reqs[2].Evaluate)
	}
	var tagged int
	for _, dt := range g.reqs[0].Definition.Def {
		var op pb.Op
		if err := proto.Unmarshal(dt, &op); err != nil {
			t.Fatal(err)
		}
		if ex := op.GetExec(); ex != nil {
			if _, err := steptag.StepOfCgroup("/" + ex.Meta.CgroupParent + "/buildkit/x"); err != nil {
				t.Errorf("exec op not tagged: %v", err)
			}
			tagged++
		}
	}
	if tagged != 1 {
		t.Errorf("tagged %d exec ops, want 1", tagged)
	}

	solves := tc.solves()
	s1, s2 := stepsOf(solves, r1.Ref), stepsOf(solves, r2.Ref)
	if len(s1) != 1 || len(s2) != 1 || s1[0].StepID == s2[0].StepID || s1[0].Instruction != "RUN echo one" {
		t.Errorf("steps per ref: %+v / %+v", s1, s2)
	}
	if s := stepsOf(solves, &fakeRef{n: 99}); len(s) != 0 {
		t.Errorf("unknown ref got steps %+v", s)
	}
}

// TestSteplessPartsWaitForTheSeal: a solve with a step registers its plan
// part before it runs; a solve with none (the Dockerfile's own source)
// keeps its part for the seal request.
func TestSteplessPartsWaitForTheSeal(t *testing.T) {
	ctx := context.Background()
	var registered []trace.PlanPart
	tc := &tagClient{Client: &fakeGateway{}, ready: func() error { return nil },
		register: func(_ context.Context, p trace.PlanPart) error { registered = append(registered, p); return nil }}
	solve := func(st llb.State) {
		t.Helper()
		def, err := st.Marshal(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tc.Solve(ctx, client.SolveRequest{Definition: def.ToPB()}); err != nil {
			t.Fatal(err)
		}
	}
	solve(llb.Local("dockerfile"))
	solve(llb.Image("127.0.0.1:5000/library/busybox:latest").Run(llb.Shlex("echo hi")).Root())
	if len(registered) != 1 || len(registered[0].Steps) != 1 {
		t.Fatalf("registered before their solves: %+v, want the one part with a step", registered)
	}
	stepless := tc.stepless()
	if len(stepless) != 1 || len(stepless[0].Steps) != 0 || stepless[0].ID == "" || stepless[0].ID == registered[0].ID {
		t.Fatalf("parts kept for the seal: %+v", stepless)
	}
	if solves := tc.solves(); solves[0].partID != stepless[0].ID {
		t.Errorf("the stepless solve's part ID %q, want %q (results may name it)", solves[0].partID, stepless[0].ID)
	}
}
