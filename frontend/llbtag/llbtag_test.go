package llbtag

import (
	"context"
	"strings"
	"testing"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerui"
	"github.com/moby/buildkit/solver/pb"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/proto"
)

const dockerfile = `FROM scratch AS build
COPY f1 /f1
RUN echo hi > /out

FROM scratch
COPY --from=build /out /out
RUN cat /out && \
    echo done
`

// convert builds a Definition the way the Dockerfile frontend does, with a
// main context local source in the given client session ("" lets llb pick
// a random local.unique instead).
func convert(t *testing.T, df, session string) *pb.Definition {
	t.Helper()
	ctx := context.Background()
	var lopts []llb.LocalOption
	if session != "" {
		lopts = append(lopts, llb.SessionID(session))
	}
	res, err := dockerfile2llb.Dockerfile2LLB(ctx, []byte(df), dockerfile2llb.ConvertOpt{
		MainContext:    dockerui.DefaultMainContext(lopts...),
		SourceMap:      llb.NewSourceMap(nil, "Dockerfile", "Dockerfile", []byte(df)),
		TargetPlatform: &ocispecs.Platform{OS: "linux", Architecture: "amd64"},
	})
	if err != nil {
		t.Fatalf("Dockerfile2LLB: %v", err)
	}
	def, err := res.State.Marshal(ctx)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return def.ToPB()
}

func decode(t *testing.T, def *pb.Definition) ([]*pb.Op, map[string]bool) {
	t.Helper()
	var ops []*pb.Op
	dgsts := map[string]bool{}
	for _, dt := range def.Def {
		var op pb.Op
		if err := proto.Unmarshal(dt, &op); err != nil {
			t.Fatal(err)
		}
		ops = append(ops, &op)
		dgsts[digest.FromBytes(dt).String()] = true
	}
	return ops, dgsts
}

func TestTagDefinition(t *testing.T) {
	orig := convert(t, dockerfile, "session-a")
	def := proto.Clone(orig).(*pb.Definition)
	steps, err := Tag(def)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 2 {
		t.Fatalf("got %d steps, want 2: %+v", len(steps), steps)
	}

	ops, dgsts := decode(t, def)
	origOps, origDgsts := decode(t, orig)
	if len(ops) != len(origOps) {
		t.Fatalf("op count changed: %d -> %d", len(origOps), len(ops))
	}
	byDigest := map[string]Step{}
	for _, s := range steps {
		byDigest[s.Digest.String()] = s
	}
	execs := 0
	for i, op := range ops {
		for _, in := range op.Inputs {
			if !dgsts[in.Digest] {
				t.Errorf("op %d input %s is not an op of the definition", i, in.Digest)
			}
		}
		if ex := op.GetExec(); ex != nil {
			execs++
			d := digest.FromBytes(def.Def[i]).String()
			s, ok := byDigest[d]
			if !ok {
				t.Errorf("exec op %s has no step", d)
			} else if ex.Meta.CgroupParent != steptag.CgroupParent(s.ID) || !steptag.Valid(s.ID) {
				t.Errorf("exec op %s cgroup parent %q, step %q", d, ex.Meta.CgroupParent, s.ID)
			}
		}
		// Apart from input digests and the cgroup parent, nothing changed.
		a, b := proto.Clone(op).(*pb.Op), proto.Clone(origOps[i]).(*pb.Op)
		for _, o := range []*pb.Op{a, b} {
			for _, in := range o.Inputs {
				in.Digest = ""
			}
			if ex := o.GetExec(); ex != nil {
				ex.Meta.CgroupParent = ""
			}
		}
		if !proto.Equal(a, b) {
			t.Errorf("op %d changed beyond digests: %v vs %v", i, a, b)
		}
		// Ops upstream of every exec (sources, the first COPY) keep their bytes.
		if op.GetExec() == nil && len(op.Inputs) == 0 && !origDgsts[digest.FromBytes(def.Def[i]).String()] {
			t.Errorf("source op %d changed digest", i)
		}
	}
	if execs != 2 {
		t.Errorf("found %d exec ops, want 2", execs)
	}
	for k := range def.Metadata {
		if !dgsts[k] {
			t.Errorf("metadata key %s is not an op of the definition", k)
		}
	}
	for k := range def.Source.Locations {
		if !dgsts[k] {
			t.Errorf("source location key %s is not an op of the definition", k)
		}
	}
	// BuildKit's own loader checks the input graph.
	if _, err := llb.NewDefinitionOp(def); err != nil {
		t.Errorf("tagged definition does not load: %v", err)
	}

	want := map[string]Step{
		"RUN echo hi > /out":            {Stage: "build", Locations: []Location{{"Dockerfile", 3, 3}}},
		"RUN cat /out &&     echo done": {Stage: "stage-1", Locations: []Location{{"Dockerfile", 7, 8}}},
	}
	for _, s := range steps {
		w, ok := want[s.Instruction]
		if !ok {
			t.Errorf("unexpected step instruction %q (name %q)", s.Instruction, s.Name)
			continue
		}
		if s.Stage != w.Stage || s.Platform != "linux/amd64" || len(s.Locations) != 1 || s.Locations[0] != w.Locations[0] {
			t.Errorf("step %q = %+v, want stage %q, linux/amd64, %v", s.Instruction, s, w.Stage, w.Locations)
		}
	}
}

