// Package verify checks an image platform's runtime-trace attestation: that
// the tracer signed what it says, that it belongs to this image, that the
// trace is complete, and that the build kept to a policy.
package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/policy"
	"github.com/buildtrace/buildtrace/pkg/sign"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Checks, as named in failures.
const (
	CheckAttestation  = "attestation"  // there is a readable runtime-trace statement
	CheckSignature    = "signature"    // the tracer's envelope verifies with the key
	CheckContent      = "content"      // the predicate is exactly what the signed trace yields
	CheckSubject      = "subject"      // the statement is about this manifest
	CheckBinding      = "binding"      // the image's RUN layers are the traced steps' diffs
	CheckCompleteness = "completeness" // nothing of the build went unobserved
	CheckCached       = "cached"       // no step was skipped as cached
	CheckPolicy       = "policy"
	CheckRequester    = "requester" // the trace was signed for the build's own frontend
)

// Target is one platform's image manifest and its runtime-trace statement.
type Target struct {
	Manifest  ocispec.Descriptor
	Platform  string
	Image     ocispec.Manifest
	Config    ocispec.Image
	Statement []byte // the in-toto Statement JSON; nil when absent
}

// Options say how to verify.
type Options struct {
	Verifier *sign.Verifier
	Policy   *policy.Checker // nil: the empty policy
	// OpenLayer streams a layer blob of the target's repository; the
	// stream must fail when the content does not match the descriptor.
	OpenLayer func(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error)
	// BaseLayers returns the layers of the base image the signed plan
	// names (pinned by digest), for one platform.
	BaseLayers func(ctx context.Context, ref, platform string) ([]ocispec.Descriptor, error)
	// BaseCache, when set, keeps what a base image's layers leave for the
	// layers above them (docs/cli.md), so a base is read once, not on
	// every verify. Its entries are trusted as the verifier's own files.
	BaseCache Cache
}

// Cache is a store of bytes by key.
type Cache interface {
	Get(key string) ([]byte, bool)
	Put(key string, data []byte)
}

// Failure is one thing that did not hold.
type Failure struct {
	Check       string   `json:"check"`
	Rule        string   `json:"rule,omitempty"` // policy rule
	StepID      string   `json:"stepID,omitempty"`
	Location    string   `json:"location,omitempty"` // Dockerfile:12-13
	Instruction string   `json:"instruction,omitempty"`
	PID         uint32   `json:"pid,omitempty"`
	Binary      string   `json:"binary,omitempty"`
	Argv        []string `json:"argv,omitempty"`
	Event       string   `json:"event"`
}

// Step is a step's outcome.
type Step struct {
	StepID      string `json:"stepID"`
	Location    string `json:"location,omitempty"`
	Instruction string `json:"instruction,omitempty"`
	Status      string `json:"status"`
	Failures    int    `json:"failures"`
}

// Layer bindings: what ties a layer of the image to the signed trace.
const (
	BindBase    = "base"    // a layer of the base image's manifest, by digest
	BindRun     = "run"     // the diff a traced run of the step produced
	BindLower   = "lower"   // a layer a later traced run ran on (COPY, cached RUN)
	BindPlan    = "plan"    // only its place in the signed plan: made by BuildKit after the last traced run, content not observed
	BindDirs    = "dirs"    // changes nothing the diff digest covers (directory times only, diff digest v3)
	BindCached  = "cached"  // a cached step's layer, not observed (cached.allow)
	BindUnbound = "unbound" // nothing signed accounts for it
)

// Witness outcomes (Result.Witness).
const (
	WitnessExecuted = "executed"         // a run of this build bound every layer
	WitnessUnproven = "cached, unproven" // no signed run in this build (none, or another build's as evidence): the layers above the last traced run keep their plan position (cached.allow)
)

// Layer is one layer of the image and what it was bound to.
type Layer struct {
	Digest     digest.Digest `json:"digest"`
	DiffDigest string        `json:"diffDigest,omitempty"`
	Binding    string        `json:"binding"`
	StepID     string        `json:"stepID,omitempty"`
	Op         string        `json:"op,omitempty"` // the plan's name of the op
}

