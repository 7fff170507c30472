package verify

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/buildtrace/buildtrace/pkg/fsdiff"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
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
//     traced run by its diff, a COPY/ADD by its place only;
//   - when the signed plan has a witness of the result (a step the frontend
//     ran on the finished image, trace.Witness), every layer to the diff
//     digests that witness saw below it: then no layer is bound by its
//     place only, and a plan with a witness that did not run, or ran on
//     other layers, fails.
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

	// Each layer's diff is read over the layers below it, the base's
	// included: a directory header alone deletes a lower file
	// (docs/diff-digest.md), so a layer's digest depends on what it lies on.
	// The config's diff_ids are what a puller checks the uncompressed
	// layers against (BuildKit refuses a layer that differs), so verify
	// reading the same ones means it read the bytes an extractor unpacks,
	// however either side decompresses.
	diffIDs := t.Config.RootFS.DiffIDs
	if len(diffIDs) != len(layers) {
		r.fail(Failure{Check: CheckBinding, Event: fmt.Sprintf("the image config names %d uncompressed layer digests (rootfs.diff_ids) for %d layers", len(diffIDs), len(layers))})
		return
	}
	stack, from := baseStack(opts.BaseCache, layers[:k])
	diffs := make([]string, len(layers))
	for j := from; j < len(layers); j++ {
		dd, err := layerDiffDigest(ctx, opts, layers[j], diffIDs[j], stack, j >= k)
		if err != nil {
			r.fail(Failure{Check: CheckBinding, Event: fmt.Sprintf("layer %d (%s): %v", j, layers[j].Digest, err)})
			return
		}
		diffs[j] = dd
		if j == k-1 && opts.BaseCache != nil {
			if b, err := stack.MarshalBinary(); err == nil {
				opts.BaseCache.Put(baseKey(layers[:k]), b)
			}
		}
	}

	isEvidence := map[*trace.Step]bool{}
	for id, rs := range evidence {
		if len(executed[id]) == 0 {
			for _, run := range rs {
				isEvidence[run] = true
			}
		}
	}
	m := &matcher{ops: part.Layers, layers: layers, diffs: diffs, runs: runs, k: k, evidence: isEvidence, memo: map[[2]int]bool{}}
	m.groupDigest = func(from, to int) (string, error) {
		return groupDiffDigest(ctx, opts, layers, diffIDs, k, from, to)
	}
	if !m.match(0, k) {
		r.fail(Failure{Check: CheckBinding, Event: fmt.Sprintf("layers %d to %d of the image are not what the signed plan's %d ops made, as the signed runs saw them: a layer no step of build %s produced, one missing, or one a run did not run on", k, len(layers)-1, len(m.ops), b.BuildTraceID)})
		for j := k; j < len(layers); j++ {
			r.Layers = append(r.Layers, Layer{Digest: layers[j].Digest, DiffDigest: diffs[j], Binding: BindUnbound})
		}
		return
	}
	bound, covered := m.bound()
	if n, ok := m.witness(r, b, part, t.Platform, allowCached); ok {
		covered = n
	}
	for i := range bound {
		l := &bound[i]
		// A layer some traced run ran on is bound by that run's lower
		// digests, whatever op made it.
		if i < covered && (l.Binding == BindPlan || l.Binding == BindCached) {
			l.Binding = BindLower
		}
		if l.DiffDigest == fsdiff.EmptyDigest && l.Binding != BindRun {
			l.Binding = BindDirs
		}
		if l.Binding == BindCached && !allowCached {
			r.fail(Failure{Check: CheckBinding, StepID: l.StepID, Event: fmt.Sprintf("layer %s is explained only by cached step %s, whose run was not observed (allow with cached.allow)", l.Digest, l.StepID)})
		}
	}
	r.Layers = append(r.Layers, bound...)
}

// matcher aligns the plan's layer ops with the image's layers above the
// base. BuildKit drops empty layers, so an op may make none. A run binds a
// layer only with its own diff, and only where the layers below are what it
// ran on (its lower digests), so no layer can be slipped under a run and no
// earlier run's layer taken for another's.
type matcher struct {
	ops      []trace.LayerOp
	layers   []ocispec.Descriptor
	diffs    []string
	runs     map[string][]*trace.Step
	k        int // base layers
	evidence map[*trace.Step]bool
	memo     map[[2]int]bool
	// opOf maps each layer above the base to the op that made it, as
	// bound found them.
	opOf map[int]int
	// groupDigest is the diff digest of layers from to to (exclusive)
	// read as one (fsdiff.FromLayers), over the layers below them.
	groupDigest func(from, to int) (string, error)
}

