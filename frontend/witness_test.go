package frontend

import (
	"context"
	"testing"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/solver/pb"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/proto"

	"github.com/buildtrace/buildtrace/frontend/llbtag"
	"github.com/buildtrace/buildtrace/pkg/trace"
)

func TestNeedsWitness(t *testing.T) {
	run, file := trace.LayerOp{Kind: trace.LayerRun}, trace.LayerOp{Kind: trace.LayerFile}
	merge := trace.LayerOp{Kind: trace.LayerMerge}
	for _, c := range []struct {
		layers []trace.LayerOp
		want   bool
	}{
		{nil, false},                        // the base image as it is
		{[]trace.LayerOp{run}, false},       // the run's diff and lowers bind all
		{[]trace.LayerOp{file, run}, false}, // the COPY is a lower of the run
		{[]trace.LayerOp{file}, true},       // FROM scratch + COPY --from
		{[]trace.LayerOp{run, file}, true},  // a trailing COPY or WORKDIR
		{[]trace.LayerOp{run, file, merge}, true},
	} {
		if got := needsWitness(c.layers); got != c.want {
			t.Errorf("needsWitness(%v) = %v, want %v", c.layers, got, c.want)
		}
	}
	if s, err := ParseSettings(map[string]string{}); err != nil || !s.Witness {
		t.Errorf("the witness is not on by default: %+v %v", s, err)
	}
	if s, err := ParseSettings(map[string]string{"build-arg:" + ArgWitness: "off"}); err != nil || s.Witness {
		t.Errorf("%s=off: %+v %v", ArgWitness, s, err)
	}
	if _, err := ParseSettings(map[string]string{"build-arg:" + ArgWitness: "maybe"}); err == nil {
		t.Errorf("%s=maybe accepted", ArgWitness)
	}
}

// TestWitnessDef: the witness runs on the result's root file system the
// frontend's program from its image, mounted read-only, with no network,
// and its plan part says so.
func TestWitnessDef(t *testing.T) {
	ctx := context.Background()
	result := llb.Scratch().File(llb.Mkfile("/app", 0o644, []byte("app")), llb.WithCustomName("[stage-1 1/1] COPY --from=build /app /app"))
	tool := witnessTool{ref: "127.0.0.1:5000/buildtrace/frontend:dev@sha256:0123456789012345678901234567890123456789012345678901234567890123",
		program: "/bin/buildtrace-frontend", platform: ocispecs.Platform{OS: "linux", Architecture: "amd64"}}
	def, err := witnessDef(ctx, result, tool, "linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	steps, err := llbtag.TagWithNonce(def, "n")
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 1 {
		t.Fatalf("steps = %+v", steps)
	}
	var ex *pb.ExecOp
	var plat *pb.Platform
	for _, dt := range def.Def {
		var op pb.Op
		if err := proto.Unmarshal(dt, &op); err != nil {
			t.Fatal(err)
		}
		if e := op.GetExec(); e != nil {
			ex, plat = e, op.Platform
		}
	}
	if got := ex.Meta.Args; len(got) != 2 || got[0] != "/.buildtrace-witness/bin/buildtrace-frontend" || got[1] != WitnessArg {
		t.Errorf("args = %q", got)
	}
	if ex.Network != pb.NetMode_NONE {
		t.Errorf("network = %v, want none", ex.Network)
	}
	if plat == nil || plat.Architecture != "amd64" {
		t.Errorf("the witness op's platform is %v: want the program's own (amd64)", plat)
	}
	var mounted bool
	for _, m := range ex.Mounts {
		if m.Dest == WitnessDir {
			mounted = m.Readonly
		}
	}
	if !mounted {
		t.Errorf("the frontend's image is not mounted read-only at %s: %+v", WitnessDir, ex.Mounts)
	}
	part, err := planPart(client.SolveRequest{Definition: def}, steps)
	if err != nil {
		t.Fatal(err)
	}
	if err := markWitness(&part, trace.Witness{Platform: "linux/arm64", Of: "sha256:result"}); err != nil {
		t.Fatal(err)
	}
	if part.Platform != "linux/arm64" || part.Witness.StepID != steps[0].ID || part.Witness.Of != "sha256:result" ||
		len(part.Layers) != 2 || part.Layers[0].Kind != trace.LayerFile || part.Layers[1].StepID != steps[0].ID {
		t.Errorf("witness part = %+v, witness %+v", part, part.Witness)
	}
	noRun, _ := planPart(client.SolveRequest{Definition: mustMarshal(t, result)}, nil)
	if err := markWitness(&noRun, trace.Witness{Platform: "linux/amd64", Of: "x"}); err == nil {
		t.Error("markWitness accepted a part that does not end with a run")
	}
}

func mustMarshal(t *testing.T, st llb.State) *pb.Definition {
	t.Helper()
	def, err := st.Marshal(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return def.ToPB()
}