func stepIDs(t *testing.T, def *pb.Definition) []string {
	t.Helper()
	steps, err := Tag(def)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range steps {
		ids = append(ids, s.ID)
	}
	return ids
}

func TestStepIDsStable(t *testing.T) {
	a := convert(t, dockerfile, "session-a")
	b := convert(t, dockerfile, "session-b")
	u := convert(t, dockerfile, "") // random local.unique
	if proto.Equal(a, b) {
		t.Fatal("test is void: the two sessions marshalled the same definition")
	}
	ia, ib, iu := stepIDs(t, a), stepIDs(t, b), stepIDs(t, u)
	if strings.Join(ia, ",") != strings.Join(ib, ",") || strings.Join(ia, ",") != strings.Join(iu, ",") {
		t.Errorf("step IDs depend on the session: %v %v %v", ia, ib, iu)
	}
	// Tagging again (an already tagged definition) yields the same IDs.
	if again := stepIDs(t, a); strings.Join(again, ",") != strings.Join(ia, ",") {
		t.Errorf("retagging changed IDs: %v -> %v", ia, again)
	}

	c := convert(t, strings.Replace(dockerfile, "echo hi", "echo ho", 1), "session-a")
	ic := stepIDs(t, c)
	if ic[0] == ia[0] && ic[1] == ia[1] || len(ic) != 2 {
		t.Fatalf("changing a command kept step IDs: %v %v", ia, ic)
	}
	// Both RUNs change: the second depends on the first.
	for _, id := range ic {
		for _, old := range ia {
			if id == old {
				t.Errorf("step %s kept its ID although its command or input changed", id)
			}
		}
	}
}

func TestSplitName(t *testing.T) {
	for _, c := range []struct{ name, stage, instr string }{
		{"[stage-1 2/3] RUN echo hi", "stage-1", "RUN echo hi"},
		{"[ 2/10] RUN x", "", "RUN x"},
		{"[linux/arm64 build  3/12] RUN y", "build", "RUN y"},
		{"[linux/amd64->arm64 build 1/2] RUN z", "build", "RUN z"},
		{"RUN plain", "", "RUN plain"},
		{"[internal] load build context", "", "[internal] load build context"},
	} {
		s, i := splitName(c.name)
		if s != c.stage || i != c.instr {
			t.Errorf("splitName(%q) = %q, %q; want %q, %q", c.name, s, i, c.stage, c.instr)
		}
	}
}