// Result is the outcome for one platform.
type Result struct {
	Platform     string  `json:"platform"`
	Manifest     string  `json:"manifest"`
	BuildTraceID string  `json:"buildTraceID,omitempty"`
	KeyID        string  `json:"keyID,omitempty"`
	Frontend     string  `json:"frontend,omitempty"` // the requester's executable digest
	Steps        []Step  `json:"steps"`
	Layers       []Layer `json:"layers"`
	// Witness says how the signed plan's witness of the image's result
	// (trace.Witness) bound its layers; empty when the plan has none, or
	// it failed (a binding failure says why).
	Witness  string    `json:"witness,omitempty"`
	Failures []Failure `json:"failures"`
	// Build is the verified trace, set once the signature held.
	Build *trace.Build `json:"-"`
	// Predicate is what verify derived from the signed trace.
	Predicate *attest.Predicate `json:"-"`
}

// Pass reports whether every check held.
func (r *Result) Pass() bool { return len(r.Failures) == 0 }

func (r *Result) fail(f Failure) { r.Failures = append(r.Failures, f) }

// Location formats a step's first Dockerfile location.
func Location(s attest.Step) string {
	if len(s.Locations) == 0 {
		return ""
	}
	l := s.Locations[0]
	if l.EndLine > l.StartLine {
		return fmt.Sprintf("%s:%d-%d", l.File, l.StartLine, l.EndLine)
	}
	return fmt.Sprintf("%s:%d", l.File, l.StartLine)
}

func stepFailure(check string, s attest.Step, event string) Failure {
	return Failure{Check: check, StepID: s.StepID, Location: Location(s), Instruction: s.Instruction, Event: event}
}

