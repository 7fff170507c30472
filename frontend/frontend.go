// Package frontend is a BuildKit gateway frontend: the stock Dockerfile
// frontend with every RUN tagged for buildtraced and, per image platform,
// an in-toto runtime-trace attestation of what the tracer saw.
//
// It wraps the gateway client handed to the stock builder: each LLB
// definition the builder solves is rewritten (frontend/llbtag) and evaluated
// right away, so the steps run while this frontend waits. Once the builder
// returns, the frontend fetches the signed trace of this build from the
// tracer on loopback and attaches it.
package frontend

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/buildtrace/buildtrace/frontend/llbtag"
	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
	"github.com/containerd/platforms"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	"github.com/moby/buildkit/frontend/dockerfile/builder"
	"github.com/moby/buildkit/frontend/gateway/client"
	gatewaypb "github.com/moby/buildkit/frontend/gateway/pb"
	"github.com/moby/buildkit/solver/result"
	digest "github.com/opencontainers/go-digest"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"golang.org/x/sys/unix"
)

// Build arguments that configure the frontend.
const (
	ArgTracer      = "BUILDTRACE_TRACER"      // host:port of buildtraced
	ArgUnmonitored = "BUILDTRACE_UNMONITORED" // "fail" or "allow"
	ArgWait        = "BUILDTRACE_WAIT"        // how long the tracer may wait for unfinished steps
	// ArgEvidenceFrom names images (comma-separated) whose runtime-trace
	// attestations the tracer may read for the signed runs of steps
	// BuildKit serves from a shared cache. The refs of registry cache
	// imports are always tried too.
	ArgEvidenceFrom = "BUILDTRACE_EVIDENCE_FROM"
)

// Unmonitored policies.
const (
	UnmonitoredFail  = "fail"
	UnmonitoredAllow = "allow"
)

// AttestationPath is the file holding the predicate in the attestation ref.
const AttestationPath = "/runtime-trace.json"

// DefaultWait is the default of BUILDTRACE_WAIT.
const DefaultWait = 60 * time.Second

// Settings is the frontend's configuration, from build args.
type Settings struct {
	Tracer       string
	Unmonitored  string
	Wait         time.Duration
	EvidenceFrom []string
	// Witness runs the witness step on each result whose chain has layers
	// above its last RUN (on unless BUILDTRACE_WITNESS=off).
	Witness bool
}

// ParseSettings reads the frontend's build args from the frontend options.
func ParseSettings(opts map[string]string) (Settings, error) {
	s := Settings{Tracer: tracerapi.DefaultAddr, Unmonitored: UnmonitoredFail, Wait: DefaultWait, Witness: true}
	switch v := opts["build-arg:"+ArgWitness]; v {
	case "", "on":
	case "off":
		s.Witness = false
	default:
		return s, fmt.Errorf("build arg %s=%q: want \"on\" or \"off\"", ArgWitness, v)
	}
	if v := opts["build-arg:"+ArgTracer]; v != "" {
		s.Tracer = v
	}
	switch v := opts["build-arg:"+ArgUnmonitored]; v {
	case "":
	case UnmonitoredFail, UnmonitoredAllow:
		s.Unmonitored = v
	default:
		return s, fmt.Errorf("build arg %s=%q: want %q or %q", ArgUnmonitored, v, UnmonitoredFail, UnmonitoredAllow)
	}
	for _, ref := range strings.Split(opts["build-arg:"+ArgEvidenceFrom], ",") {
		if ref = strings.TrimSpace(ref); ref != "" {
			s.EvidenceFrom = append(s.EvidenceFrom, ref)
		}
	}
	// A registry cache's exporter may have been the image itself (inline
	// cache) or may sit beside it; either way the tracer just tries.
	if v := opts["cache-imports"]; v != "" {
		var imports []struct {
			Type  string            `json:"Type"`
			Attrs map[string]string `json:"Attrs"`
		}
		if json.Unmarshal([]byte(v), &imports) == nil {
			for _, im := range imports {
				if ref := im.Attrs["ref"]; (im.Type == "registry" || im.Type == "") && ref != "" && !slices.Contains(s.EvidenceFrom, ref) {
					s.EvidenceFrom = append(s.EvidenceFrom, ref)
				}
			}
		}
	}
	if v := opts["build-arg:"+ArgWait]; v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return s, fmt.Errorf("build arg %s=%q: want a duration such as 60s", ArgWait, v)
		}
		s.Wait = d
	}
	return s, nil
}

