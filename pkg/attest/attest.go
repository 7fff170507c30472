// Package attest turns a tracer's signed build trace into the predicate of
// an in-toto runtime-trace v0.2 attestation for one image platform. The
// standard fields (monitor, monitoredProcess, monitorLog, metadata) carry
// what any runtime-trace consumer understands; the "buildtrace" extension
// carries the per-step view and the tracer's DSSE envelope verbatim, so a
// verifier can check the observations against the tracer's key.
//
// The package does not verify signatures (the frontend must stay free of
// signing code); verification is the CLI's job.
package attest

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// PredicateType is the in-toto predicate type of the attestation.
const PredicateType = "https://in-toto.io/attestation/runtime-trace/v0.2"

// MonitorType is monitor.type: the buildtraced eBPF monitor.
const MonitorType = "https://buildtrace.dev/monitor/buildtraced"

// ProcessType is monitoredProcess.type: one BuildKit build.
const ProcessType = "https://buildtrace.dev/buildkit-build"

// ExtensionVersion names the schema of the "buildtrace" extension object.
const ExtensionVersion = "https://buildtrace.dev/attestation/v1"

// Step statuses.
const (
	StatusExecuted = "executed" // the tracer saw the step run in this build
	StatusCached   = "cached"   // the tracer was up for the whole build and the step did not run
	StatusUnknown  = "unknown"  // nothing can be said: tracer absent, started late, or step unfinished
)

// File access sources (annotation "source").
const (
	SourceSyscall = "syscall" // a file-changing system call
	SourceRead    = "read"    // a file opened read-only
	SourceDiff    = "diff"    // the step's net effect on the root file system
)

// Predicate is the runtime-trace v0.2 predicate with buildtrace's extension.
type Predicate struct {
	Monitor          Monitor          `json:"monitor"`
	MonitoredProcess MonitoredProcess `json:"monitoredProcess"`
	MonitorLog       MonitorLog       `json:"monitorLog"`
	Metadata         Metadata         `json:"metadata"`
	Buildtrace       Extension        `json:"buildtrace"`
}

// Monitor identifies the tracer instance.
type Monitor struct {
	Type    string `json:"type"`
	Name    string `json:"name,omitempty"`
	Version string `json:"version,omitempty"`
	Kernel  string `json:"kernel,omitempty"`
	// BPFObjects is the digest of the eBPF object the tracer loaded.
	BPFObjects string `json:"bpfObjects,omitempty"`
	// Since is when the tracer began following cgroups.
	Since *time.Time `json:"since,omitempty"`
}

// MonitoredProcess identifies the build.
type MonitoredProcess struct {
	HostID string `json:"hostID"`
	Type   string `json:"type"`
	Event  string `json:"event"` // the build trace ID
}

// MonitorLog is what was observed, across this platform's executed steps.
type MonitorLog struct {
	Process    []Process            `json:"process"`
	Network    []Network            `json:"network"`
	FileAccess []ResourceDescriptor `json:"fileAccess"`
}

// Process is a trace.Process with the step it ran in.
type Process struct {
	Step string `json:"step"`
	trace.Process
}

// Network is one remote endpoint in the v0.2 recommended shape, with the
// tracer's counters.
type Network struct {
	IP              string          `json:"ip"`
	Hostname        string          `json:"hostname,omitempty"`
	Port            uint16          `json:"port"`
	Protocol        string          `json:"protocol"`
	InvokingProcess InvokingProcess `json:"invokingProcess"`
	Op              string          `json:"op,omitempty"`
	Count           int             `json:"count"`
	BytesSent       uint64          `json:"bytesSent"`
	BytesReceived   uint64          `json:"bytesReceived"`
	First           time.Time       `json:"first"`
}

// InvokingProcess names the processes that reached an endpoint.
type InvokingProcess struct {
	Step     string   `json:"step"`
	PIDs     []uint32 `json:"pids"`
	Binaries []string `json:"binaries,omitempty"`
}

