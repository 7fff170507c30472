package attest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

var (
	t0        = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	idRun     = strings.Repeat("a", 32)
	idCached  = strings.Repeat("b", 32)
	idPending = strings.Repeat("c", 32)
	idOther   = strings.Repeat("d", 32) // another platform's step
	traceID   = strings.Repeat("1", 32)
)

func envelope(t *testing.T, b *trace.Build) *dsse.Envelope {
	t.Helper()
	dt, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return &dsse.Envelope{
		PayloadType: trace.PayloadType,
		Payload:     base64.StdEncoding.EncodeToString(dt),
		Signatures:  []dsse.Signature{{KeyID: "k1", Sig: "c2ln"}},
	}
}

func sampleBuild(since time.Time) *trace.Build {
	exit := 0
	mk := func(id, container string, start time.Time) trace.Step {
		return trace.Step{
			StepID: id, ContainerID: container, Start: start, End: start.Add(time.Second),
			Processes: []trace.Process{
				{PID: 20, PPID: 10, Exec: true, Binary: "/bin/wget", Argv: []string{"wget", "http://127.0.0.1/x"}, Start: start.Add(2 * time.Millisecond)},
				{PID: 10, PPID: 1, Exec: true, Binary: "/bin/sh", Argv: []string{"/bin/sh", "-c", "wget ..."}, Start: start, ExitCode: &exit},
			},
			Files:   []trace.FileOp{{Op: trace.OpCreate, Path: "/x", PID: 20, Time: start}},
			Reads:   trace.Reads{Paths: []string{"/etc/passwd", "/bin/sh"}, Distinct: 2},
			Network: []trace.Destination{{Protocol: "tcp", IP: "127.0.0.1", Port: 80, Op: "connect", PIDs: []uint32{20}, Count: 1, First: start}},
			Diff: trace.Diff{Digest: "sha256:" + strings.Repeat("e", 64), Changes: []trace.FileChange{
				{Change: trace.ChangeCreated, Path: "/x", Type: "file", Size: 3, SHA256: strings.Repeat("f", 64)},
			}},
			Completeness: trace.Completeness{Complete: true, FollowedFromStart: true},
		}
	}
	return &trace.Build{
		Version:      trace.Version,
		BuildTraceID: traceID,
		Tracer:       trace.Tracer{Name: "buildtraced", Version: "v0.1.0", Host: "lab", Kernel: "6.18", Since: since},
		GeneratedAt:  t0.Add(time.Minute),
		Steps:        []trace.Step{mk(idOther, "c-other", t0.Add(3*time.Second)), mk(idRun, "c-run", t0.Add(2*time.Second))},
		Pending:      []string{idPending},
	}
}

func stepInfos() []StepInfo {
	return []StepInfo{
		{StepID: idPending, Instruction: "RUN sleep 100", Stage: "build", Platform: "linux/amd64"},
		{StepID: idCached, Instruction: "RUN echo cached", Platform: "linux/amd64"},
		{StepID: idRun, Instruction: "RUN wget", Stage: "build", Platform: "linux/amd64", OpDigest: "sha256:00",
			Locations: []Location{{File: "Dockerfile", StartLine: 3, EndLine: 4}}},
	}
}

func byID(p *Predicate) map[string]Step {
	m := map[string]Step{}
	for _, s := range p.Buildtrace.Steps {
		m[s.StepID] = s
	}
	return m
}

