// Package llbtag tags every ExecOp of an LLB definition with the cgroup
// parent of its buildtrace step, so the tracer can tie each running container
// to the Dockerfile instruction that started it.
//
// BuildKit addresses ops by the digest of their marshalled bytes and later ops
// name their inputs by digest, so changing one ExecOp means re-marshalling it
// and every op downstream of it, and re-keying the definition's metadata and
// source locations.
package llbtag

import (
	"fmt"
	"slices"
	"strings"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/moby/buildkit/solver/pb"
	digest "github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/proto"
)

// DescriptionName is the op metadata description key holding the vertex
// name dockerfile2llb gives an instruction ("[stage-1 2/3] RUN echo hi").
const DescriptionName = "llb.customname"

// sessionAttrs are source attributes that name a client session or a
// random identity rather than what the source is. They change from one
// client session to the next and must not change a step ID.
var sessionAttrs = []string{
	pb.AttrLocalSessionID,
	pb.AttrLocalUniqueID,
	pb.AttrOCILayoutSessionID,
	pb.AttrOCILayoutStoreID,
}

// Step describes one tagged ExecOp.
type Step struct {
	ID          string        // steptag step ID, also in the op's cgroup parent
	Digest      digest.Digest // digest of the rewritten op
	Name        string        // vertex name (llb.customname), may be empty
	Instruction string        // Name without the "[stage i/n] " prefix
	Stage       string        // Dockerfile stage name, when Name carries one
	Platform    string        // "os/arch[/variant]" of the ExecOp, may be empty
	Args        []string      // the ExecOp's argv
	SecretEnv   []string      // names of secret environment variables
	SecretFiles []string      // mount paths of secret files
	Locations   []Location
}

// Location is a line range of a source file (usually the Dockerfile).
type Location struct {
	Filename  string
	StartLine int
	EndLine   int
}

// Tag rewrites def in place: every ExecOp gets Meta.CgroupParent set to its
// step's cgroup parent, and every digest is recomputed. It returns one Step
// per ExecOp, sorted by step ID.
func Tag(def *pb.Definition) ([]Step, error) { return TagWithNonce(def, "") }

// TagWithNonce is Tag, and also adds "buildtrace-<step nonce>.invalid" to
// each ExecOp's NO_PROXY: BuildKit leaves the proxy environment out of its
// cache key, and the tracer takes a container for a step of this build only
// when it carries that step's nonce (steptag.StepNonce), which the frontend
// registers with the plan. Each step gets its own, so a step that reads its
// environment learns nothing that would let another container pass for a
// different step, and a cached step's nonce is never in any container.
func TagWithNonce(def *pb.Definition, nonce string) ([]Step, error) {
	if def == nil || len(def.Def) == 0 {
		return nil, nil
	}
	t := &tagger{
		ops:      make(map[digest.Digest]*pb.Op, len(def.Def)),
		raw:      make(map[digest.Digest][]byte, len(def.Def)),
		newDgst:  make(map[digest.Digest]digest.Digest, len(def.Def)),
		newBytes: make(map[digest.Digest][]byte, len(def.Def)),
		identity: make(map[digest.Digest]digest.Digest, len(def.Def)),
		visiting: make(map[digest.Digest]bool),
		stepOf:   make(map[digest.Digest]string),
		nonce:    nonce,
	}
	order := make([]digest.Digest, 0, len(def.Def))
	for i, dt := range def.Def {
		var op pb.Op
		if err := proto.Unmarshal(dt, &op); err != nil {
			return nil, fmt.Errorf("llb op %d: %w", i, err)
		}
		d := digest.FromBytes(dt)
		t.ops[d] = &op
		t.raw[d] = dt
		order = append(order, d)
	}
	for _, d := range order {
		if _, err := t.rewrite(d); err != nil {
			return nil, err
		}
	}

	newDef := make([][]byte, len(order))
	for i, d := range order {
		newDef[i] = t.newBytes[d]
	}
	def.Def = newDef
	if def.Metadata != nil {
		md := make(map[string]*pb.OpMetadata, len(def.Metadata))
		for k, v := range def.Metadata {
			md[t.mapKey(k)] = v
		}
		def.Metadata = md
	}
	if def.Source != nil && def.Source.Locations != nil {
		locs := make(map[string]*pb.Locations, len(def.Source.Locations))
		for k, v := range def.Source.Locations {
			locs[t.mapKey(k)] = v
		}
		def.Source.Locations = locs
	}

	var steps []Step
	for old, id := range t.stepOf {
		nd := t.newDgst[old]
		s := Step{ID: id, Digest: nd}
		if md := def.Metadata[nd.String()]; md != nil {
			s.Name = md.Description[DescriptionName]
			s.Stage, s.Instruction = splitName(s.Name)
		}
		if p := t.ops[old].Platform; p != nil {
			s.Platform = formatPlatform(p)
		}
		if ex := t.ops[old].GetExec(); ex != nil {
			s.Args = slices.Clone(ex.GetMeta().GetArgs())
			for _, se := range ex.Secretenv {
				s.SecretEnv = append(s.SecretEnv, se.Name)
			}
			for _, m := range ex.Mounts {
				if m.MountType == pb.MountType_SECRET {
					s.SecretFiles = append(s.SecretFiles, m.Dest)
				}
			}
		}
		s.Locations = locations(def.Source, nd)
		steps = append(steps, s)
	}
	slices.SortFunc(steps, func(a, b Step) int { return strings.Compare(a.ID, b.ID) })
	// Two ExecOps with one identity are one op to BuildKit too; keep one.
	steps = slices.CompactFunc(steps, func(a, b Step) bool { return a.ID == b.ID })
	return steps, nil
}

