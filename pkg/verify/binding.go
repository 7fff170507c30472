package verify

import (
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"slices"

	"github.com/buildtrace/buildtrace/pkg/fsdiff"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/klauspost/compress/zstd"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// bind ties every layer of the image to the signed trace, never to the
// image config's history (which anyone who can push may rewrite):
//
//   - the base image's layers to the manifest the signed plan pins;
//   - the layers up to the last traced run of the result's chain to the
//     diff digests that run saw below it (its lower overlay layers: COPY
//     and cached RUN layers too) and to its own diff;
//   - the layers after it to the remaining ops of the plan, in order: a
//     traced run by its diff, a COPY/ADD by its place only.
func bind(ctx context.Context, r *Result, t Target, b *trace.Build, part *trace.PlanPart, executed, evidence map[string][]*trace.Step, allowCached bool, opts Options) {
	// A cached step's signed earlier run binds its layer as a run of this
	// build would.
	runs := map[string][]*trace.Step{}
	for id, rs := range executed {
		runs[id] = rs
	}
	for id, rs := range evidence {
		if len(runs[id]) == 0 {
			runs[id] = rs
		}
	}
	layers := t.Image.Layers
	k := 0
	if part.Base != nil {
		if opts.BaseLayers == nil {
			r.fail(Failure{Check: CheckBinding, Event: "no way to read the base image " + part.Base.Ref})
			return
		}
		base, err := opts.BaseLayers(ctx, part.Base.Ref, t.Platform)
		if err != nil {
			r.fail(Failure{Check: CheckBinding, Event: fmt.Sprintf("reading the base image %s the signed plan names: %v", part.Base.Ref, err)})
			return
		}
		if len(base) > len(layers) {
			r.fail(Failure{Check: CheckBinding, Event: fmt.Sprintf("the image has %d layers, fewer than its base image %s (%d)", len(layers), part.Base.Ref, len(base))})
			return
		}
		for i, d := range base {
			if layers[i].Digest != d.Digest {
				r.fail(Failure{Check: CheckBinding, Event: fmt.Sprintf("layer %d is %s, but the base image %s has %s there", i, layers[i].Digest, part.Base.Ref, d.Digest)})
				return
			}
			r.Layers = append(r.Layers, Layer{Digest: d.Digest, Binding: BindBase, Op: part.Base.Ref})
		}
		k = len(base)
	}

	diffs := make([]string, len(layers))
	for j := k; j < len(layers); j++ {
		dd, err := layerDiffDigest(ctx, opts, layers[j])
		if err != nil {
			r.fail(Failure{Check: CheckBinding, Event: fmt.Sprintf("layer %d (%s): %v", j, layers[j].Digest, err)})
			return
		}
		diffs[j] = dd
	}

	// The last op of the chain whose run the tracer saw with its lowers.
	last, lastRun := -1, (*trace.Step)(nil)
	for i, op := range part.Layers {
		if op.Kind != trace.LayerRun {
			continue
		}
		for _, run := range runs[op.StepID] {
			if run.Diff.Digest != "" && len(run.Lowers) >= k && !slices.Contains(run.Lowers, "") {
				last, lastRun = i, run
			}
		}
	}
	j := k
	if lastRun != nil {
		var want []string
		for i := len(lastRun.Lowers) - 1 - k; i >= 0; i-- {
			if lastRun.Lowers[i] != fsdiff.EmptyDigest {
				want = append(want, lastRun.Lowers[i])
			}
		}
		for wi, w := range want {
			for j < len(layers) && diffs[j] == fsdiff.EmptyDigest {
				r.Layers = append(r.Layers, Layer{Digest: layers[j].Digest, DiffDigest: diffs[j], Binding: BindDirs})
				j++
			}
			if j >= len(layers) || diffs[j] != w {
				got := "nothing"
				if j < len(layers) {
					got = fmt.Sprintf("layer %d %s with diff %s", j, layers[j].Digest, diffs[j])
				}
				r.fail(Failure{Check: CheckBinding, StepID: lastRun.StepID, Event: fmt.Sprintf("the signed run of step %s ran on a layer with diff %s (lower %d above the base); the image has %s there", lastRun.StepID, w, wi, got)})
				return
			}
			r.Layers = append(r.Layers, Layer{Digest: layers[j].Digest, DiffDigest: diffs[j], Binding: BindLower, StepID: lastRun.StepID})
			j++
		}
	}
	// The last traced run itself and everything after it.
	m := matcher{ops: part.Layers[max(last, 0):], layers: layers, diffs: diffs, runs: runs, memo: map[[2]int]bool{}}
	if !m.match(0, j) {
		r.fail(Failure{Check: CheckBinding, Event: fmt.Sprintf("layers %d to %d of the image are not what the signed plan's last %d ops made: a layer no step of build %s produced, or one missing", j, len(layers)-1, len(m.ops), b.BuildTraceID)})
		for ; j < len(layers); j++ {
			r.Layers = append(r.Layers, Layer{Digest: layers[j].Digest, DiffDigest: diffs[j], Binding: BindUnbound})
		}
		return
	}
	r.Layers = append(r.Layers, m.bound(0, j)...)
	for _, l := range r.Layers {
		if l.Binding == BindCached && !allowCached {
			r.fail(Failure{Check: CheckBinding, StepID: l.StepID, Event: fmt.Sprintf("layer %s is explained only by cached step %s, whose run was not observed (allow with cached.allow)", l.Digest, l.StepID)})
		}
	}
}

// matcher aligns the ops after the last traced run with the remaining
// layers. BuildKit drops empty layers, so an op may make none.
type matcher struct {
	ops    []trace.LayerOp
	layers []ocispec.Descriptor
	diffs  []string
	runs   map[string][]*trace.Step
	memo   map[[2]int]bool
}

func (m *matcher) match(i, j int) bool {
	k := [2]int{i, j}
	if v, ok := m.memo[k]; ok {
		return v
	}
	v := m.try(i, j)
	m.memo[k] = v
	return v
}

func (m *matcher) try(i, j int) bool {
	if i == len(m.ops) {
		return j == len(m.layers)
	}
	return m.canSkip(m.ops[i]) && m.match(i+1, j) ||
		j < len(m.layers) && m.canConsume(m.ops[i], j) && m.match(i+1, j+1)
}

// canSkip: the op may have made no layer.
func (m *matcher) canSkip(op trace.LayerOp) bool {
	switch op.Kind {
	case trace.LayerMerge, trace.LayerFile:
		return true
	case trace.LayerRun:
		rs := m.runs[op.StepID]
		return len(rs) == 0 || slices.ContainsFunc(rs, func(r *trace.Step) bool { return r.Diff.Digest == fsdiff.EmptyDigest })
	}
	return false
}

// canConsume: layer j may be the op's.
func (m *matcher) canConsume(op trace.LayerOp, j int) bool {
	switch op.Kind {
	case trace.LayerFile:
		return true
	case trace.LayerRun:
		rs := m.runs[op.StepID]
		return len(rs) == 0 || slices.ContainsFunc(rs, func(r *trace.Step) bool { return r.Diff.Digest != "" && r.Diff.Digest == m.diffs[j] })
	}
	return false
}

// bound lists the layers from j on as an alignment match found binds them.
func (m *matcher) bound(i, j int) []Layer {
	var out []Layer
	for ; i < len(m.ops); i++ {
		op := m.ops[i]
		if !(j < len(m.layers) && m.canConsume(op, j) && m.match(i+1, j+1)) {
			continue // the op made no layer
		}
		l := Layer{Digest: m.layers[j].Digest, DiffDigest: m.diffs[j], StepID: op.StepID, Op: op.Name, Binding: BindPlan}
		if op.Kind == trace.LayerRun {
			l.Binding = BindCached
			if len(m.runs[op.StepID]) > 0 {
				l.Binding = BindRun
			}
		}
		out = append(out, l)
		j++
	}
	return out
}

func layerDiffDigest(ctx context.Context, opts Options, d ocispec.Descriptor) (string, error) {
	if opts.OpenLayer == nil {
		return "", fmt.Errorf("no way to read layers")
	}
	rc, err := opts.OpenLayer(ctx, d)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	// A blob that is not what its digest says fails as such, even when
	// its corrupt content already broke decompression.
	blobErr := func(err error) error {
		if _, derr := io.Copy(io.Discard, rc); derr != nil {
			return derr
		}
		return err
	}
	tr, closeFn, err := Decompress(rc)
	if err != nil {
		return "", blobErr(err)
	}
	defer closeFn()
	dd, _, err := fsdiff.FromLayer(ctx, tr)
	if err != nil {
		return "", blobErr(fmt.Errorf("computing diff digest: %w", err))
	}
	// Read to the end of the blob, past the tar's end marker, so its digest
	// is checked before the digest of its content is trusted.
	if _, err := io.Copy(io.Discard, tr); err != nil {
		return "", err
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return "", err
	}
	return dd, nil
}

// Decompress returns the tar inside a layer blob, recognising gzip and
// zstd by their magic numbers (media types lie more often than bytes).
func Decompress(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 64*1024)
	magic, _ := br.Peek(4)
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("gunzip layer: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case len(magic) == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("zstd layer: %w", err)
		}
		return zr, zr.Close, nil
	}
	return br, func() {}, nil
}