func TestDeriveMonitored(t *testing.T) {
	b := sampleBuild(t0.Add(-time.Hour))
	env := envelope(t, b)
	p, err := Derive(Input{Envelope: env, Steps: stepInfos(), BuildStart: t0, BuildFinish: t0.Add(time.Minute),
		Platform: "linux/amd64", BuildTraceID: traceID, Monitored: true})
	if err != nil {
		t.Fatal(err)
	}
	steps := byID(p)
	if len(steps) != 3 {
		t.Fatalf("got %d steps, want 3 (the other platform's step must not appear)", len(steps))
	}
	if s := steps[idRun]; s.Status != StatusExecuted || len(s.Runs) != 1 || s.Runs[0].ExitCode == nil || *s.Runs[0].ExitCode != 0 || s.Runs[0].DiffDigest == "" {
		t.Errorf("executed step = %+v", s)
	}
	if s := steps[idCached]; s.Status != StatusCached || len(s.Runs) != 0 {
		t.Errorf("cached step = %+v", s)
	}
	if s := steps[idPending]; s.Status != StatusUnknown {
		t.Errorf("pending step = %+v", s)
	}
	if p.Buildtrace.Complete {
		t.Error("build with a pending step reported complete")
	}
	if p.MonitoredProcess.Event != traceID || p.MonitoredProcess.Type != ProcessType || p.MonitoredProcess.HostID != "urn:buildtrace:host:lab" {
		t.Errorf("monitoredProcess = %+v", p.MonitoredProcess)
	}
	// Only the executed step's observations, none of the other platform's.
	for _, pr := range p.MonitorLog.Process {
		if pr.Step != idRun {
			t.Errorf("process of step %s in log", pr.Step)
		}
	}
	if len(p.MonitorLog.Process) != 2 || p.MonitorLog.Process[0].PID != 10 {
		t.Errorf("processes not sorted by start: %+v", p.MonitorLog.Process)
	}
	if len(p.MonitorLog.Network) != 1 || p.MonitorLog.Network[0].InvokingProcess.Binaries[0] != "/bin/wget" {
		t.Errorf("network = %+v", p.MonitorLog.Network)
	}
	var diff, reads, sys int
	for _, f := range p.MonitorLog.FileAccess {
		if f.Annotations.Step != idRun {
			t.Errorf("file access of step %s", f.Annotations.Step)
		}
		switch f.Annotations.Source {
		case SourceDiff:
			diff++
			if f.Digest["sha256"] != strings.Repeat("f", 64) {
				t.Errorf("diff entry digest = %v", f.Digest)
			}
		case SourceRead:
			reads++
		case SourceSyscall:
			sys++
		}
	}
	if diff != 1 || reads != 2 || sys != 1 {
		t.Errorf("file access counts diff=%d reads=%d syscall=%d", diff, reads, sys)
	}
	if p.Buildtrace.Envelope == nil || p.Buildtrace.Envelope.Payload != env.Payload || p.Buildtrace.Envelope.Signatures[0].Sig != "c2ln" {
		t.Error("envelope not carried verbatim")
	}

	// Deterministic whatever the input order.
	in2 := stepInfos()
	in2[0], in2[2] = in2[2], in2[0]
	b2 := sampleBuild(t0.Add(-time.Hour))
	b2.Steps[0], b2.Steps[1] = b2.Steps[1], b2.Steps[0]
	p2, err := Derive(Input{Envelope: env, Build: b2, Steps: in2, BuildStart: t0, BuildFinish: t0.Add(time.Minute),
		Platform: "linux/amd64", BuildTraceID: traceID, Monitored: true})
	if err != nil {
		t.Fatal(err)
	}
	j1, _ := Marshal(p)
	j2, _ := Marshal(p2)
	if !bytes.Equal(j1, j2) {
		t.Errorf("output depends on input order:\n%s\n%s", j1, j2)
	}

	// Round trip through Parse, bare and inside a Statement.
	q, err := Parse(j1)
	if err != nil {
		t.Fatal(err)
	}
	if j3, _ := Marshal(q); !bytes.Equal(j1, j3) {
		t.Errorf("Parse round trip changed the predicate")
	}
	stmt, _ := json.Marshal(map[string]any{"_type": "https://in-toto.io/Statement/v1", "predicateType": PredicateType, "predicate": json.RawMessage(j1)})
	if _, err := Parse(stmt); err != nil {
		t.Errorf("Parse(statement): %v", err)
	}
	stmt, _ = json.Marshal(map[string]any{"_type": "https://in-toto.io/Statement/v1", "predicateType": "https://example.com/other", "predicate": json.RawMessage(j1)})
	if _, err := Parse(stmt); err == nil {
		t.Error("Parse accepted another predicate type")
	}
}