// Verify checks one platform. Every verdict rests on the tracer's signed
// trace: the predicate's readable copy is only compared with it, and
// unknown fields in it are ignored. A failure to read a layer is reported
// as a binding failure, not an error: the result is always complete.
func Verify(ctx context.Context, t Target, opts Options) *Result {
	r := &Result{Platform: t.Platform, Manifest: t.Manifest.Digest.String(), Steps: []Step{}, Layers: []Layer{}, Failures: []Failure{}}
	checker := opts.Policy
	if checker == nil {
		checker, _ = policy.Compile(nil)
	}
	if t.Statement == nil {
		r.fail(Failure{Check: CheckAttestation, Event: "no runtime-trace attestation (" + attest.PredicateType + ") for this manifest"})
		return r
	}
	pred, err := attest.Parse(t.Statement)
	if err != nil {
		r.fail(Failure{Check: CheckAttestation, Event: err.Error()})
		return r
	}
	r.BuildTraceID = pred.MonitoredProcess.Event
	checkSubject(r, t)

	if !pred.Buildtrace.Monitored {
		r.fail(Failure{Check: CheckCompleteness, Event: "build was not monitored: " + pred.Buildtrace.UnmonitoredReason})
		for _, s := range pred.Buildtrace.Steps {
			r.Steps = append(r.Steps, Step{StepID: s.StepID, Location: Location(s), Instruction: s.Instruction, Status: s.Status})
		}
		return r
	}
	if opts.Verifier == nil {
		r.fail(Failure{Check: CheckSignature, Event: "no verification key given"})
		return r
	}
	r.KeyID = opts.Verifier.KeyID()
	payload, err := sign.Verify(ctx, opts.Verifier, pred.Buildtrace.Envelope, trace.PayloadType)
	if err != nil {
		r.fail(Failure{Check: CheckSignature, Event: err.Error()})
		return r
	}
	var b trace.Build
	if err := json.Unmarshal(payload, &b); err != nil {
		r.fail(Failure{Check: CheckSignature, Event: "signed payload is not a trace: " + err.Error()})
		return r
	}
	if b.Version != trace.Version {
		r.fail(Failure{Check: CheckSignature, Event: fmt.Sprintf("signed trace has version %q, want %q", b.Version, trace.Version)})
		return r
	}
	r.BuildTraceID = b.BuildTraceID
	r.Frontend = b.Requester.ExecutableDigest
	if b.Requester.Kind != trace.RequesterFrontend {
		r.fail(Failure{Check: CheckRequester, Event: fmt.Sprintf("the tracer signed this trace for %q, not for the build's own frontend", b.Requester.Kind)})
		return r
	}
	if !checker.AllowFrontend(b.Requester.ExecutableDigest) {
		r.fail(Failure{Check: CheckRequester, Rule: "frontend.digests", Event: fmt.Sprintf("the build's frontend (%s, %s) is not one the policy allows", b.Requester.Executable, b.Requester.ExecutableDigest)})
	}
	if !b.Sealed {
		r.fail(Failure{Check: CheckCompleteness, Event: fmt.Sprintf("the signed trace is not sealed: steps %v were still running when it was signed", b.Pending)})
	}
	part := attest.ResultPart(&b, t.Platform)
	if part == nil {
		r.fail(Failure{Check: CheckContent, Event: fmt.Sprintf("the signed trace of build %s names no plan for a %s image (an envelope of another build or platform)", b.BuildTraceID, t.Platform)})
		return r
	}
	want, err := attest.Derive(attest.Input{Envelope: pred.Buildtrace.Envelope, Build: &b, Platform: t.Platform, BuildTraceID: b.BuildTraceID, Monitored: true})
	if err != nil {
		r.fail(Failure{Check: CheckContent, Event: "deriving the predicate from the signed trace: " + err.Error()})
		return r
	}
	r.Build, r.Predicate = &b, want
	if err := compareReadable(pred, want); err != nil {
		r.fail(Failure{Check: CheckContent, Event: err.Error()})
	}

	runs := map[string][]*trace.Step{}
	for i := range b.Steps {
		s := &b.Steps[i]
		runs[s.StepID] = append(runs[s.StepID], s)
	}
	planned := map[string]trace.PlanStep{}
	for _, p := range b.Plan {
		for _, s := range p.Steps {
			planned[s.StepID] = s
		}
	}
	evidence := verifiedEvidence(ctx, r, opts.Verifier, checker, &b)
	listed := map[string]bool{}
	for _, s := range want.Buildtrace.Steps {
		listed[s.StepID] = true
		before := len(r.Failures)
		if s.Status == attest.StatusCached && len(evidence[s.StepID]) > 0 {
			// Cached, with the signed record of the run that made it:
			// checked exactly as a run of this build.
			for _, run := range evidence[s.StepID] {
				checkRun(r, checker, s, run, planned[s.StepID])
			}
			r.Steps = append(r.Steps, Step{StepID: s.StepID, Location: Location(s), Instruction: s.Instruction, Status: s.Status + " (evidence)", Failures: len(r.Failures) - before})
			continue
		}
		checkStep(r, checker, s, runs[s.StepID], planned[s.StepID])
		r.Steps = append(r.Steps, Step{StepID: s.StepID, Location: Location(s), Instruction: s.Instruction, Status: s.Status, Failures: len(r.Failures) - before})
	}
	// A witness (trace.Witness) runs the frontend's own program on the
	// finished result, with the command the signed plan gives; it is no
	// step of the Dockerfile, so the policy's rules for steps do not apply
	// to it. Completeness and its command do.
	for _, p := range b.Plan {
		if p.Witness == nil || listed[p.Witness.StepID] {
			continue
		}
		id := p.Witness.StepID
		listed[id] = true
		ps := planned[id]
		info := attest.Step{StepID: id, Instruction: ps.Name, Name: ps.Name, Platform: ps.Platform}
		rs, status := runs[id], attest.StatusExecuted
		if len(rs) == 0 && len(evidence[id]) > 0 {
			rs, status = evidence[id], attest.StatusCached+" (evidence)"
		}
		if len(rs) == 0 {
			continue // bind says what its absence leaves unbound
		}
		before := len(r.Failures)
		for _, run := range rs {
			checkWitnessRun(r, checker, info, run, ps)
		}
		r.Steps = append(r.Steps, Step{StepID: id, Instruction: ps.Name, Status: "witness " + status, Failures: len(r.Failures) - before})
	}
	// Every other run the tracer signed for this build — another solve's,
	// or a container under a step no plan names — is checked too.
	for i := range b.Steps {
		run := &b.Steps[i]
		if listed[run.StepID] {
			continue
		}
		ps, ok := planned[run.StepID]
		info := attest.Step{StepID: run.StepID, Status: attest.StatusExecuted, Instruction: ps.Instruction, Name: ps.Name, Stage: ps.Stage, Platform: ps.Platform}
		for _, l := range ps.Locations {
			info.Locations = append(info.Locations, attest.Location(l))
		}
		if !ok {
			r.fail(stepFailure(CheckContent, info, fmt.Sprintf("container %s ran under step %s, which no part of the signed plan names", run.ContainerID, run.StepID)))
		}
		checkRun(r, checker, info, run, ps)
	}
	bind(ctx, r, t, &b, part, runs, evidence, checker.AllowCached(), opts)
	return r
}

// PlannedStep returns the plan's entry for a step, from any part.
func PlannedStep(b *trace.Build, stepID string) (trace.PlanStep, bool) {
	for _, p := range b.Plan {
		for _, st := range p.Steps {
			if st.StepID == stepID {
				return st, true
			}
		}
	}
	return trace.PlanStep{}, false
}