// ResourceDescriptor is the in-toto ResourceDescriptor subset used for file
// accesses: Name and URI are the path inside the container.
type ResourceDescriptor struct {
	Name        string            `json:"name"`
	URI         string            `json:"uri,omitempty"`
	Digest      map[string]string `json:"digest,omitempty"`
	Annotations FileAnnotations   `json:"annotations"`
}

// FileAnnotations say what happened to a file and in which step.
type FileAnnotations struct {
	Operation string `json:"operation"` // trace.Op* for syscalls, "read", trace.Change* for diffs
	Source    string `json:"source"`    // syscall, read, diff
	Step      string `json:"step"`
	Target    string `json:"target,omitempty"`
	Type      string `json:"type,omitempty"` // diff: file, dir, symlink...
	PID       uint32 `json:"pid,omitempty"`
}

// Metadata holds the build's time span as the frontend saw it.
type Metadata struct {
	BuildStartedOn  time.Time  `json:"buildStartedOn"`
	BuildFinishedOn *time.Time `json:"buildFinishedOn,omitempty"`
}

// Extension is buildtrace's own view, under the "buildtrace" key.
type Extension struct {
	Version      string `json:"version"`
	BuildTraceID string `json:"buildTraceID"`
	Platform     string `json:"platform,omitempty"`
	// Monitored is false when no tracer answered; then every step is
	// unknown and the log is empty.
	Monitored         bool   `json:"monitored"`
	UnmonitoredReason string `json:"unmonitoredReason,omitempty"`
	// Complete is true when every step is executed or cached and the
	// tracer lost nothing of any executed step.
	Complete bool     `json:"complete"`
	Reasons  []string `json:"reasons,omitempty"`
	Steps    []Step   `json:"steps"`
	// Envelope is the tracer's signed trace.Build, exactly as served.
	Envelope *dsse.Envelope `json:"envelope,omitempty"`
}

// Step is one RUN of the Dockerfile for this platform.
type Step struct {
	StepID      string     `json:"stepID"`
	Status      string     `json:"status"`
	Reason      string     `json:"reason,omitempty"`
	Instruction string     `json:"instruction,omitempty"`
	Name        string     `json:"name,omitempty"`
	Stage       string     `json:"stage,omitempty"`
	Platform    string     `json:"platform,omitempty"`
	OpDigest    string     `json:"opDigest,omitempty"`
	Locations   []Location `json:"locations,omitempty"`
	Runs        []Run      `json:"runs,omitempty"` // executed only
	// Evidence, for a cached step, names the earlier runs of the step
	// whose signed records the trace holds (buildtrace's envelope →
	// evidence[]); empty when the cached step is unproven.
	Evidence []EvidenceRun `json:"evidence,omitempty"`
	// Proof says how a cached step is proven: "evidence" or "unproven".
	Proof string `json:"proof,omitempty"`
}

// Cached-step proofs.
const (
	ProofEvidence = "evidence" // the signed record of an earlier run is in the trace
	ProofUnproven = "unproven" // nothing found: the step's run was not observed
)

// EvidenceRun is an earlier run of a cached step, from the signed record
// of the build that ran it. Its observations are not in monitorLog, which
// holds only what this build did.
type EvidenceRun struct {
	BuildTraceID string    `json:"buildTraceID"`
	ContainerID  string    `json:"containerID"`
	Start        time.Time `json:"start"`
	End          time.Time `json:"end"`
	DiffDigest   string    `json:"diffDigest,omitempty"`
	Complete     bool      `json:"complete"`
}

// Location is a line range of a source file.
type Location struct {
	File      string `json:"file"`
	StartLine int    `json:"startLine"`
	EndLine   int    `json:"endLine"`
}