func TestDeriveTracerStartedLate(t *testing.T) {
	b := sampleBuild(t0.Add(time.Second)) // tracer came up after the build began
	b.Pending = nil
	p, err := Derive(Input{Envelope: envelope(t, b), Steps: stepInfos()[1:], BuildStart: t0, BuildTraceID: traceID, Monitored: true})
	if err != nil {
		t.Fatal(err)
	}
	steps := byID(p)
	if steps[idCached].Status != StatusUnknown {
		t.Errorf("absent step with a late tracer = %q, want unknown", steps[idCached].Status)
	}
	if steps[idRun].Status != StatusExecuted || p.Buildtrace.Complete {
		t.Errorf("run=%q complete=%v", steps[idRun].Status, p.Buildtrace.Complete)
	}

	// All executed or cached and nothing lost: complete.
	b = sampleBuild(t0.Add(-time.Hour))
	b.Pending = nil
	p, err = Derive(Input{Envelope: envelope(t, b), Steps: stepInfos()[1:], BuildStart: t0, BuildTraceID: traceID, Monitored: true})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Buildtrace.Complete {
		t.Errorf("complete build reported incomplete: %v", p.Buildtrace.Reasons)
	}

	// A trace of another build is refused.
	if _, err := Derive(Input{Envelope: envelope(t, b), BuildStart: t0, BuildTraceID: strings.Repeat("2", 32), Monitored: true}); err == nil {
		t.Error("Derive accepted a trace of another build")
	}
}