func (m *matcher) match(i, j int) bool {
	key := [2]int{i, j}
	if v, ok := m.memo[key]; ok {
		return v
	}
	v := m.try(i, j)
	m.memo[key] = v
	return v
}

func (m *matcher) try(i, j int) bool {
	if i == len(m.ops) {
		return j == len(m.layers)
	}
	return m.canSkip(m.ops[i], j) && m.match(i+1, j) ||
		j < len(m.layers) && m.consumer(m.ops[i], j) != nil && m.match(i+1, j+1)
}

// lowersOK: the layers below position j are what run r ran on.
func (m *matcher) lowersOK(r *trace.Step, j int) bool {
	if slices.Contains(r.Lowers, "") {
		// The tracer could not hash a layer the run ran on: the run vouches
		// for nothing below it, so it binds nowhere. Binding by its diff
		// alone would leave every COPY layer below it to plan position
		// (a registry writer could replace one), and a build author can
		// make a lower unhashable (redteam12).
		return false
	}
	if len(r.Lowers) == 0 {
		// No lowers recorded at all (a trace without them): its diff
		// alone; evidence from another build must show them.
		return !m.evidence[r]
	}
	if len(r.Lowers) < m.k {
		return false
	}
	var want, got []string
	for i := len(r.Lowers) - 1 - m.k; i >= 0; i-- {
		if r.Lowers[i] != fsdiff.EmptyDigest {
			want = append(want, r.Lowers[i])
		}
	}
	for x := m.k; x < j; x++ {
		if m.diffs[x] != fsdiff.EmptyDigest {
			got = append(got, m.diffs[x])
		}
	}
	return slices.Equal(want, got)
}

func (m *matcher) hasLowers(r *trace.Step) bool {
	return len(r.Lowers) >= m.k && len(r.Lowers) > 0 && !slices.Contains(r.Lowers, "")
}

// canSkip: the op may have made no layer at position j.
func (m *matcher) canSkip(op trace.LayerOp, j int) bool {
	switch op.Kind {
	case trace.LayerMerge, trace.LayerFile:
		return true
	case trace.LayerRun:
		rs := m.runs[op.StepID]
		if len(rs) == 0 {
			return true // cached, unproven
		}
		return slices.ContainsFunc(rs, func(r *trace.Step) bool { return r.Diff.Digest == fsdiff.EmptyDigest && m.lowersOK(r, j) })
	}
	return false
}

// consumer returns what makes layer j the op's: the run (nil when it
// cannot be), or a placeholder for a file op or a cached step.
func (m *matcher) consumer(op trace.LayerOp, j int) *trace.Step {
	switch op.Kind {
	case trace.LayerFile:
		return &trace.Step{}
	case trace.LayerRun:
		rs := m.runs[op.StepID]
		if len(rs) == 0 {
			return &trace.Step{}
		}
		for _, r := range rs {
			if r.Diff.Digest != "" && r.Diff.Digest == m.diffs[j] && m.lowersOK(r, j) {
				return r
			}
		}
	}
	return nil
}

// bound lists the layers as an alignment match found binds them, and how
// many of them (from the base up) a traced run's lower digests covered.
func (m *matcher) bound() ([]Layer, int) {
	var out []Layer
	covered := 0
	j := m.k
	for i := 0; i < len(m.ops); i++ {
		op := m.ops[i]
		var r *trace.Step
		if j < len(m.layers) {
			r = m.consumer(op, j)
		}
		if r == nil || !m.match(i+1, j+1) {
			if op.Kind == trace.LayerRun {
				for _, c := range m.runs[op.StepID] {
					if c.Diff.Digest == fsdiff.EmptyDigest && m.lowersOK(c, j) && m.hasLowers(c) {
						covered = max(covered, j-m.k)
					}
				}
			}
			continue // the op made no layer
		}
		l := Layer{Digest: m.layers[j].Digest, DiffDigest: m.diffs[j], StepID: op.StepID, Op: op.Name, Binding: BindPlan}
		if m.opOf == nil {
			m.opOf = map[int]int{}
		}
		m.opOf[j] = i
		if op.Kind == trace.LayerRun {
			l.Binding = BindCached
			if r.StepID != "" {
				l.Binding = BindRun
				if m.hasLowers(r) {
					covered = max(covered, j-m.k)
				}
			}
		}
		out = append(out, l)
		j++
	}
	return out, covered
}