// TraceIDFromTraceparent returns the trace ID of a W3C traceparent header
// value ("00-<trace id>-<span id>-<flags>").
func TraceIDFromTraceparent(tp string) (string, error) {
	parts := strings.Split(strings.TrimSpace(tp), "-")
	if len(parts) < 4 || len(parts[0]) != 2 || !tracerapi.ValidTraceID(parts[1]) {
		return "", fmt.Errorf("TRACEPARENT %q is not a W3C traceparent", tp)
	}
	return parts[1], nil
}

// Build is the frontend's gateway entry point.
func Build(ctx context.Context, c client.Client) (*client.Result, error) {
	start := time.Now()
	set, err := ParseSettings(c.BuildOpts().Opts)
	if err != nil {
		return nil, err
	}
	key, err := requestKey()
	if err != nil {
		return nil, err
	}
	defer key.Close()
	auth := tracerapi.NewAuth(key.bytes)
	tc := &tagClient{Client: c, allowUnmonitored: set.Unmonitored == UnmonitoredAllow, nonce: tracerapi.NonceRoot(key.bytes)}
	_, sub := c.BuildOpts().Opts["requestid"]
	traceID, tpErr := TraceIDFromTraceparent(os.Getenv("TRACEPARENT"))
	tracer := &tracerapi.Client{Addr: set.Tracer, HTTP: &http.Client{Timeout: 30 * time.Second}, Auth: auth}
	if !sub {
		// Fail before any step runs rather than after: unobserved steps
		// cannot be observed later. The check runs while the stock
		// frontend parses the Dockerfile and resolves images; the first
		// tagged solve waits for it.
		health := make(chan error, 1)
		go func() {
			var err error
			if tpErr != nil {
				err = fmt.Errorf("no build trace ID: %w", tpErr)
			} else if _, herr := tracer.Health(ctx); herr != nil {
				err = fmt.Errorf("%w: %w", tracerapi.ErrUnreachable, herr)
			}
			health <- err
		}()
		tc.ready = sync.OnceValue(func() error { return <-health })
		// Each solve's plan goes to the tracer before its steps run, so
		// the tracer signs what the build was going to do next to what it
		// did.
		tc.register = func(ctx context.Context, part trace.PlanPart) error {
			return tracer.PutPlan(ctx, traceID, part)
		}
	}
	res, err := builder.Build(ctx, tc)
	if err != nil {
		return nil, err
	}
	if res == nil || res.Ref == nil && len(res.Refs) == 0 {
		return res, nil // a subrequest answer (outline, lint, targets): nothing was built
	}
	if !sub && set.Witness && tc.unmonitoredReason() == nil {
		// The witness runs before the seal, so the tracer signs its run
		// with the build; the result itself is unchanged.
		results, err := resultParts(res, tc.solves())
		if err != nil {
			return nil, err
		}
		if err := tc.witness(ctx, res, results); err != nil {
			return nil, err
		}
	}
	finish := time.Now()

	var obs *observation
	if why := tc.unmonitoredReason(); why != nil {
		if obs, err = unmonitored(set, traceID, why); err != nil {
			return nil, err
		}
	} else {
		results, err := resultParts(res, tc.solves())
		if err != nil {
			return nil, err
		}
		if obs, err = observe(ctx, set, auth, traceID, results, tc.stepless()); err != nil {
			return nil, err
		}
	}
	if err := attach(ctx, c, set, auth, res, tc.solves(), obs, start, finish); err != nil {
		return nil, err
	}
	return res, nil
}

// observation is what the tracer said about this build.
type observation struct {
	traceID   string
	envelope  *dsse.Envelope // nil when unmonitored
	build     *trace.Build
	reason    string // why unmonitored
	monitored bool
}

// observe asks the tracer to seal this build's trace and sign it.
// stepless are the plan parts of solves that have no step, sent with it.
func observe(ctx context.Context, set Settings, auth *tracerapi.Auth, traceID string, results map[string]string, stepless []trace.PlanPart) (*observation, error) {
	tc := &tracerapi.Client{Addr: set.Tracer, HTTP: &http.Client{Timeout: set.Wait + 30*time.Second}, Auth: auth}
	env, err := tc.SealWith(ctx, traceID, tracerapi.SealRequest{Wait: set.Wait.String(), Results: results, EvidenceFrom: set.EvidenceFrom, Plan: stepless})
	if err != nil {
		return unmonitored(set, traceID, fmt.Errorf("%w: %w", tracerapi.ErrUnreachable, err))
	}
	b, err := attest.DecodeEnvelope(env)
	if err != nil {
		return unmonitored(set, traceID, fmt.Errorf("tracer at %s: %w", set.Tracer, err))
	}
	if b.BuildTraceID != traceID {
		return unmonitored(set, traceID, fmt.Errorf("tracer at %s answered with the trace of build %s, not %s", set.Tracer, b.BuildTraceID, traceID))
	}
	return &observation{traceID: traceID, envelope: env, build: b, monitored: true}, nil
}