func TestDeriveUnmonitored(t *testing.T) {
	p, err := Derive(Input{Steps: stepInfos(), BuildStart: t0, BuildTraceID: traceID, UnmonitoredReason: "tracer at 127.0.0.1:7390 unreachable"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Buildtrace.Monitored || p.Buildtrace.Complete || p.Buildtrace.Envelope != nil || !strings.Contains(p.Buildtrace.UnmonitoredReason, "unreachable") {
		t.Errorf("extension = %+v", p.Buildtrace)
	}
	for _, s := range p.Buildtrace.Steps {
		if s.Status != StatusUnknown {
			t.Errorf("unmonitored step %s has status %s", s.StepID, s.Status)
		}
	}
	dt, _ := Marshal(p)
	if _, err := Parse(dt); err != nil {
		t.Errorf("Parse(unmonitored): %v", err)
	}
	// Without a TRACEPARENT there is no ID, but the required event is set.
	p, err = Derive(Input{BuildStart: t0})
	if err != nil || p.MonitoredProcess.Event != "unknown" {
		t.Errorf("unmonitored without trace ID: %v, %v", p, err)
	}
	if _, err := Derive(Input{BuildStart: t0, Monitored: true}); err == nil {
		t.Error("Derive accepted a monitored build without envelope")
	}
}

func TestDecodeEnvelope(t *testing.T) {
	env := envelope(t, sampleBuild(t0))
	if b, err := DecodeEnvelope(env); err != nil || b.BuildTraceID != traceID {
		t.Fatalf("DecodeEnvelope = %v, %v", b, err)
	}
	env.PayloadType = "application/json"
	if _, err := DecodeEnvelope(env); err == nil {
		t.Error("DecodeEnvelope accepted a foreign payload type")
	}
}

func TestParseRefusesDuplicateKeys(t *testing.T) {
	doc := `{"predicateType":"` + PredicateType + `","predicate":{"monitor":{"type":"x"},"monitoredProcess":{"type":"y","event":"e"},` +
		`"buildtrace":{"version":"` + ExtensionVersion + `","steps":[{"stepID":"a","status":"cached","instruction":"RUN evil","instruction":"RUN honest"}]}}}`
	if _, err := Parse([]byte(doc)); err == nil || !strings.Contains(err.Error(), `"instruction" twice`) {
		t.Fatalf("Parse = %v, want a duplicate key error", err)
	}
	if _, err := Parse([]byte(strings.Replace(doc, `,"instruction":"RUN honest"`, `,"Instruction":"RUN honest"`, 1))); err == nil || !strings.Contains(err.Error(), "only in case") {
		t.Fatalf("Parse = %v, want a case-folded duplicate key error", err)
	}
	if _, err := Parse([]byte(strings.Replace(doc, `,"instruction":"RUN honest"`, "", 1))); err != nil {
		t.Fatalf("without the duplicate: %v", err)
	}
}

// TestDeriveMaterials: a run's signed materials become sorted
// ResourceDescriptors under steps[].runs[].materials, the same whatever
// order the trace lists them in.
func TestDeriveMaterials(t *testing.T) {
	mk := func(order []int) *Predicate {
		b := sampleBuild(t0.Add(-time.Hour))
		b.Results = nil
		all := []trace.Material{
			{Path: "/x", SHA256: "sha256:" + strings.Repeat("f", 64), Size: 3, PID: 20, Binary: "/bin/wget", Argv: []string{"wget", "http://127.0.0.1/x"},
				Endpoint: trace.MaterialEndpoint{Protocol: "tcp", IP: "127.0.0.1", Port: 80},
				URL:      &trace.MaterialURL{Scheme: "http", Host: "127.0.0.1", Port: 80, Path: "/x", Method: "GET"}},
			{Path: "/x", SHA256: "sha256:" + strings.Repeat("f", 64), Size: 3, PID: 20, Binary: "/bin/wget",
				Endpoint: trace.MaterialEndpoint{Protocol: "tcp", IP: "::1", Port: 8080, Hostname: "mirror.test"}},
			{Path: "/a", SHA256: strings.Repeat("1", 64), PID: 30, Binary: "/usr/bin/curl",
				Endpoint: trace.MaterialEndpoint{Protocol: "tcp", IP: "10.0.0.1", Port: 443}},
		}
		for i := range b.Steps {
			for _, j := range order {
				b.Steps[i].Materials = append(b.Steps[i].Materials, all[j])
			}
			b.Steps[i].MaterialsTruncated = true
		}
		p, err := Derive(Input{Envelope: envelope(t, b), Steps: stepInfos(), BuildStart: t0, Platform: "linux/amd64", BuildTraceID: traceID, Monitored: true})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := mk([]int{0, 1, 2})
	run := byID(p)[idRun].Runs[0]
	if !run.MaterialsTruncated || len(run.Materials) != 3 {
		t.Fatalf("run = %+v", run)
	}
	m := run.Materials
	if m[0].Name != "/a" || m[0].URI != "file:///a" || m[0].Digest["sha256"] != strings.Repeat("1", 64) || m[0].Annotations.Endpoint != "tcp://10.0.0.1:443" || m[0].Annotations.Method != "" {
		t.Errorf("materials[0] = %+v", m[0])
	}
	if m[1].Annotations.IP != "127.0.0.1" || m[1].URI != "http://127.0.0.1/x" || m[1].Annotations.Method != "GET" || m[1].Annotations.Host != "127.0.0.1" ||
		m[1].Annotations.URLPath != "/x" || m[1].Annotations.PID != 20 || m[1].Annotations.Binary != "/bin/wget" || m[1].Digest["sha256"] != strings.Repeat("f", 64) {
		t.Errorf("materials[1] = %+v", m[1])
	}
	if m[2].Annotations.Endpoint != "tcp://[::1]:8080" || m[2].Annotations.Hostname != "mirror.test" || m[2].URI != "file:///x" {
		t.Errorf("materials[2] = %+v", m[2])
	}
	a, _ := json.Marshal(m)
	b, _ := json.Marshal(byID(mk([]int{2, 1, 0}))[idRun].Runs[0].Materials)
	if !bytes.Equal(a, b) {
		t.Error("the materials depend on the order of the trace's")
	}
	a, _ = Marshal(p)
	// It survives Parse (as verify reads the readable copy).
	q, err := Parse(a)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := Marshal(q)
	if !bytes.Equal(a, c) {
		t.Error("materials do not round-trip through Parse")
	}
}
