package frontend

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	"github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/solver/pb"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/buildtrace/buildtrace/pkg/trace"
)

// The witness is one more tagged ExecOp per image platform, run on the
// finished result: BuildKit makes COPY/ADD layers without any traced
// process, so the layers above the last RUN were bound to the signed plan
// by their place only. The tracer hashes the lower layers of every step it
// follows; a step whose root file system is the result has the image's
// layers as its lowers, signed. Its output is never part of the image.
//
// The result may be FROM scratch, with no shell or binary: the witness
// executes the frontend's own program from the frontend's image (static,
// no cgo), mounted read-only at WitnessDir, with WitnessArg, which makes it
// exit at once. It has no network.
const (
	// WitnessDir is where the frontend's image is mounted in the witness.
	WitnessDir = "/.buildtrace-witness"
	// WitnessArg makes the frontend's program the witness: it exits 0.
	WitnessArg = "buildtrace-witness"
	// ArgWitness turns the witness off ("off"): the layers above the last
	// RUN are then bound by plan position only, as before witnesses.
	ArgWitness = "BUILDTRACE_WITNESS"
)

// witnessTool is the image the witness executes from.
type witnessTool struct {
	ref      string // pinned by digest
	program  string // absolute path in the image
	platform ocispecs.Platform
}

// findWitnessTool resolves the frontend's own image: BuildKit runs a
// `# syntax=` frontend through its gateway with the image reference in the
// "source" option. It is resolved for the frontend's own platform (the one
// this program runs on: the worker's, without emulation) and pinned by
// digest, so the witness op is the same from one build to the next.
func findWitnessTool(ctx context.Context, c client.Client) (witnessTool, error) {
	src := c.BuildOpts().Opts["source"]
	if src == "" {
		return witnessTool{}, fmt.Errorf("the frontend does not know its own image (no %q frontend option); set build arg %s=off to build without a witness", "source", ArgWitness)
	}
	p := platforms.Normalize(platforms.DefaultSpec())
	ref, dgst, cfg, err := c.ResolveImageConfig(ctx, src, sourceresolver.Opt{
		LogName:  "[buildtrace] resolving the witness image " + src,
		ImageOpt: &sourceresolver.ResolveImageOpt{Platform: &p},
	})
	if err != nil {
		return witnessTool{}, fmt.Errorf("resolving the frontend's image %s for the witness: %w", src, err)
	}
	if dgst != "" {
		if i := strings.Index(ref, "@"); i >= 0 {
			ref = ref[:i]
		}
		ref += "@" + dgst.String()
	}
	var img ocispecs.Image
	if err := json.Unmarshal(cfg, &img); err != nil {
		return witnessTool{}, fmt.Errorf("reading the config of the frontend's image %s: %w", src, err)
	}
	prog := ""
	if ep := img.Config.Entrypoint; len(ep) > 0 && path.IsAbs(ep[0]) {
		prog = ep[0]
	} else if exe, err := os.Executable(); err == nil {
		prog = exe
	}
	if prog == "" {
		return witnessTool{}, fmt.Errorf("the frontend's image %s names no program (entrypoint)", src)
	}
	return witnessTool{ref: ref, program: path.Clean(prog), platform: p}, nil
}

// witnessDef is the witness's LLB: an ExecOp whose root is the result st,
// running the tool's program from its image, read-only, with no network.
func witnessDef(ctx context.Context, st llb.State, tool witnessTool, platform string) (*pb.Definition, error) {
	img := llb.Image(tool.ref, llb.Platform(tool.platform), llb.WithCustomName("[buildtrace] witness program"))
	run := st.Run(
		llb.Args([]string{path.Join(WitnessDir, tool.program), WitnessArg}),
		llb.AddMount(WitnessDir, img, llb.Readonly),
		llb.Network(llb.NetModeNone),
		llb.Dir("/"),
		// Never from BuildKit's cache: a cached witness was proven by the
		// evidence of its earlier run, and its step ID (like every step
		// ID) does not cover the build context's content, so that run
		// could be another build's, on other layers (a COPY of another
		// context). The tracer keeps the latest run of a step per diff,
		// and a witness's diff is always empty: an identical rebuild got
		// the lowers of whatever build of the Dockerfile ran last, and a
		// registry writer could give its image that build's layers
		// (redteam16). Run on every build, it binds the layers of this
		// one.
		llb.IgnoreCache,
		llb.WithCustomName("[buildtrace] witness "+platform),
	)
	// The op runs the tool's program natively: its platform is the tool's,
	// not the result's (an arm64 result is read, never executed).
	def, err := run.Root().Marshal(ctx, llb.Platform(tool.platform))
	if err != nil {
		return nil, err
	}
	return def.ToPB(), nil
}

// needsWitness reports whether some layer op of a result's chain is above
// its last traced run: only such layers lack a run's signed lowers.
func needsWitness(layers []trace.LayerOp) bool {
	last := -1
	for i, op := range layers {
		if op.Kind == trace.LayerRun {
			last = i
		}
	}
	return last < len(layers)-1
}

// witness runs the witness step on each platform's result whose chain
// needs one, registering its plan part (trace.Witness) before it runs.
func (t *tagClient) witness(ctx context.Context, res *client.Result, results map[string]string) error {
	ps, err := exptypes.ParsePlatforms(res.Metadata)
	if err != nil {
		return fmt.Errorf("reading result platforms: %w", err)
	}
	var tool *witnessTool
	for _, p := range ps.Platforms {
		part := t.part(results[p.ID])
		if part == nil || !needsWitness(part.Layers) {
			continue
		}
		ref := res.Ref
		if len(res.Refs) > 0 {
			ref = res.Refs[p.ID]
		}
		if ref == nil {
			continue
		}
		if tool == nil {
			wt, err := findWitnessTool(ctx, t.Client)
			if err != nil {
				return fmt.Errorf("buildtrace: witness: %w", err)
			}
			tool = &wt
		}
		st, err := ref.ToState()
		if err != nil {
			return fmt.Errorf("buildtrace: witness of %s: the result's LLB: %w", p.ID, err)
		}
		def, err := witnessDef(ctx, st, *tool, p.ID)
		if err != nil {
			return fmt.Errorf("buildtrace: witness of %s: %w", p.ID, err)
		}
		w := &trace.Witness{Platform: p.ID, Of: part.ID}
		if _, err := t.solve(ctx, client.SolveRequest{Definition: def}, w); err != nil {
			return fmt.Errorf("buildtrace: the witness step on the %s result: %w", p.ID, err)
		}
	}
	return nil
}

// part returns the plan part with ID id, registered or stepless.
func (t *tagClient) part(id string) *trace.PlanPart {
	if id == "" {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	i := slices.IndexFunc(t.records, func(r solveRecord) bool { return r.part != nil && r.part.ID == id })
	if i < 0 {
		return nil
	}
	p := *t.records[i].part
	return &p
}