// Run is one container of an executed step.
type Run struct {
	ContainerID  string             `json:"containerID"`
	Start        time.Time          `json:"start"`
	End          time.Time          `json:"end"`
	Resources    trace.Resources    `json:"resources"`
	Completeness trace.Completeness `json:"completeness"`
	DiffDigest   string             `json:"diffDigest,omitempty"`
	DiffError    string             `json:"diffError,omitempty"`
	ExitCode     *int               `json:"exitCode,omitempty"` // of the step's first process
	// Materials are the files the run downloaded (trace.Step.Materials):
	// files of its diff that a process wrote after it had received data
	// from a remote endpoint. Sorted by name, pid, endpoint.
	Materials []Material `json:"materials,omitempty"`
	// MaterialsTruncated: the trace capped the run's materials.
	MaterialsTruncated bool `json:"materialsTruncated,omitempty"`
}

// Material is a downloaded file as an in-toto ResourceDescriptor: Name is
// its path in the image, URI the URL the writer's argv names for the
// endpoint when there is one, else file://<path>.
type Material struct {
	Name        string              `json:"name"`
	URI         string              `json:"uri,omitempty"`
	Digest      map[string]string   `json:"digest,omitempty"`
	Annotations MaterialAnnotations `json:"annotations"`
}

// MaterialAnnotations say where a material came from and which process
// wrote it. Method, Host and URLPath are from the writer's argv (see
// trace.MaterialURL), never from the traffic.
type MaterialAnnotations struct {
	Endpoint      string   `json:"endpoint"` // "tcp://127.0.0.1:5000"
	Protocol      string   `json:"protocol"`
	IP            string   `json:"ip"`
	Port          uint16   `json:"port"`
	Hostname      string   `json:"hostname,omitempty"`
	PID           uint32   `json:"pid"`
	Binary        string   `json:"binary,omitempty"`
	Argv          []string `json:"argv,omitempty"`
	ArgvTruncated bool     `json:"argvTruncated,omitempty"`
	Size          int64    `json:"size,omitempty"`
	Method        string   `json:"method,omitempty"`
	Host          string   `json:"host,omitempty"`
	URLPath       string   `json:"urlPath,omitempty"`
}

// StepInfo is what the frontend knows of a step from the LLB.
type StepInfo struct {
	StepID      string
	OpDigest    string
	Name        string
	Instruction string
	Stage       string
	Platform    string
	Locations   []Location
}

// Input is everything Derive needs.
type Input struct {
	Envelope *dsse.Envelope // nil when unmonitored
	// Build is the Envelope's payload, decoded but not verified; when nil
	// and Envelope is set, Derive decodes it.
	Build       *trace.Build
	Steps       []StepInfo
	BuildStart  time.Time // when the frontend started
	BuildFinish time.Time // optional: when the build's solves returned
	Platform    string
	// BuildTraceID is the build's trace ID from TRACEPARENT; when
	// monitored it must match Build's, if set.
	BuildTraceID      string
	Monitored         bool
	UnmonitoredReason string
}

// DecodeEnvelope decodes a tracer envelope's payload without verifying
// its signatures.
func DecodeEnvelope(env *dsse.Envelope) (*trace.Build, error) {
	if env == nil {
		return nil, errors.New("no trace envelope")
	}
	if env.PayloadType != trace.PayloadType {
		return nil, fmt.Errorf("trace envelope has payload type %q, want %q", env.PayloadType, trace.PayloadType)
	}
	dt, err := env.DecodeB64Payload()
	if err != nil {
		return nil, fmt.Errorf("decoding trace envelope payload: %w", err)
	}
	var b trace.Build
	if err := json.Unmarshal(dt, &b); err != nil {
		return nil, fmt.Errorf("decoding trace payload: %w", err)
	}
	if b.Version != trace.Version {
		return nil, fmt.Errorf("trace payload has version %q, want %q", b.Version, trace.Version)
	}
	return &b, nil
}

