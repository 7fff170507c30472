package verify

import (
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/fsdiff"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/klauspost/compress/zstd"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// IsRunHistory reports whether a history entry was made by a RUN
// instruction: BuildKit writes "RUN ...", the legacy builder "/bin/sh -c
// ..." without "#(nop)".
func IsRunHistory(h ocispec.History) bool {
	if h.EmptyLayer {
		return false
	}
	c := strings.TrimSpace(h.CreatedBy)
	if f := strings.Fields(c); len(f) > 0 && f[0] == "RUN" {
		return true
	}
	return strings.HasPrefix(c, "/bin/sh -c ") && !strings.Contains(c, "#(nop)")
}

// bind requires each RUN layer of the image to be the file system diff of
// a step this build executed (or, with cached.allow, of a cached step
// whose instruction it is), so a trace cannot vouch for another image.
func bind(ctx context.Context, r *Result, t Target, pred *attest.Predicate, runs map[string][]*trace.Step, allowCached bool, opts Options) {
	layers := t.Image.Layers
	var nonEmpty []ocispec.History
	for _, h := range t.Config.History {
		if !h.EmptyLayer {
			nonEmpty = append(nonEmpty, h)
		}
	}
	if len(nonEmpty) != len(layers) {
		r.fail(Failure{Check: CheckBinding, Event: fmt.Sprintf("image config has %d history entries with layers but the manifest has %d layers", len(nonEmpty), len(layers))})
		return
	}
	skip := 0
	diffIDs := t.Config.RootFS.DiffIDs
	if len(opts.BaseDiffIDs) > 0 && len(opts.BaseDiffIDs) <= len(diffIDs) {
		skip = len(opts.BaseDiffIDs)
		for i, d := range opts.BaseDiffIDs {
			if diffIDs[i] != d {
				skip = 0
				r.fail(Failure{Check: CheckBinding, Event: fmt.Sprintf("image does not start with the given base image's layers (layer %d is %s, base has %s)", i, diffIDs[i], d)})
				break
			}
		}
	}

	// Digests of executed steps' diffs, to the step.
	executed := map[string]attest.Step{}
	var cached []attest.Step
	for _, s := range pred.Buildtrace.Steps {
		switch s.Status {
		case attest.StatusExecuted:
			for _, run := range runs[s.StepID] {
				if run.Diff.Digest != "" {
					executed[run.Diff.Digest] = s
				}
			}
		case attest.StatusCached:
			cached = append(cached, s)
		}
	}
	usedCached := map[string]bool{}
	for i, h := range nonEmpty {
		if i < skip || !IsRunHistory(h) {
			continue
		}
		l := Layer{Digest: layers[i].Digest, CreatedBy: h.CreatedBy}
		dd, err := layerDiffDigest(ctx, opts, layers[i])
		if err != nil {
			r.fail(Failure{Check: CheckBinding, Event: fmt.Sprintf("layer %s (%s): %v", layers[i].Digest, h.CreatedBy, err)})
			r.Layers = append(r.Layers, l)
			continue
		}
		l.DiffDigest = dd
		if s, ok := executed[dd]; ok {
			l.StepID = s.StepID
			r.Layers = append(r.Layers, l)
			continue
		}
		if allowCached {
			for _, s := range cached {
				if !usedCached[s.StepID] && sameCommand(s.Instruction, h.CreatedBy) {
					usedCached[s.StepID] = true
					l.StepID, l.Cached = s.StepID, true
					break
				}
			}
			if l.Cached {
				r.Layers = append(r.Layers, l)
				continue
			}
		}
		r.Layers = append(r.Layers, l)
		r.fail(Failure{Check: CheckBinding, Event: fmt.Sprintf("layer %s made by %q has diff digest %s, which no executed step of build %s produced", layers[i].Digest, h.CreatedBy, dd, r.BuildTraceID)})
	}
}

// sameCommand compares a step's instruction ("RUN make") with a history
// entry ("RUN /bin/sh -c make # buildkit").
func sameCommand(instruction, createdBy string) bool {
	norm := func(s string) string {
		s = strings.TrimSpace(s)
		s = strings.TrimSuffix(s, "# buildkit")
		s = strings.TrimSpace(strings.TrimPrefix(s, "RUN"))
		s = strings.TrimSpace(strings.TrimPrefix(s, "|"))
		s = strings.TrimPrefix(s, "/bin/sh -c ")
		return strings.Join(strings.Fields(s), " ")
	}
	a, b := norm(instruction), norm(createdBy)
	return a != "" && (a == b || strings.HasSuffix(b, " "+a))
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
	tr, closeFn, err := Decompress(rc)
	if err != nil {
		return "", err
	}
	defer closeFn()
	dd, _, err := fsdiff.FromLayer(ctx, tr)
	if err != nil {
		return "", fmt.Errorf("computing diff digest: %w", err)
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