// resultParts names, per platform of res, the plan part (solve) that
// produced its ref: the last solve that returned it.
func resultParts(res *client.Result, solves []solveRecord) (map[string]string, error) {
	ps, err := exptypes.ParsePlatforms(res.Metadata)
	if err != nil {
		return nil, fmt.Errorf("reading result platforms: %w", err)
	}
	out := map[string]string{}
	for _, p := range ps.Platforms {
		ref := res.Ref
		if len(res.Refs) > 0 {
			ref = res.Refs[p.ID]
		}
		for _, s := range solves {
			if s.partID != "" && slices.Contains(s.refs, ref) {
				out[p.ID] = s.partID
			}
		}
	}
	return out, nil
}

func unmonitored(set Settings, traceID string, cause error) (*observation, error) {
	if set.Unmonitored != UnmonitoredAllow {
		return nil, fmt.Errorf("buildtrace: build not monitored by the tracer at %s (set build arg %s=%s to build anyway): %w",
			set.Tracer, ArgUnmonitored, UnmonitoredAllow, cause)
	}
	return &observation{traceID: traceID, reason: cause.Error()}, nil
}

// attach adds one runtime-trace attestation per platform of res.
func attach(ctx context.Context, c client.Client, set Settings, auth *tracerapi.Auth, res *client.Result, solves []solveRecord, obs *observation, start, finish time.Time) error {
	ps, err := exptypes.ParsePlatforms(res.Metadata)
	if err != nil {
		return fmt.Errorf("reading result platforms: %w", err)
	}
	for _, p := range ps.Platforms {
		ref := res.Ref
		if len(res.Refs) > 0 {
			r, ok := res.Refs[p.ID]
			if !ok {
				return fmt.Errorf("result has no ref for platform %s", p.ID)
			}
			ref = r
		}
		pred, err := attest.Derive(attest.Input{
			Envelope:          obs.envelope,
			Build:             obs.build,
			Steps:             stepsOf(solves, ref),
			BuildStart:        start,
			BuildFinish:       finish,
			Platform:          p.ID,
			BuildTraceID:      obs.traceID,
			Monitored:         obs.monitored,
			UnmonitoredReason: obs.reason,
		})
		if err != nil {
			return fmt.Errorf("runtime trace of %s: %w", p.ID, err)
		}
		dt, err := json.Marshal(pred)
		if err != nil {
			return fmt.Errorf("runtime trace of %s: %w", p.ID, err)
		}
		if constAttestation != nil {
			dt = constAttestation
		}
		st, err := attestationState(ctx, set.Tracer, auth, p.ID, dt)
		if err != nil {
			return fmt.Errorf("runtime trace of %s: %w", p.ID, err)
		}
		def, err := st.Marshal(ctx)
		if err != nil {
			return fmt.Errorf("runtime trace of %s: %w", p.ID, err)
		}
		r, err := c.Solve(ctx, client.SolveRequest{Definition: def.ToPB()})
		if err != nil {
			return fmt.Errorf("runtime trace of %s: %w", p.ID, err)
		}
		res.AddAttestation(p.ID, client.Attestation{
			Kind:   gatewaypb.AttestationKind_InToto,
			Ref:    r.Ref,
			Path:   AttestationPath,
			InToto: result.InTotoAttestation{PredicateType: attest.PredicateType},
		})
	}
	return nil
}

// inlineMax is the largest attestation put inline into the LLB definition:
// the definition travels in one gRPC message, which BuildKit caps at 16 MiB.
const inlineMax = 4 << 20