// Derive builds the predicate for one platform. Output is deterministic:
// every list is sorted.
func Derive(in Input) (*Predicate, error) {
	p := &Predicate{
		Monitor:          Monitor{Type: MonitorType},
		MonitoredProcess: MonitoredProcess{Type: ProcessType, HostID: hostID("")},
		MonitorLog:       MonitorLog{Process: []Process{}, Network: []Network{}, FileAccess: []ResourceDescriptor{}},
		Metadata:         Metadata{BuildStartedOn: in.BuildStart.UTC()},
		Buildtrace: Extension{
			Version:   ExtensionVersion,
			Platform:  in.Platform,
			Monitored: in.Monitored,
			Steps:     []Step{},
		},
	}
	if !in.BuildFinish.IsZero() {
		t := in.BuildFinish.UTC()
		p.Metadata.BuildFinishedOn = &t
	}

	b := in.Build
	if in.Monitored {
		if in.Envelope == nil {
			return nil, errors.New("monitored build without a trace envelope")
		}
		if b == nil {
			var err error
			if b, err = DecodeEnvelope(in.Envelope); err != nil {
				return nil, err
			}
		}
		if in.BuildTraceID != "" && b.BuildTraceID != in.BuildTraceID {
			return nil, fmt.Errorf("trace is of build %s, want %s", b.BuildTraceID, in.BuildTraceID)
		}
		env := *in.Envelope
		env.Signatures = slices.Clone(env.Signatures)
		p.Buildtrace.Envelope = &env
		p.Buildtrace.BuildTraceID = b.BuildTraceID
		since := b.Tracer.Since.UTC()
		p.Monitor.Name = b.Tracer.Name
		p.Monitor.Version = b.Tracer.Version
		p.Monitor.Kernel = b.Tracer.Kernel
		p.Monitor.BPFObjects = b.Tracer.BPFObjects
		p.Monitor.Since = &since
		p.MonitoredProcess.HostID = hostID(b.Tracer.Host)
	} else {
		p.Buildtrace.BuildTraceID = in.BuildTraceID
		p.Buildtrace.UnmonitoredReason = in.UnmonitoredReason
		if p.Buildtrace.UnmonitoredReason == "" {
			p.Buildtrace.UnmonitoredReason = "no tracer"
		}
		p.Buildtrace.Reasons = append(p.Buildtrace.Reasons, "build was not monitored: "+p.Buildtrace.UnmonitoredReason)
	}
	p.MonitoredProcess.Event = p.Buildtrace.BuildTraceID
	if p.MonitoredProcess.Event == "" {
		p.MonitoredProcess.Event = "unknown" // no TRACEPARENT: required field, no ID to give
	}

	runs := map[string][]trace.Step{}
	pending := map[string]bool{}
	if b != nil {
		for _, s := range b.Steps {
			runs[s.StepID] = append(runs[s.StepID], s)
		}
		for _, id := range b.Pending {
			pending[id] = true
		}
	}

	infos := slices.Clone(in.Steps)
	buildStart := in.BuildStart
	if part := ResultPart(b, in.Platform); in.Monitored && part != nil {
		// Everything about the steps comes from the signed plan; the
		// caller's own step list is not used.
		infos = infos[:0]
		for _, ps := range part.Steps {
			si := StepInfo{StepID: ps.StepID, OpDigest: ps.OpDigest, Name: ps.Name, Instruction: ps.Instruction, Stage: ps.Stage, Platform: ps.Platform}
			for _, l := range ps.Locations {
				si.Locations = append(si.Locations, Location(l))
			}
			infos = append(infos, si)
		}
		buildStart = PlanStart(b)
		p.Metadata.BuildStartedOn = buildStart
		fin := b.GeneratedAt.UTC()
		p.Metadata.BuildFinishedOn = &fin
	}
	slices.SortFunc(infos, func(a, b StepInfo) int { return strings.Compare(a.StepID, b.StepID) })
	infos = slices.CompactFunc(infos, func(a, b StepInfo) bool { return a.StepID == b.StepID })

	complete := in.Monitored
	for _, si := range infos {
		st := Step{
			StepID:      si.StepID,
			Instruction: si.Instruction,
			Name:        si.Name,
			Stage:       si.Stage,
			Platform:    si.Platform,
			OpDigest:    si.OpDigest,
			Locations:   slices.Clone(si.Locations),
		}
		switch {
		case !in.Monitored:
			st.Status = StatusUnknown
			st.Reason = "build was not monitored"
		case pending[si.StepID]:
			st.Status = StatusUnknown
			st.Reason = "step had not finished when the trace was fetched"
		case len(runs[si.StepID]) > 0:
			st.Status = StatusExecuted
			steps := runs[si.StepID]
			slices.SortFunc(steps, func(a, b trace.Step) int {
				return cmp.Or(a.Start.Compare(b.Start), strings.Compare(a.ContainerID, b.ContainerID))
			})
			for _, ts := range steps {
				st.Runs = append(st.Runs, newRun(ts))
				addLog(&p.MonitorLog, ts)
				if !ts.Completeness.Complete {
					complete = false
					p.Buildtrace.Reasons = append(p.Buildtrace.Reasons, fmt.Sprintf("step %s: trace incomplete: %s", si.StepID, strings.Join(ts.Completeness.Reasons, "; ")))
				}
			}
		case !b.Tracer.Since.IsZero() && b.Tracer.Since.Before(buildStart):
			st.Status = StatusCached
			st.Evidence = EvidenceRuns(b, si.StepID)
			st.Proof = ProofUnproven
			if len(st.Evidence) > 0 {
				st.Proof = ProofEvidence
			}
		default:
			st.Status = StatusUnknown
			st.Reason = "tracer started after the build began"
		}
		if st.Status == StatusUnknown && in.Monitored {
			complete = false
			p.Buildtrace.Reasons = append(p.Buildtrace.Reasons, fmt.Sprintf("step %s: %s", si.StepID, st.Reason))
		}
		p.Buildtrace.Steps = append(p.Buildtrace.Steps, st)
	}
	p.Buildtrace.Complete = complete
	sortLog(&p.MonitorLog)
	return p, nil
}