// TestTagKeepsTaggedOps: the witness's definition holds the image's ops,
// tagged already (llb.NewDefinitionOp keeps their bytes). Tagging it
// again must keep them as they are (one nonce each, same digests and step
// IDs), and give the new ExecOp on top a step ID that does not depend on
// the build's nonce, so an identical rebuild plans the same witness step.
func TestTagKeepsTaggedOps(t *testing.T) {
	ctx := context.Background()
	witness := map[string]string{}
	for _, nonce := range []string{"nonce-of-build-1", "nonce-of-build-2"} {
		def := convert(t, dockerfile, "s1")
		steps, err := TagWithNonce(def, nonce)
		if err != nil {
			t.Fatal(err)
		}
		op, err := llb.NewDefinitionOp(def)
		if err != nil {
			t.Fatal(err)
		}
		w, err := llb.NewState(op).Run(llb.Args([]string{"/w/prog", "witness"})).Root().Marshal(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wdef := w.ToPB()
		tagged := map[digest.Digest]bool{}
		for _, dt := range def.Def[:len(def.Def)-1] { // all but the result marker
			tagged[digest.FromBytes(dt)] = true
		}
		wsteps, err := TagWithNonce(wdef, nonce)
		if err != nil {
			t.Fatal(err)
		}
		kept := 0
		for _, dt := range wdef.Def {
			if tagged[digest.FromBytes(dt)] {
				kept++
			}
			var o pb.Op
			if err := proto.Unmarshal(dt, &o); err != nil {
				t.Fatal(err)
			}
			if ex := o.GetExec(); ex != nil && strings.Count(ex.GetMeta().GetProxyEnv().GetNoProxy(), "buildtrace-") != 1 {
				t.Errorf("ExecOp with NO_PROXY %q: want one nonce", ex.GetMeta().GetProxyEnv().GetNoProxy())
			}
		}
		if kept != len(tagged) {
			t.Errorf("%d of the %d tagged ops kept their bytes", kept, len(tagged))
		}
		ids := map[string]bool{}
		for _, s := range steps {
			ids[s.ID] = true
		}
		var added []string
		for _, s := range wsteps {
			if !ids[s.ID] {
				added = append(added, s.ID)
			}
		}
		if len(wsteps) != len(steps)+1 || len(added) != 1 {
			t.Fatalf("steps %d, then %d (new %v): want the same and one more", len(steps), len(wsteps), added)
		}
		witness[nonce] = added[0]
	}
	if witness["nonce-of-build-1"] != witness["nonce-of-build-2"] {
		t.Errorf("the witness's step ID depends on the build's nonce: %v", witness)
	}
}

// TestTagRetagsOthersTags: an ExecOp that names a step in its cgroup
// parent but lacks this build's nonce for it (a build client's
// cgroup-parent option and NO_PROXY build arg, or another build's tagging)
// is tagged anew: its step ID and nonce are this frontend's.
func TestTagRetagsOthersTags(t *testing.T) {
	const nonce = "nonce-of-build-1"
	chosen := steptag.NewID([]byte("a step ID the client chose"))
	for _, noProxy := range []string{"", nonceToken("nonce-of-another-build", chosen), "buildtrace-guess.invalid"} {
		opts := []llb.RunOption{llb.Args([]string{"/bin/true"}), llb.WithCgroupParent(steptag.CgroupParent(chosen))}
		if noProxy != "" {
			opts = append(opts, llb.WithProxy(llb.ProxyEnv{NoProxy: noProxy}))
		}
		st, err := llb.Image("busybox").Run(opts...).Root().Marshal(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		def := st.ToPB()
		steps, err := TagWithNonce(def, nonce)
		if err != nil {
			t.Fatal(err)
		}
		if len(steps) != 1 || steps[0].ID == chosen {
			t.Fatalf("NO_PROXY %q: steps %+v, want one, not the client's %s", noProxy, steps, chosen)
		}
		for _, dt := range def.Def {
			var o pb.Op
			if err := proto.Unmarshal(dt, &o); err != nil {
				t.Fatal(err)
			}
			ex := o.GetExec()
			if ex == nil {
				continue
			}
			if got := ex.GetMeta().GetCgroupParent(); got != steptag.CgroupParent(steps[0].ID) {
				t.Errorf("NO_PROXY %q: cgroup parent %q, want this frontend's %q", noProxy, got, steptag.CgroupParent(steps[0].ID))
			}
			if !strings.Contains(ex.GetMeta().GetProxyEnv().GetNoProxy(), nonceToken(nonce, steps[0].ID)) {
				t.Errorf("NO_PROXY %q: the op lacks this build's nonce (NO_PROXY %q)", noProxy, ex.GetMeta().GetProxyEnv().GetNoProxy())
			}
		}
	}
}