// witness binds every layer above the base to the signed lowers of a
// witness run of the result (trace.Witness): a run of a step the frontend
// ran on the finished result, whose lower layers are the image's. It
// returns how many layers above the base it covers (all of them) and true
// when it bound them; false when the plan has no witness of this result
// (an image built before witnesses: the layers after the last traced run
// keep their place in the plan) or when it failed, which it reports. A
// plan with a witness never falls back to plan position, except for an
// unproven cached witness that cached.allow accepts (as it accepts an
// unproven cached RUN's layer).
func (m *matcher) witness(r *Result, b *trace.Build, part *trace.PlanPart, platform string, allowCached bool) (int, bool) {
	ws := trace.Witnesses(b.Plan, platform, part.ID)
	if len(ws) == 0 {
		return 0, false
	}
	above := len(m.layers) - m.k
	var cands []*trace.Step
	for _, w := range ws {
		if msg := witnessChainMismatch(w, part); msg != "" {
			r.fail(Failure{Check: CheckBinding, StepID: w.Witness.StepID, Event: "the signed plan's witness of this image's result " + msg})
			return 0, false
		}
		cands = append(cands, m.runs[w.Witness.StepID]...)
	}
	id := ws[0].Witness.StepID
	// The evidence of a cached witness (frontends before red team 16 let
	// BuildKit cache it) is a run of its step, not of this image: a step
	// ID does not cover the build context, so the run can be another
	// build's of the Dockerfile, on other layers, which a registry writer
	// can then give this image. It binds nothing; the witness is unproven.
	evidence := ""
	if len(cands) > 0 && m.evidence[cands[0]] {
		evidence = cands[0].ContainerID
		cands = nil
	}
	if len(cands) == 0 {
		cached := evidence != "" || !b.Tracer.Since.IsZero() && b.Tracer.Since.Before(trace.FirstReceived(b.Plan))
		if cached && allowCached {
			r.Witness = WitnessUnproven
			return 0, false
		}
		why := "did not run in this build, or the tracer did not see it"
		switch {
		case evidence != "":
			why = fmt.Sprintf("was cached; its evidence (container %s of an earlier build) is a run of the step, which need not have been on this image's layers: a witness binds only in the build it runs in (allow with cached.allow)", evidence)
		case cached:
			why = "was cached, and the trace holds no signed record of an earlier run of it (allow with cached.allow)"
		}
		r.fail(Failure{Check: CheckBinding, StepID: id, Event: fmt.Sprintf("the witness step %s, planned on this image's result to bind its layers %s, %s", id, m.span(), why)})
		return 0, false
	}
	for _, c := range cands {
		if m.witnessAlign(c) {
			r.Witness = WitnessExecuted
			return above, true
		}
	}
	for _, c := range cands {
		if m.hasLowers(c) {
			r.fail(Failure{Check: CheckBinding, StepID: id, Event: fmt.Sprintf("the image's layers are not those the witness (step %s, container %s) ran on: %s", id, c.ContainerID, m.lowerMismatch(c))})
			return 0, false
		}
	}
	r.fail(Failure{Check: CheckBinding, StepID: id, Event: fmt.Sprintf("the witness step %s has no run whose lower layers the tracer could all hash: layers %s are not bound", id, m.span())})
	return 0, false
}

// witnessAlign matches the witness run c's lower digests (above the base,
// bottom first, empty ones left out) with the image's layers above the
// base (empty ones left out): one lower per layer, in order, except where
// BuildKit made one snapshot of several layers. It does so for consecutive
// COPY --link layers: their ops are the inputs of one merge, which the
// solver flattens, and the overlay snapshotter applies the inputs above
// the common parent into a single snapshot, while the image keeps one
// layer per input. A lower then stands for such a group (two or more
// consecutive layers, each made by a file op that is a merge's input) when
// it is the diff digest of the group's layers read as one
// (fsdiff.FromLayers): every layer is bound either way.
func (m *matcher) witnessAlign(c *trace.Step) bool {
	if !m.hasLowers(c) {
		return false
	}
	var want []string
	for i := len(c.Lowers) - 1 - m.k; i >= 0; i-- {
		if c.Lowers[i] != fsdiff.EmptyDigest {
			want = append(want, c.Lowers[i])
		}
	}
	var got []int
	for j := m.k; j < len(m.layers); j++ {
		if m.diffs[j] != fsdiff.EmptyDigest {
			got = append(got, j)
		}
	}
	linked := m.linked
	groups := map[[2]int]string{}
	group := func(from, to int) string {
		key := [2]int{from, to}
		if d, ok := groups[key]; ok {
			return d
		}
		d, err := "", error(nil)
		if m.groupDigest != nil {
			// A group that cannot be read as one (an opaque marker, a
			// layer verify refuses) is no group.
			if d, err = m.groupDigest(from, to); err != nil {
				d = ""
			}
		}
		groups[key] = d
		return d
	}
	failed := map[[2]int]bool{}
	var try func(p, q int) bool
	try = func(p, q int) bool {
		if p == len(want) || q == len(got) {
			return p == len(want) && q == len(got)
		}
		if failed[[2]int{p, q}] {
			return false
		}
		if m.diffs[got[q]] == want[p] && try(p+1, q+1) {
			return true
		}
		for e := q + 1; e < len(got) && linked(got[q]) && linked(got[e]); e++ {
			// Layers with an empty diff between them are in the group too:
			// they are layers of the same snapshot.
			if d := group(got[q], got[e]+1); d != "" && d == want[p] && try(p+1, e+1) {
				return true
			}
		}
		failed[[2]int{p, q}] = true
		return false
	}
	return try(0, 0)
}