// verifiedEvidence returns, by step, the earlier runs whose signed records
// the trace holds for cached steps, each checked with the verifier: a
// sealed trace signed for a build's frontend, holding that run. A record
// that does not verify is left out (its step is then unproven) and said.
func verifiedEvidence(ctx context.Context, r *Result, v *sign.Verifier, checker *policy.Checker, b *trace.Build) map[string][]*trace.Step {
	out := map[string][]*trace.Step{}
	envs := b.EvidenceEnvelopes()
	for _, e := range b.Evidence {
		payload, err := sign.Verify(ctx, v, envs[e.BuildTraceID], trace.PayloadType)
		if err != nil {
			r.fail(Failure{Check: CheckCached, StepID: e.StepID, Event: fmt.Sprintf("the evidence from build %s does not verify: %v", e.BuildTraceID, err)})
			continue
		}
		var eb trace.Build
		if err := json.Unmarshal(payload, &eb); err != nil || eb.Version != trace.Version || !eb.Sealed || eb.Requester.Kind != trace.RequesterFrontend || eb.BuildTraceID != e.BuildTraceID {
			r.fail(Failure{Check: CheckCached, StepID: e.StepID, Event: fmt.Sprintf("the evidence from build %s is not a sealed trace signed for that build's frontend", e.BuildTraceID)})
			continue
		}
		if !checker.AllowFrontend(eb.Requester.ExecutableDigest) {
			r.fail(Failure{Check: CheckRequester, Rule: "frontend.digests", StepID: e.StepID, Event: fmt.Sprintf("the evidence from build %s was asked for by a frontend (%s, %s) the policy does not allow", e.BuildTraceID, eb.Requester.Executable, eb.Requester.ExecutableDigest)})
			continue
		}
		ps, planned := PlannedStep(&eb, e.StepID)
		if !planned {
			r.fail(Failure{Check: CheckCached, StepID: e.StepID, Event: fmt.Sprintf("the evidence from build %s is a run of step %s, which that build did not plan", e.BuildTraceID, e.StepID)})
			continue
		}
		for i := range eb.Steps {
			run := &eb.Steps[i]
			if run.StepID != e.StepID || run.ContainerID != e.ContainerID {
				continue
			}
			if run.Attribution == trace.AttributionNone {
				r.fail(Failure{Check: CheckCached, StepID: e.StepID, Event: fmt.Sprintf("the evidence from build %s is a container the tracer could not attribute", e.BuildTraceID)})
				continue
			}
			if msg := CommandMismatch(run, ps); msg != "" {
				r.fail(Failure{Check: CheckCached, StepID: e.StepID, Event: fmt.Sprintf("the evidence from build %s: %s", e.BuildTraceID, msg)})
				continue
			}
			out[e.StepID] = append(out[e.StepID], run)
		}
	}
	return out
}

func checkStep(r *Result, c *policy.Checker, s attest.Step, runs []*trace.Step, ps trace.PlanStep) {
	switch s.Status {
	case attest.StatusUnknown:
		if !c.AllowIncomplete() {
			r.fail(stepFailure(CheckCompleteness, s, "step status unknown: "+s.Reason))
		}
	case attest.StatusCached:
		if !c.AllowCached() {
			r.fail(stepFailure(CheckCached, s, "step was cached: it did not run in this build, so what it did was not observed (allow with cached.allow)"))
		}
	}
	if len(runs) == 0 {
		for _, v := range c.Check(policy.Step{Info: s}) {
			r.fail(policyFailure(s, v))
		}
	}
	for _, run := range runs {
		checkRun(r, c, s, run, ps)
	}
}

// checkRun applies completeness, the plan's command and the policy to one
// signed run.
func checkRun(r *Result, c *policy.Checker, s attest.Step, run *trace.Step, ps trace.PlanStep) {
	checkWitnessRun(r, c, s, run, ps)
	for _, v := range c.Check(policy.Step{Info: s, Run: run}) {
		r.fail(policyFailure(s, v))
	}
}

// checkWitnessRun applies completeness and the plan's command to one
// signed run: what checkRun does, the policy aside.
func checkWitnessRun(r *Result, c *policy.Checker, s attest.Step, run *trace.Step, ps trace.PlanStep) {
	if !run.Completeness.Complete && !c.AllowIncomplete() {
		r.fail(stepFailure(CheckCompleteness, s, incompleteEvent(run)))
	}
	if run.Attribution == trace.AttributionNone {
		r.fail(stepFailure(CheckCompleteness, s, fmt.Sprintf("the tracer could not decide which build container %s of this step belonged to", run.ContainerID)))
	}
	if msg := CommandMismatch(run, ps); msg != "" {
		r.fail(stepFailure(CheckContent, s, msg))
	}
}