// ResultPart returns the signed plan part that produced platform's image,
// or nil.
func ResultPart(b *trace.Build, platform string) *trace.PlanPart {
	if b == nil {
		return nil
	}
	id, ok := b.Results[platform]
	if !ok {
		return nil
	}
	for i := range b.Plan {
		if b.Plan[i].ID == id && b.Plan[i].Platform == platform {
			return &b.Plan[i]
		}
	}
	return nil
}

// EvidenceRuns summarises the evidence the trace holds for a step, as its
// (unverified) envelopes say. A verifier checks each envelope itself.
func EvidenceRuns(b *trace.Build, stepID string) []EvidenceRun {
	var out []EvidenceRun
	envs := b.EvidenceEnvelopes()
	for _, e := range b.Evidence {
		if e.StepID != stepID {
			continue
		}
		eb, err := DecodeEnvelope(envs[e.BuildTraceID])
		if err != nil {
			continue
		}
		for _, r := range eb.Steps {
			if r.StepID == stepID && r.ContainerID == e.ContainerID {
				out = append(out, EvidenceRun{BuildTraceID: eb.BuildTraceID, ContainerID: r.ContainerID, Start: r.Start.UTC(), End: r.End.UTC(),
					DiffDigest: r.Diff.Digest, Complete: r.Completeness.Complete})
			}
		}
	}
	return out
}

// PlanStart is when the tracer received the build's first plan part: the
// signed start of the build. A step absent from the trace is cached only
// if the tracer was following cgroups before then.
func PlanStart(b *trace.Build) time.Time {
	return trace.FirstReceived(b.Plan).UTC()
}

func hostID(host string) string {
	if host == "" {
		host = "unknown"
	}
	return "urn:buildtrace:host:" + host
}