type tagger struct {
	ops      map[digest.Digest]*pb.Op
	raw      map[digest.Digest][]byte
	newDgst  map[digest.Digest]digest.Digest
	newBytes map[digest.Digest][]byte
	identity map[digest.Digest]digest.Digest
	visiting map[digest.Digest]bool
	stepOf   map[digest.Digest]string // old digest -> step ID
	nonce    string
}

func (t *tagger) mapKey(k string) string {
	if nd, ok := t.newDgst[digest.Digest(k)]; ok {
		return nd.String()
	}
	return k
}

// rewrite computes the new bytes and digest of op d after its inputs, and
// its session-independent identity.
func (t *tagger) rewrite(d digest.Digest) (digest.Digest, error) {
	if nd, ok := t.newDgst[d]; ok {
		return nd, nil
	}
	op, ok := t.ops[d]
	if !ok {
		return "", fmt.Errorf("llb definition references missing op %s", d)
	}
	if t.visiting[d] {
		return "", fmt.Errorf("llb definition has a cycle through op %s", d)
	}
	t.visiting[d] = true
	defer delete(t.visiting, d)

	// The identity is the op with inputs named by their identities, session
	// attributes dropped and no cgroup parent.
	idOp := proto.Clone(op).(*pb.Op)
	newOp := proto.Clone(op).(*pb.Op)
	changed := false
	for i, in := range op.Inputs {
		nd, err := t.rewrite(digest.Digest(in.Digest))
		if err != nil {
			return "", err
		}
		if nd.String() != in.Digest {
			changed = true
		}
		newOp.Inputs[i].Digest = nd.String()
		idOp.Inputs[i].Digest = t.identity[digest.Digest(in.Digest)].String()
	}
	if src := idOp.GetSource(); src != nil {
		for _, k := range sessionAttrs {
			delete(src.Attrs, k)
		}
	}
	// An ExecOp tagged already (the witness's solve holds the image's
	// tagged ops, llb.NewDefinitionOp keeping their bytes) keeps its step
	// ID, its nonce and its bytes: re-tagging would add a second nonce,
	// and a new op digest would make BuildKit see another vertex. Its
	// identity is the untagged op's, so what is built on it keeps its
	// step ID from one build to the next (the nonce changes every build).
	//
	// Tagged by this frontend in this build, that is: a cgroup parent
	// naming a step and that step's nonce for this build. A build client
	// sets an ExecOp's cgroup parent (the Dockerfile frontend's
	// cgroup-parent option) and its NO_PROXY (a build arg), but not the
	// build's secret: anything else is tagged anew, as before.
	tagged := ""
	if ex := op.GetExec(); ex != nil && ex.Meta != nil && ex.Meta.CgroupParent != "" && t.nonce != "" {
		if id, err := steptag.StepOfCgroup(ex.Meta.CgroupParent); err == nil && ex.Meta.ProxyEnv != nil &&
			slices.Contains(strings.Split(ex.Meta.ProxyEnv.NoProxy, ","), nonceToken(t.nonce, id)) {
			tagged = id
		}
	}
	if ex := idOp.GetExec(); ex != nil && ex.Meta != nil {
		ex.Meta.CgroupParent = ""
		if tagged != "" && ex.Meta.ProxyEnv != nil {
			ex.Meta.ProxyEnv.NoProxy = stripNonce(ex.Meta.ProxyEnv.NoProxy)
			if proto.Equal(ex.Meta.ProxyEnv, &pb.ProxyEnv{}) {
				ex.Meta.ProxyEnv = nil
			}
		}
	}
	idBytes, err := marshal(idOp)
	if err != nil {
		return "", fmt.Errorf("llb op %s: %w", d, err)
	}
	t.identity[d] = digest.FromBytes(idBytes)

	if tagged != "" {
		t.stepOf[d] = tagged
	} else if ex := newOp.GetExec(); ex != nil {
		if ex.Meta == nil {
			ex.Meta = &pb.Meta{}
		}
		id := steptag.NewID(idBytes)
		ex.Meta.CgroupParent = steptag.CgroupParent(id)
		if t.nonce != "" {
			if ex.Meta.ProxyEnv == nil {
				ex.Meta.ProxyEnv = &pb.ProxyEnv{}
			}
			tok := nonceToken(t.nonce, id)
			if ex.Meta.ProxyEnv.NoProxy == "" {
				ex.Meta.ProxyEnv.NoProxy = tok
			} else {
				ex.Meta.ProxyEnv.NoProxy += "," + tok
			}
		}
		t.stepOf[d] = id
		changed = true
	}

	dt := t.raw[d]
	if changed {
		// Unchanged ops keep their exact bytes so their digests (and any
		// reference to them from outside the definition) stay as they were.
		if dt, err = marshal(newOp); err != nil {
			return "", fmt.Errorf("llb op %s: %w", d, err)
		}
	}
	nd := digest.FromBytes(dt)
	t.newBytes[d] = dt
	t.newDgst[d] = nd
	return nd, nil
}