// CommandMismatch compares what the run's first process executed (the
// kernel's argv) with the op's argv in the signed plan, and, for the
// shell form, the plan's instruction text with that argv. It returns why
// they differ, or "".
func CommandMismatch(run *trace.Step, ps trace.PlanStep) string {
	if len(ps.Args) == 0 {
		return ""
	}
	var first *trace.Process
	for i := range run.Processes {
		p := &run.Processes[i]
		if !p.Exec || p.Adopted {
			continue
		}
		if first == nil || p.Start.Before(first.Start) || p.Start.Equal(first.Start) && p.PID < first.PID {
			first = p
		}
	}
	if first == nil {
		return ""
	}
	argv := first.Argv
	if len(first.Execs) > 0 { // the first image of the first process
		argv = first.Execs[0].Argv
		if first.Execs[0].ArgvTruncated {
			return ""
		}
	} else if first.ArgvTruncated {
		return ""
	}
	if !slices.Equal(argv, ps.Args) && !emulated(first.Binary, argv, ps.Args) {
		return fmt.Sprintf("the run's first process executed %q; the signed plan says the step runs %q", argv, ps.Args)
	}
	if n := len(ps.Args); n >= 3 && ps.Args[n-2] == "-c" && ps.Instruction != "" {
		if cmd, ok := plainRunCommand(ps.Instruction); ok && !expandsTo(strings.Join(strings.Fields(ps.Args[n-1]), " "), cmd) {
			return fmt.Sprintf("the instruction %q is not the command the run executed (%q)", ps.Instruction, ps.Args[n-1])
		}
	}
	return ""
}

// emulated reports whether argv is args run through a binfmt_misc
// emulator with the P flag (qemu-user for a foreign platform): the kernel
// passes the interpreter, the program's path, then the original argv.
func emulated(binary string, argv, args []string) bool {
	return strings.Contains(path.Base(binary), "qemu-") && len(argv) == len(args)+2 && slices.Equal(argv[2:], args)
}

// expandsTo reports whether the instruction's command can be the shell
// command ran with its variable references replaced: BuildKit names a RUN
// after expanding the build's ARG and ENV values in it (RUN GOPROXY=$GOPROXY
// go mod download becomes "RUN GOPROXY=http://… go mod download"), while the
// shell gets the command as written. Every character outside a reference
// must still be the instruction's.
func expandsTo(ran, instruction string) bool {
	if ran == instruction {
		return true
	}
	if !strings.Contains(ran, "$") {
		return false
	}
	var re strings.Builder
	re.WriteString(`^`)
	for i := 0; i < len(ran); {
		if n := varRefLen(ran[i:]); n > 0 {
			re.WriteString(`.*`)
			i += n
			continue
		}
		if ran[i] == ' ' {
			// Both sides have their blanks collapsed: an empty value
			// leaves one blank where the command has two.
			re.WriteString(` ?`)
		} else {
			re.WriteString(regexp.QuoteMeta(ran[i : i+1]))
		}
		i++
	}
	re.WriteString(`$`)
	ok, err := regexp.MatchString(re.String(), instruction)
	return err == nil && ok
}

// varRefLen is the length of the shell variable reference ($NAME or
// ${...}) at the start of s, or 0.
func varRefLen(s string) int {
	if len(s) < 2 || s[0] != '$' {
		return 0
	}
	if s[1] == '{' {
		if end := strings.IndexByte(s, '}'); end > 1 {
			return end + 1
		}
		return 0
	}
	n := 1
	for n < len(s) && (s[n] == '_' || s[n] >= 'a' && s[n] <= 'z' || s[n] >= 'A' && s[n] <= 'Z' || n > 1 && s[n] >= '0' && s[n] <= '9') {
		n++
	}
	if n == 1 {
		return 0
	}
	return n
}

// plainRunCommand returns the command of "RUN cmd" when nothing in it is
// rewritten before it runs (no flags, variables or heredocs).
func plainRunCommand(instruction string) (string, bool) {
	rest, ok := strings.CutPrefix(instruction, "RUN ")
	if !ok || strings.ContainsAny(rest, "$\\\n") || strings.HasPrefix(strings.TrimSpace(rest), "--") || strings.HasPrefix(strings.TrimSpace(rest), "[") || strings.Contains(rest, "<<") {
		return "", false
	}
	return strings.Join(strings.Fields(rest), " "), true
}