func newRun(s trace.Step) Run {
	r := Run{
		ContainerID:  s.ContainerID,
		Start:        s.Start.UTC(),
		End:          s.End.UTC(),
		Resources:    s.Resources,
		Completeness: s.Completeness,
		DiffDigest:   s.Diff.Digest,
		DiffError:    s.Diff.Error,
	}
	// The first process (the container's init) carries the step's exit code.
	var first *trace.Process
	for i := range s.Processes {
		pr := &s.Processes[i]
		if first == nil || pr.Start.Before(first.Start) || pr.Start.Equal(first.Start) && pr.PID < first.PID {
			first = pr
		}
	}
	if first != nil && first.ExitCode != nil {
		c := *first.ExitCode
		r.ExitCode = &c
	}
	r.Materials = materials(s.Materials)
	r.MaterialsTruncated = s.MaterialsTruncated
	return r
}

// materials turns a run's signed materials into ResourceDescriptors,
// sorted.
func materials(ms []trace.Material) []Material {
	var out []Material
	for _, m := range ms {
		e := m.Endpoint
		d := Material{
			Name: m.Path, URI: fileURI(m.Path),
			Annotations: MaterialAnnotations{
				Endpoint: e.Protocol + "://" + hostPort(e.IP, e.Port), Protocol: e.Protocol, IP: e.IP, Port: e.Port, Hostname: e.Hostname,
				PID: m.PID, Binary: m.Binary, Argv: slices.Clone(m.Argv), ArgvTruncated: m.ArgvTruncated, Size: m.Size,
			},
		}
		if m.SHA256 != "" {
			d.Digest = map[string]string{"sha256": strings.TrimPrefix(m.SHA256, "sha256:")}
		}
		if u := m.URL; u != nil {
			d.URI = u.String()
			d.Annotations.Method, d.Annotations.Host, d.Annotations.URLPath = u.Method, u.Host, u.Path
		}
		out = append(out, d)
	}
	slices.SortStableFunc(out, func(a, b Material) int {
		x, y := a.Annotations, b.Annotations
		return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(x.PID, y.PID), strings.Compare(x.Protocol, y.Protocol),
			strings.Compare(x.IP, y.IP), cmp.Compare(x.Port, y.Port), strings.Compare(a.URI, b.URI))
	})
	return out
}

// hostPort is "ip:port", "[ip]:port" for IPv6.
func hostPort(ip string, port uint16) string {
	if strings.Contains(ip, ":") {
		return fmt.Sprintf("[%s]:%d", ip, port)
	}
	return fmt.Sprintf("%s:%d", ip, port)
}

func addLog(l *MonitorLog, s trace.Step) {
	bin := map[uint32]string{}
	for _, pr := range s.Processes {
		l.Process = append(l.Process, Process{Step: s.StepID, Process: pr})
		bin[pr.PID] = pr.Binary
	}
	for _, d := range s.Network {
		ip := InvokingProcess{Step: s.StepID, PIDs: slices.Clone(d.PIDs)}
		slices.Sort(ip.PIDs)
		for _, pid := range ip.PIDs {
			if b := bin[pid]; b != "" {
				ip.Binaries = append(ip.Binaries, b)
			}
		}
		slices.Sort(ip.Binaries)
		ip.Binaries = slices.Compact(ip.Binaries)
		l.Network = append(l.Network, Network{
			IP: d.IP, Hostname: d.Hostname, Port: d.Port, Protocol: d.Protocol,
			InvokingProcess: ip, Op: d.Op, Count: d.Count,
			BytesSent: d.BytesSent, BytesReceived: d.BytesReceived, First: d.First.UTC(),
		})
	}
	for _, f := range s.Files {
		l.FileAccess = append(l.FileAccess, ResourceDescriptor{
			Name: f.Path, URI: fileURI(f.Path),
			Annotations: FileAnnotations{Operation: f.Op, Source: SourceSyscall, Step: s.StepID, Target: f.Target, PID: f.PID},
		})
	}
	for _, path := range s.Reads.Paths {
		l.FileAccess = append(l.FileAccess, ResourceDescriptor{
			Name: path, URI: fileURI(path),
			Annotations: FileAnnotations{Operation: "read", Source: SourceRead, Step: s.StepID},
		})
	}
	for _, c := range s.Diff.Changes {
		rd := ResourceDescriptor{
			Name: c.Path, URI: fileURI(c.Path),
			Annotations: FileAnnotations{Operation: c.Change, Source: SourceDiff, Step: s.StepID, Target: c.LinkTarget, Type: c.Type},
		}
		if c.SHA256 != "" {
			rd.Digest = map[string]string{"sha256": strings.TrimPrefix(c.SHA256, "sha256:")}
		}
		l.FileAccess = append(l.FileAccess, rd)
	}
}

