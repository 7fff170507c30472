package policy

import (
	"errors"
	"fmt"

	"cel.dev/cel-go/cel"
	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/trace"
)

type celProgram struct {
	rule CELRule
	prg  cel.Program
}

func celEnv() (*cel.Env, error) {
	return cel.NewEnv(cel.Variable("step", cel.MapType(cel.StringType, cel.DynType)))
}

func compileCEL(rules []CELRule) ([]celProgram, error) {
	if len(rules) == 0 {
		return nil, nil
	}
	env, err := celEnv()
	if err != nil {
		return nil, fmt.Errorf("cel environment: %w", err)
	}
	var out []celProgram
	var errs []error
	seen := map[string]bool{}
	for i, r := range rules {
		if r.Name == "" || r.Expr == "" {
			errs = append(errs, fmt.Errorf("cel rule %d: name and expr are required", i))
			continue
		}
		if seen[r.Name] {
			errs = append(errs, fmt.Errorf("cel rule %q: duplicate name", r.Name))
			continue
		}
		seen[r.Name] = true
		ast, iss := env.Compile(r.Expr)
		if iss.Err() != nil {
			errs = append(errs, fmt.Errorf("cel rule %q: %w", r.Name, iss.Err()))
			continue
		}
		if t := ast.OutputType(); t != cel.BoolType && t != cel.DynType {
			errs = append(errs, fmt.Errorf("cel rule %q: expression is of type %s, want bool", r.Name, t))
			continue
		}
		prg, err := env.Program(ast)
		if err != nil {
			errs = append(errs, fmt.Errorf("cel rule %q: %w", r.Name, err))
			continue
		}
		out = append(out, celProgram{rule: r, prg: prg})
	}
	return out, errors.Join(errs...)
}

func (c *Checker) evalCEL(s Step) []Violation {
	if len(c.cel) == 0 {
		return nil
	}
	vars := map[string]any{"step": StepVar(s)}
	var out []Violation
	for _, p := range c.cel {
		val, _, err := p.prg.Eval(vars)
		rule := "cel:" + p.rule.Name
		switch {
		case err != nil:
			out = append(out, Violation{Rule: rule, Event: fmt.Sprintf("evaluating %s: %v", p.rule.Expr, err)})
		case val.Value() != true:
			out = append(out, Violation{Rule: rule, Event: fmt.Sprintf("%s is %v", p.rule.Expr, val.Value())})
		}
	}
	return out
}

// StepVar is the value of the CEL variable step (documented in
// docs/policy.md). Numbers are int (or uint for byte counts) so rules
// compare them with integer literals.
func StepVar(s Step) map[string]any {
	locs := []any{}
	for _, l := range s.Info.Locations {
		locs = append(locs, map[string]any{"file": l.File, "startLine": int64(l.StartLine), "endLine": int64(l.EndLine)})
	}
	m := map[string]any{
		"id":          s.Info.StepID,
		"instruction": s.Info.Instruction,
		"name":        s.Info.Name,
		"stage":       s.Info.Stage,
		"platform":    s.Info.Platform,
		"status":      s.Info.Status,
		"locations":   locs,
		"processes":   []any{},
		"binaries":    []any{},
		"files":       []any{},
		"network":     []any{},
		"dns":         []any{},
		"reads":       []any{},
		"diff":        map[string]any{"digest": "", "changes": []any{}},
		"resources":   map[string]any{"wallSeconds": 0.0, "cpuSeconds": 0.0, "peakRSSBytes": uint64(0), "readBytes": uint64(0), "writeBytes": uint64(0), "processes": int64(0)},
		"complete":    s.Info.Status != attest.StatusUnknown,
	}
	r := s.Run
	if r == nil {
		return m
	}
	var procs, bins, files, netw, dns, reads, changes []any
	seenBin := map[string]bool{}
	addBin := func(b string) {
		if b != "" && !seenBin[b] {
			seenBin[b] = true
			bins = append(bins, b)
		}
	}
	for _, p := range r.Processes {
		pm := map[string]any{
			"pid": int64(p.PID), "ppid": int64(p.PPID), "exec": p.Exec, "binary": p.Binary,
			"argv": strs(p.Argv), "uid": int64(p.UID), "gid": int64(p.GID), "cwd": p.Cwd,
		}
		if p.ExitCode != nil {
			pm["exitCode"] = int64(*p.ExitCode)
		}
		if p.RealUID != nil {
			pm["realUid"] = int64(*p.RealUID)
		}
		if p.RealGID != nil {
			pm["realGid"] = int64(*p.RealGID)
		}
		procs = append(procs, pm)
		if p.Exec {
			addBin(p.Binary)
		}
		for _, e := range p.Execs {
			addBin(e.Binary)
		}
	}
	for _, f := range r.Files {
		files = append(files, map[string]any{"op": f.Op, "path": f.Path, "target": f.Target, "pid": int64(f.PID)})
	}
	for _, d := range r.Network {
		netw = append(netw, map[string]any{"protocol": d.Protocol, "ip": d.IP, "port": int64(d.Port), "hostname": d.Hostname, "op": d.Op, "count": int64(d.Count), "bytesSent": d.BytesSent, "bytesReceived": d.BytesReceived})
	}
	for _, q := range r.DNS {
		dns = append(dns, map[string]any{"name": q.Name, "type": q.Type, "server": q.Server, "answers": strs(q.Answers)})
	}
	for _, p := range r.Reads.Paths {
		reads = append(reads, p)
	}
	for _, c := range r.Diff.Changes {
		changes = append(changes, map[string]any{"change": c.Change, "path": c.Path, "type": c.Type, "mode": int64(c.Mode), "uid": int64(c.UID), "gid": int64(c.GID), "size": c.Size, "sha256": c.SHA256})
	}
	m["processes"] = nonNil(procs)
	m["binaries"] = nonNil(bins)
	m["files"] = nonNil(files)
	m["network"] = nonNil(netw)
	m["dns"] = nonNil(dns)
	m["reads"] = nonNil(reads)
	m["diff"] = map[string]any{"digest": r.Diff.Digest, "changes": nonNil(changes)}
	m["resources"] = resourcesVar(r.Resources)
	m["complete"] = r.Completeness.Complete
	m["containerID"] = r.ContainerID
	return m
}

func resourcesVar(res trace.Resources) map[string]any {
	return map[string]any{
		"wallSeconds":  float64(res.WallNanos) / 1e9,
		"cpuSeconds":   float64(res.CPUUserNanos+res.CPUSystemNanos) / 1e9,
		"peakRSSBytes": res.PeakRSSBytes,
		"readBytes":    res.ReadBytes,
		"writeBytes":   res.WriteBytes,
		"processes":    int64(res.Processes),
	}
}

func strs(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func nonNil(s []any) []any {
	if s == nil {
		return []any{}
	}
	return s
}