func incompleteEvent(run *trace.Step) string {
	c := run.Completeness
	var why []string
	if !c.FollowedFromStart {
		why = append(why, "not followed from its start")
	}
	if c.EventsDropped > 0 {
		why = append(why, fmt.Sprintf("%d events dropped", c.EventsDropped))
	}
	if c.EventsTruncated > 0 {
		why = append(why, fmt.Sprintf("%d events truncated", c.EventsTruncated))
	}
	for k, n := range c.Unobserved {
		why = append(why, fmt.Sprintf("%d unobserved %s", n, k))
	}
	slices.Sort(why)
	why = append(why, c.Reasons...)
	return fmt.Sprintf("trace of container %s is incomplete: %s", run.ContainerID, strings.Join(why, "; "))
}

func policyFailure(s attest.Step, v policy.Violation) Failure {
	f := stepFailure(CheckPolicy, s, v.Event)
	f.Rule, f.PID, f.Binary, f.Argv = v.Rule, v.PID, v.Binary, v.Argv
	return f
}

// statementSubject is the part of an in-toto Statement naming its subjects.
type statementSubject struct {
	Subject []struct {
		Name   string            `json:"name"`
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
}

func checkSubject(r *Result, t Target) {
	var st statementSubject
	if err := json.Unmarshal(t.Statement, &st); err != nil {
		r.fail(Failure{Check: CheckSubject, Event: "statement: " + err.Error()})
		return
	}
	want := t.Manifest.Digest
	var got []string
	for _, s := range st.Subject {
		for alg, hex := range s.Digest {
			d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
			if d == want {
				return
			}
			got = append(got, d.String())
		}
	}
	r.fail(Failure{Check: CheckSubject, Event: fmt.Sprintf("statement subject %v is not this image manifest %s", got, want)})
}

// compareReadable requires the predicate's readable copy — every field
// buildtrace defines, unknown ones ignored — to be what the signed trace
// yields, so nobody reading the attestation directly is misled.
func compareReadable(pred, want *attest.Predicate) error {
	got, err := json.Marshal(pred)
	if err != nil {
		return err
	}
	exp, err := json.Marshal(want)
	if err != nil {
		return err
	}
	a, err := canonical(got)
	if err != nil {
		return fmt.Errorf("statement predicate: %w", err)
	}
	w, err := canonical(exp)
	if err != nil {
		return err
	}
	if !bytes.Equal(a, w) {
		return fmt.Errorf("predicate differs from what the signed trace yields: %s", firstDifference(a, w))
	}
	return nil
}

// canonical re-encodes JSON with sorted keys and exact numbers.
func canonical(data []byte) ([]byte, error) {
	v, err := decodeExact(data)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

func decodeExact(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}

// firstDifference names the first JSON path where a and b (canonical)
// differ, for the failure message.
func firstDifference(a, b []byte) string {
	va, _ := decodeExact(a)
	vb, _ := decodeExact(b)
	if p, ok := diffPath("predicate", va, vb); ok {
		return p
	}
	return "encoding differs"
}

func diffPath(p string, a, b any) (string, bool) {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok {
			return p + " has a different type", true
		}
		keys := make([]string, 0, len(x)+len(y))
		for k := range x {
			keys = append(keys, k)
		}
		for k := range y {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range slices.Compact(keys) {
			xv, xok := x[k]
			yv, yok := y[k]
			switch {
			case !xok:
				return p + "." + k + " is missing", true
			case !yok:
				return p + "." + k + " is not in the signed trace", true
			}
			if d, ok := diffPath(p+"."+k, xv, yv); ok {
				return d, true
			}
		}
		return "", false
	case []any:
		y, ok := b.([]any)
		if !ok {
			return p + " has a different type", true
		}
		for i := 0; i < min(len(x), len(y)); i++ {
			if d, ok := diffPath(fmt.Sprintf("%s[%d]", p, i), x[i], y[i]); ok {
				return d, true
			}
		}
		if len(x) != len(y) {
			return fmt.Sprintf("%s has %d entries, the signed trace yields %d", p, len(x), len(y)), true
		}
		return "", false
	default:
		xa, _ := json.Marshal(a)
		yb, _ := json.Marshal(b)
		if !bytes.Equal(xa, yb) {
			return fmt.Sprintf("%s is %s, the signed trace yields %s", p, truncate(string(xa)), truncate(string(yb))), true
		}
		return "", false
	}
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}
