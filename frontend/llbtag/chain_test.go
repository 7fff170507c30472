package llbtag

import (
	"context"
	"testing"

	"github.com/moby/buildkit/client/llb"

	"github.com/buildtrace/buildtrace/pkg/trace"
)

// TestResultChain: the layer chain of a result runs from its base image up
// along the root file system, across stages, and leaves out ops that only
// feed a COPY --from.
func TestResultChain(t *testing.T) {
	ctx := context.Background()
	base := llb.Image("127.0.0.1:5000/library/busybox:latest@sha256:89ed812567123eb09ddbd0adf06a7136e3b8e7adf58bbe624a627e8a1aa31277")
	builder := base.Run(llb.Shlex("sh -c 'echo x > /x'"), llb.WithCustomName("[builder 2/2] RUN echo x > /x")).Root()
	final := base.File(llb.Copy(llb.Local("context"), "a.txt", "/a.txt"), llb.WithCustomName("[stage-1 2/4] COPY a.txt /a.txt")).
		File(llb.Copy(builder, "/x", "/x"), llb.WithCustomName("[stage-1 3/4] COPY --from=builder /x /x")).
		Run(llb.Shlex("sh -c 'cat /x'"), llb.WithCustomName("[stage-1 4/4] RUN cat /x")).Root()
	def, err := final.Marshal(ctx, llb.LinuxAmd64)
	if err != nil {
		t.Fatal(err)
	}
	pbDef := def.ToPB()
	steps, err := Tag(pbDef)
	if err != nil || len(steps) != 2 {
		t.Fatalf("tag: %v, %d steps", err, len(steps))
	}
	c, err := ResultChain(pbDef)
	if err != nil {
		t.Fatal(err)
	}
	if c.Platform != "linux/amd64" || c.Base == nil || c.Base.Digest != "sha256:89ed812567123eb09ddbd0adf06a7136e3b8e7adf58bbe624a627e8a1aa31277" {
		t.Fatalf("platform %q base %+v", c.Platform, c.Base)
	}
	var kinds []string
	for _, l := range c.Layers {
		kinds = append(kinds, l.Kind+" "+l.Name)
	}
	want := []string{trace.LayerFile + " [stage-1 2/4] COPY a.txt /a.txt", trace.LayerFile + " [stage-1 3/4] COPY --from=builder /x /x", trace.LayerRun + " [stage-1 4/4] RUN cat /x"}
	if len(kinds) != len(want) {
		t.Fatalf("chain %q, want %q", kinds, want)
	}
	for i := range want {
		if kinds[i] != want[i] {
			t.Fatalf("chain %q, want %q", kinds, want)
		}
	}
	if c.Layers[2].StepID == "" || c.Root == "" {
		t.Errorf("the RUN of the chain has no step ID (%+v) or the chain no root", c.Layers[2])
	}
}
