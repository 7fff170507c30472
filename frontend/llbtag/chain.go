package llbtag

import (
	"fmt"
	"strings"

	"github.com/moby/buildkit/solver/pb"
	digest "github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/proto"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
)

// Chain describes how a (tagged) definition's result is layered: the base
// image it starts from and, bottom first, each op whose snapshot is a layer
// of the result. BuildKit exports one layer per snapshot in that chain
// (dropping empty ones), so this is what a verifier binds an image's layers
// to.
type Chain struct {
	Platform string
	Base     *trace.BaseImage
	Layers   []trace.LayerOp
	Root     digest.Digest // the result op
}

// ResultChain walks def from its result back to its base along the root
// file system: an ExecOp's "/" mount, a FileOp's output action, a
// MergeOp's inputs in order.
func ResultChain(def *pb.Definition) (*Chain, error) {
	if def == nil || len(def.Def) == 0 {
		return nil, nil
	}
	ops := make(map[digest.Digest]*pb.Op, len(def.Def))
	var last digest.Digest
	for i, dt := range def.Def {
		var op pb.Op
		if err := proto.Unmarshal(dt, &op); err != nil {
			return nil, fmt.Errorf("llb op %d: %w", i, err)
		}
		d := digest.FromBytes(dt)
		ops[d] = &op
		last = d
	}
	// The last op of a marshalled definition is the result marker, whose
	// single input is the result.
	term := ops[last]
	if term == nil || term.Op != nil || len(term.Inputs) != 1 {
		return nil, fmt.Errorf("llb definition does not end with a result op")
	}
	c := &Chain{Root: digest.Digest(term.Inputs[0].Digest)}
	w := chainWalk{ops: ops, meta: def.Metadata, src: def.Source}
	if err := w.walk(c, term.Inputs[0], 0); err != nil {
		return nil, err
	}
	if c.Platform == "" {
		for _, op := range ops {
			if op.Platform != nil {
				c.Platform = formatPlatform(op.Platform)
				break
			}
		}
	}
	return c, nil
}

type chainWalk struct {
	ops  map[digest.Digest]*pb.Op
	meta map[string]*pb.OpMetadata
	src  *pb.Source
}

func (w chainWalk) locations(d digest.Digest) []trace.Location {
	var out []trace.Location
	for _, l := range locations(w.src, d) {
		out = append(out, trace.Location{File: l.Filename, StartLine: l.StartLine, EndLine: l.EndLine})
	}
	return out
}

const maxChain = 10_000

func (w chainWalk) walk(c *Chain, in *pb.Input, depth int) error {
	if depth > maxChain {
		return fmt.Errorf("llb chain deeper than %d ops", maxChain)
	}
	d := digest.Digest(in.Digest)
	op := w.ops[d]
	if op == nil {
		return fmt.Errorf("llb definition references missing op %s", d)
	}
	if c.Platform == "" && op.Platform != nil && op.GetSource() == nil {
		c.Platform = formatPlatform(op.Platform)
	}
	name := ""
	if md := w.meta[d.String()]; md != nil {
		name = md.Description[DescriptionName]
	}
	switch x := op.Op.(type) {
	case *pb.Op_Source:
		id := x.Source.Identifier
		if ref, ok := strings.CutPrefix(id, "docker-image://"); ok {
			if c.Base != nil || len(c.Layers) > 0 {
				// An image merged in above the bottom: its layers are
				// not accounted for.
				c.Layers = append(c.Layers, trace.LayerOp{Kind: trace.LayerOther, OpDigest: d.String(), Name: id})
				return nil
			}
			base := &trace.BaseImage{Ref: ref}
			if _, dg, ok := strings.Cut(ref, "@"); ok {
				base.Digest = dg
			}
			if op.Platform != nil && c.Platform == "" {
				c.Platform = formatPlatform(op.Platform)
			}
			c.Base = base
			return nil
		}
		// Another source (local context, git, http) as a root file system.
		c.Layers = append(c.Layers, trace.LayerOp{Kind: trace.LayerOther, OpDigest: d.String(), Name: id})
		return nil
	case *pb.Op_Exec:
		var root *pb.Mount
		for _, m := range x.Exec.Mounts {
			if m.Dest == "/" {
				root = m
			}
		}
		if root == nil || root.Output != 0 {
			return fmt.Errorf("exec op %s: the result is not its root mount", d)
		}
		if root.Input >= 0 {
			if int(root.Input) >= len(op.Inputs) {
				return fmt.Errorf("exec op %s: root mount names input %d of %d", d, root.Input, len(op.Inputs))
			}
			if err := w.walk(c, op.Inputs[root.Input], depth+1); err != nil {
				return err
			}
		}
		stepID := ""
		if x.Exec.Meta != nil {
			stepID, _ = steptag.StepOfCgroup(x.Exec.Meta.CgroupParent)
		}
		c.Layers = append(c.Layers, trace.LayerOp{Kind: trace.LayerRun, OpDigest: d.String(), StepID: stepID, Name: name, Locations: w.locations(d)})
		return nil
	case *pb.Op_File:
		// Follow the action that makes output 0 back to an input.
		acts := x.File.Actions
		idx := -1
		for i, a := range acts {
			if a.Output == 0 {
				idx = i
			}
		}
		for idx >= 0 {
			a := acts[idx]
			switch {
			case a.Input < 0:
				idx = -1 // scratch
			case int(a.Input) < len(op.Inputs):
				if err := w.walk(c, op.Inputs[a.Input], depth+1); err != nil {
					return err
				}
				idx = -1
			default:
				idx = int(a.Input) - len(op.Inputs)
				if idx >= len(acts) {
					return fmt.Errorf("file op %s: action input out of range", d)
				}
			}
		}
		c.Layers = append(c.Layers, trace.LayerOp{Kind: trace.LayerFile, OpDigest: d.String(), Name: name, Locations: w.locations(d)})
		return nil
	case *pb.Op_Merge:
		for _, mi := range x.Merge.Inputs {
			if int(mi.Input) >= len(op.Inputs) {
				return fmt.Errorf("merge op %s: input out of range", d)
			}
			if err := w.walk(c, op.Inputs[mi.Input], depth+1); err != nil {
				return err
			}
		}
		c.Layers = append(c.Layers, trace.LayerOp{Kind: trace.LayerMerge, OpDigest: d.String(), Name: name})
		return nil
	}
	c.Layers = append(c.Layers, trace.LayerOp{Kind: trace.LayerOther, OpDigest: d.String(), Name: name})
	return nil
}