// linked reports whether layer j was made by a COPY --link: a file op that
// is a merge's input (ResultChain lists a merge after its inputs' ops).
func (m *matcher) linked(j int) bool {
	i, ok := m.opOf[j]
	return ok && m.ops[i].Kind == trace.LayerFile && i+1 < len(m.ops) && m.ops[i+1].Kind == trace.LayerMerge
}

// groupDiffDigest reads layers [from, to) as one (fsdiff.FromLayers) over
// the layers below them, which it reads again, each checked against the
// config's diff_ids as layerDiffDigest checks them.
func groupDiffDigest(ctx context.Context, opts Options, layers []ocispec.Descriptor, diffIDs []digest.Digest, k, from, to int) (string, error) {
	stack, start := baseStack(opts.BaseCache, layers[:k])
	for j := start; j < from; j++ {
		if _, err := layerDiffDigest(ctx, opts, layers[j], diffIDs[j], stack, j >= k); err != nil {
			return "", err
		}
	}
	return fsdiff.FromLayers(ctx, to-from, func(i int) (io.ReadCloser, error) {
		return openChecked(ctx, opts, layers[from+i], diffIDs[from+i])
	}, stack)
}

// checkedLayer is a layer's uncompressed tar whose Close reads the rest of
// the blob and fails unless it is what its digest and diff_id say.
type checkedLayer struct {
	io.Reader
	close func() error
}

func (c *checkedLayer) Close() error { return c.close() }

func openChecked(ctx context.Context, opts Options, d ocispec.Descriptor, diffID digest.Digest) (io.ReadCloser, error) {
	if opts.OpenLayer == nil {
		return nil, fmt.Errorf("no way to read layers")
	}
	rc, err := opts.OpenLayer(ctx, d)
	if err != nil {
		return nil, err
	}
	zr, closeFn, err := Decompress(rc)
	if err != nil {
		rc.Close()
		return nil, err
	}
	h := sha256.New()
	tr := io.TeeReader(zr, h)
	return &checkedLayer{Reader: tr, close: func() error {
		defer rc.Close()
		defer closeFn()
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			return err
		}
		if got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); got != diffID {
			return fmt.Errorf("layer %s: its uncompressed content is %s, but the image config's rootfs.diff_ids names %s", d.Digest, got, diffID)
		}
		return nil
	}}, nil
}

// span names the layers above the base.
func (m *matcher) span() string {
	if len(m.layers) == m.k {
		return "(none above the base)"
	}
	return fmt.Sprintf("%d to %d", m.k, len(m.layers)-1)
}

// witnessChainMismatch says how a witness part is not a step run on
// part's result: its layers must be the result's, then its own run.
func witnessChainMismatch(w, part *trace.PlanPart) string {
	n := len(w.Layers)
	if n == 0 || w.Layers[n-1].Kind != trace.LayerRun || w.Layers[n-1].StepID != w.Witness.StepID {
		return fmt.Sprintf("(part %s) does not end with a run of its step %s", w.ID, w.Witness.StepID)
	}
	same := n-1 == len(part.Layers)
	for i := 0; same && i < n-1; i++ {
		same = w.Layers[i].Kind == part.Layers[i].Kind && w.Layers[i].OpDigest == part.Layers[i].OpDigest
	}
	if !same || (w.Base == nil) != (part.Base == nil) || w.Base != nil && w.Base.Ref != part.Base.Ref {
		return fmt.Sprintf("(part %s) does not run on the result of part %s", w.ID, part.ID)
	}
	return ""
}