// attestationState is a state holding the predicate at AttestationPath.
// A small one is written inline; a large one (a step that touched hundreds
// of thousands of files) is handed to the tracer and fetched by BuildKit's
// HTTP source, pinned to its digest.
func attestationState(ctx context.Context, tracer string, auth *tracerapi.Auth, platform string, dt []byte) (llb.State, error) {
	name := llb.WithCustomName("[buildtrace] runtime trace " + platform)
	if len(dt) <= inlineMax {
		return llb.Scratch().File(llb.Mkfile(AttestationPath, 0o644, dt), name), nil
	}
	tc := &tracerapi.Client{Addr: tracer, HTTP: &http.Client{Timeout: 2 * time.Minute}, Auth: auth}
	url, dgst, err := tc.PutBlob(ctx, dt)
	if err != nil {
		return llb.State{}, fmt.Errorf("handing the %d-byte attestation to the tracer: %w", len(dt), err)
	}
	return llb.HTTP(url, llb.Checksum(digest.Digest(dgst)), llb.Filename(strings.TrimPrefix(AttestationPath, "/")), llb.Chmod(0o644), name), nil
}

// stepsOf returns the steps of every solve that produced ref.
func stepsOf(solves []solveRecord, ref client.Reference) []attest.StepInfo {
	var out []attest.StepInfo
	for _, s := range solves {
		if ref == nil || !slices.Contains(s.refs, ref) {
			continue
		}
		for _, st := range s.steps {
			si := attest.StepInfo{
				StepID:      st.ID,
				OpDigest:    st.Digest.String(),
				Name:        st.Name,
				Instruction: st.Instruction,
				Stage:       st.Stage,
				Platform:    st.Platform,
			}
			for _, l := range st.Locations {
				si.Locations = append(si.Locations, attest.Location{File: l.Filename, StartLine: l.StartLine, EndLine: l.EndLine})
			}
			out = append(out, si)
		}
	}
	return out
}

// solveRecord is one tagged solve: its steps, its plan part and the refs
// it returned.
type solveRecord struct {
	steps  []llbtag.Step
	partID string
	refs   []client.Reference
	// part is the solve's plan part, once made.
	part *trace.PlanPart
	// stepless is the plan part of a solve with no step, sent with the
	// seal rather than before the solve.
	stepless *trace.PlanPart
}

// tagClient tags and evaluates every LLB solve of the stock builder.
type tagClient struct {
	client.Client

	// ready, when set, must return nil before the first tagged solve.
	ready func() error
	// register, when set, hands a solve's plan to the tracer before the
	// solve runs.
	register func(ctx context.Context, part trace.PlanPart) error

	allowUnmonitored bool
	// nonce marks this build's steps (NO_PROXY) for the tracer.
	nonce string

	mu      sync.Mutex
	records []solveRecord
	noTrace error // why the build cannot be traced (allow mode)
}

func (t *tagClient) unmonitoredReason() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.noTrace
}

func (t *tagClient) Solve(ctx context.Context, req client.SolveRequest) (*client.Result, error) {
	return t.solve(ctx, req, nil)
}

// solve tags and evaluates one solve; w marks the witness's (witness.go).
func (t *tagClient) solve(ctx context.Context, req client.SolveRequest, w *trace.Witness) (*client.Result, error) {
	if req.Definition == nil || len(req.Definition.Def) == 0 {
		return t.Client.Solve(ctx, req)
	}
	steps, err := llbtag.TagWithNonce(req.Definition, t.nonce)
	if err != nil {
		return nil, fmt.Errorf("buildtrace: tagging build steps: %w", err)
	}
	rec := solveRecord{steps: steps}
	if t.register != nil {
		if err := t.plan(ctx, req, steps, &rec, w); err != nil {
			return nil, err
		}
	}
	// Run the steps now, while the frontend waits, rather than lazily at
	// export: the trace is fetched after the last solve returns.
	req.Evaluate = true
	res, err := t.Client.Solve(ctx, req)
	if err != nil {
		return nil, err
	}
	_ = res.EachRef(func(r client.Reference) error {
		if r != nil {
			rec.refs = append(rec.refs, r)
		}
		return nil
	})
	t.mu.Lock()
	t.records = append(t.records, rec)
	t.mu.Unlock()
	return res, nil
}