func fileURI(path string) string {
	if !strings.HasPrefix(path, "/") {
		return ""
	}
	return "file://" + path
}

func sortLog(l *MonitorLog) {
	slices.SortStableFunc(l.Process, func(a, b Process) int {
		return cmp.Or(strings.Compare(a.Step, b.Step), a.Start.Compare(b.Start), cmp.Compare(a.PID, b.PID))
	})
	slices.SortStableFunc(l.Network, func(a, b Network) int {
		return cmp.Or(strings.Compare(a.InvokingProcess.Step, b.InvokingProcess.Step),
			strings.Compare(a.Protocol, b.Protocol), strings.Compare(a.IP, b.IP), cmp.Compare(a.Port, b.Port),
			strings.Compare(a.Hostname, b.Hostname))
	})
	slices.SortStableFunc(l.FileAccess, func(a, b ResourceDescriptor) int {
		return cmp.Or(strings.Compare(a.Annotations.Step, b.Annotations.Step),
			strings.Compare(a.Annotations.Source, b.Annotations.Source),
			strings.Compare(a.Name, b.Name), strings.Compare(a.Annotations.Operation, b.Annotations.Operation),
			cmp.Compare(a.Annotations.PID, b.Annotations.PID), strings.Compare(a.Annotations.Target, b.Annotations.Target))
	})
}

// Marshal encodes a predicate as indented JSON.
func Marshal(p *Predicate) ([]byte, error) {
	return json.MarshalIndent(p, "", "  ")
}

// statement is the part of an in-toto Statement Parse looks at.
type statement struct {
	Type          string          `json:"_type"`
	PredicateType string          `json:"predicateType"`
	Predicate     json.RawMessage `json:"predicate"`
}

// Parse decodes a predicate, or an in-toto Statement holding one (as
// BuildKit stores attestations).
func Parse(data []byte) (*Predicate, error) {
	if err := noDuplicateKeys(data); err != nil {
		return nil, fmt.Errorf("runtime trace: %w", err)
	}
	var st statement
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("decoding runtime trace: %w", err)
	}
	if st.PredicateType != "" || st.Type != "" {
		if st.PredicateType != PredicateType {
			return nil, fmt.Errorf("attestation has predicate type %q, want %q", st.PredicateType, PredicateType)
		}
		data = st.Predicate
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var p Predicate
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("decoding runtime trace predicate: %w", err)
	}
	if p.Monitor.Type == "" || p.MonitoredProcess.Type == "" || p.MonitoredProcess.Event == "" {
		return nil, errors.New("runtime trace predicate lacks monitor.type, monitoredProcess.type or monitoredProcess.event")
	}
	if p.Buildtrace.Version != ExtensionVersion {
		return nil, fmt.Errorf("runtime trace predicate has buildtrace extension version %q, want %q", p.Buildtrace.Version, ExtensionVersion)
	}
	for _, s := range p.Buildtrace.Steps {
		switch s.Status {
		case StatusExecuted, StatusCached, StatusUnknown:
		default:
			return nil, fmt.Errorf("step %s has unknown status %q", s.StepID, s.Status)
		}
	}
	if p.Buildtrace.Monitored && p.Buildtrace.Envelope == nil {
		return nil, errors.New("runtime trace predicate says monitored but holds no trace envelope")
	}
	return &p, nil
}