// lowerMismatch names the first layer above the base that is not what
// run c ran on there (its lower digests, empty ones left out on both
// sides, as BuildKit drops empty layers).
func (m *matcher) lowerMismatch(c *trace.Step) string {
	if len(c.Lowers) < m.k {
		return fmt.Sprintf("it ran on %d layers, fewer than the base image's %d", len(c.Lowers), m.k)
	}
	var want []string
	for i := len(c.Lowers) - 1 - m.k; i >= 0; i-- {
		if c.Lowers[i] != fsdiff.EmptyDigest {
			want = append(want, c.Lowers[i])
		}
	}
	var got []int
	for j := m.k; j < len(m.layers); j++ {
		if m.diffs[j] != fsdiff.EmptyDigest {
			got = append(got, j)
		}
	}
	for p := 0; p < max(len(want), len(got)); p++ {
		switch {
		case p < len(want) && p < len(got) && m.diffs[got[p]] == want[p]:
			continue
		case p < len(want) && p < len(got):
			j := got[p]
			if e := p + 1; e < len(got) && m.linked(j) && m.linked(got[e]) {
				// Consecutive COPY --link layers: one snapshot to
				// BuildKit, compared as one; any of them may differ.
				var ds []string
				for ; e < len(got) && m.linked(got[e]); e++ {
				}
				for _, x := range got[p:e] {
					ds = append(ds, m.layers[x].Digest.String())
				}
				return fmt.Sprintf("layers %d to %d (%s), COPY --link layers BuildKit made one snapshot of, are not, read as one, the layer it ran on there (diff digest %s)", j, got[e-1], strings.Join(ds, ", "), want[p])
			}
			return fmt.Sprintf("layer %d (%s, diff digest %s) is not the layer it ran on there (diff digest %s)", j, m.layers[j].Digest, m.diffs[j], want[p])
		case p < len(got):
			j := got[p]
			return fmt.Sprintf("layer %d (%s, diff digest %s) is one it did not run on", j, m.layers[j].Digest, m.diffs[j])
		default:
			return fmt.Sprintf("the image lacks a layer it ran on (diff digest %s)", want[p])
		}
	}
	return "they differ in layers the diff digest leaves out"
}

// baseStack returns what the base layers leave, from the cache, and the
// first layer still to read: 0 on a miss.
func baseStack(c Cache, base []ocispec.Descriptor) (*fsdiff.Stack, int) {
	s := fsdiff.NewStack()
	if c == nil || len(base) == 0 {
		return s, 0
	}
	if b, ok := c.Get(baseKey(base)); ok && s.UnmarshalBinary(b) == nil {
		return s, len(base)
	}
	return fsdiff.NewStack(), 0
}

// baseKey names a chain of layers by their blob digests, which verify
// checks as it reads them (and the signed plan pins the base's).
func baseKey(base []ocispec.Descriptor) string {
	h := sha256.New()
	io.WriteString(h, "buildtrace-base-stack-v1\n")
	for _, d := range base {
		io.WriteString(h, d.Digest.String()+"\n")
	}
	return hex.EncodeToString(h.Sum(nil))
}

// layerDiffDigest reads layer d over lower, the layers below it, and adds
// it to lower; with digest false it only adds it ("" for the digest).
func layerDiffDigest(ctx context.Context, opts Options, d ocispec.Descriptor, diffID digest.Digest, lower *fsdiff.Stack, withDigest bool) (string, error) {
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
	zr, closeFn, err := Decompress(rc)
	if err != nil {
		return "", blobErr(err)
	}
	defer closeFn()
	uncompressed := sha256.New()
	tr := io.TeeReader(zr, uncompressed)
	var dd string
	if withDigest {
		dd, _, err = fsdiff.FromLayer(ctx, tr, lower)
	} else {
		err = lower.Apply(ctx, tr)
	}
	if err != nil {
		what := "computing diff digest"
		if !withDigest {
			what = "reading what it leaves below the layers above"
		}
		return "", blobErr(fmt.Errorf("%s: %w", what, err))
	}
	// Read to the end of the blob, past the tar's end marker, so its digest
	// is checked before the digest of its content is trusted.
	if _, err := io.Copy(io.Discard, tr); err != nil {
		return "", err
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return "", err
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, uncompressed.Sum(nil)); got != diffID {
		return "", fmt.Errorf("its uncompressed content is %s, but the image config's rootfs.diff_ids names %s: a puller would unpack other bytes than verify read", got, diffID)
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