// nonceToken is the NO_PROXY entry that carries step id's nonce.
func nonceToken(buildSecret, id string) string {
	return "buildtrace-" + steptag.StepNonce(buildSecret, id) + ".invalid"
}

// stripNonce removes the "buildtrace-<nonce>.invalid" entries TagWithNonce
// added to a NO_PROXY value.
func stripNonce(noProxy string) string {
	var keep []string
	for _, e := range strings.Split(noProxy, ",") {
		if strings.HasPrefix(e, "buildtrace-") && strings.HasSuffix(e, ".invalid") {
			continue
		}
		keep = append(keep, e)
	}
	return strings.Join(keep, ",")
}

// marshal is how client/llb marshals ops.
func marshal(op *pb.Op) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(op)
}

// splitName splits "[linux/amd64 build 2/3] RUN x" into the stage name
// ("build") and the instruction ("RUN x").
func splitName(name string) (stage, instruction string) {
	if !strings.HasPrefix(name, "[") {
		return "", name
	}
	end := strings.Index(name, "] ")
	if end < 0 {
		return "", name
	}
	instruction = name[end+2:]
	fields := strings.Fields(name[1:end])
	if len(fields) == 0 || !strings.Contains(fields[len(fields)-1], "/") {
		return "", name
	}
	// Fields before "i/n" are an optional platform (which contains '/')
	// and an optional stage name (which cannot).
	for _, f := range fields[:len(fields)-1] {
		if !strings.Contains(f, "/") {
			stage = f
		}
	}
	return stage, instruction
}

func formatPlatform(p *pb.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func locations(src *pb.Source, d digest.Digest) []Location {
	if src == nil {
		return nil
	}
	locs := src.Locations[d.String()]
	if locs == nil {
		return nil
	}
	var out []Location
	for _, l := range locs.Locations {
		var file string
		if i := int(l.SourceIndex); i >= 0 && i < len(src.Infos) && src.Infos[i] != nil {
			file = src.Infos[i].Filename
		}
		for _, r := range l.Ranges {
			if r.Start == nil {
				continue
			}
			loc := Location{Filename: file, StartLine: int(r.Start.Line), EndLine: int(r.Start.Line)}
			if r.End != nil && r.End.Line > r.Start.Line {
				loc.EndLine = int(r.End.Line)
			}
			// dockerfile2llb gives each line of a multi-line instruction
			// its own range; report adjacent lines as one range.
			if n := len(out); n > 0 && out[n-1].Filename == file && loc.StartLine <= out[n-1].EndLine+1 && loc.StartLine >= out[n-1].StartLine {
				out[n-1].EndLine = max(out[n-1].EndLine, loc.EndLine)
				continue
			}
			out = append(out, loc)
		}
	}
	return out
}