// plan registers the solve's plan with the tracer. Without a tracer the
// build fails (the default) or, when allowed, goes on unmonitored.
func (t *tagClient) plan(ctx context.Context, req client.SolveRequest, steps []llbtag.Step, rec *solveRecord, w *trace.Witness) error {
	t.mu.Lock()
	skip := t.noTrace != nil
	t.mu.Unlock()
	if skip {
		return nil
	}
	err := t.ready()
	var part trace.PlanPart
	if err == nil {
		// No step nonce goes with it: the tracer derives them from this
		// frontend's request key, which never travels on the network.
		part, err = planPart(req, steps)
	}
	if err == nil && w != nil {
		err = markWitness(&part, *w)
	}
	if err == nil && len(part.Steps) == 0 {
		// Nothing of this solve runs in a container (it reads the
		// Dockerfile, say): its part goes with the seal, one request to
		// the tracer for all such parts rather than one per solve.
		rec.partID, rec.stepless, rec.part = part.ID, &part, &part
		return nil
	}
	if err == nil {
		err = t.register(ctx, part)
		if err != nil {
			err = fmt.Errorf("%w: registering the build plan: %w", tracerapi.ErrUnreachable, err)
		}
	}
	if err != nil {
		t.mu.Lock()
		t.noTrace = err
		t.mu.Unlock()
		if t.allowUnmonitored {
			return nil
		}
		return fmt.Errorf("buildtrace: build not monitored (set build arg %s=%s to build anyway): %w", ArgUnmonitored, UnmonitoredAllow, err)
	}
	rec.partID, rec.part = part.ID, &part
	return nil
}

// markWitness makes part the witness w: its top op must be the witness's
// run. The part is the result platform's, whatever platform the op runs
// the witness program on.
func markWitness(part *trace.PlanPart, w trace.Witness) error {
	n := len(part.Layers)
	if n == 0 || part.Layers[n-1].Kind != trace.LayerRun || part.Layers[n-1].StepID == "" {
		return fmt.Errorf("buildtrace: the witness's LLB does not end with a tagged run")
	}
	w.StepID = part.Layers[n-1].StepID
	part.Platform = w.Platform
	part.Witness = &w
	return nil
}

// key is this frontend's request key (tracerapi.Auth), in a sealed memfd
// the tracer reads from this process.
type key struct {
	bytes []byte
	file  *os.File
}

// requestKey makes a random key and puts it into a memfd named
// tracerapi.KeyMemfdName, sealed against any change, kept open for as long
// as the frontend runs.
func requestKey() (*key, error) {
	b := make([]byte, tracerapi.KeyLen)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("buildtrace: making the request key: %w", err)
	}
	fd, err := unix.MemfdCreate(tracerapi.KeyMemfdName, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("buildtrace: memfd for the request key: %w", err)
	}
	f := os.NewFile(uintptr(fd), tracerapi.KeyMemfdName)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, fmt.Errorf("buildtrace: writing the request key: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SEAL|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE); err != nil {
		f.Close()
		return nil, fmt.Errorf("buildtrace: sealing the request key: %w", err)
	}
	return &key{bytes: b, file: f}, nil
}

func (k *key) Close() error { return k.file.Close() }

// planPart describes a tagged solve for the tracer.
func planPart(req client.SolveRequest, steps []llbtag.Step) (trace.PlanPart, error) {
	ch, err := llbtag.ResultChain(req.Definition)
	if err != nil {
		return trace.PlanPart{}, fmt.Errorf("buildtrace: reading the build's layer chain: %w", err)
	}
	part := trace.PlanPart{ID: ch.Root.String(), Platform: ch.Platform, Base: ch.Base, Layers: ch.Layers, Steps: []trace.PlanStep{}}
	if part.Layers == nil {
		part.Layers = []trace.LayerOp{}
	}
	for _, st := range steps {
		ps := trace.PlanStep{StepID: st.ID, OpDigest: st.Digest.String(), Name: st.Name, Instruction: st.Instruction,
			Stage: st.Stage, Platform: st.Platform, Args: st.Args, SecretEnv: st.SecretEnv, SecretFiles: st.SecretFiles}
		for _, l := range st.Locations {
			ps.Locations = append(ps.Locations, trace.Location{File: l.Filename, StartLine: l.StartLine, EndLine: l.EndLine})
		}
		part.Steps = append(part.Steps, ps)
	}
	if part.Platform == "" {
		part.Platform = platforms.Format(platforms.Normalize(platforms.DefaultSpec()))
	}
	return part, nil
}

// stepless returns the plan parts of the solves that have no step.
func (t *tagClient) stepless() []trace.PlanPart {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []trace.PlanPart
	for _, r := range t.records {
		if r.stepless != nil {
			out = append(out, *r.stepless)
		}
	}
	return out
}

func (t *tagClient) solves() []solveRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.records)
}

var _ client.Client = (*tagClient)(nil)
