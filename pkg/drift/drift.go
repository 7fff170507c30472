// Package drift compares what the steps of two builds did: destinations
// contacted, binaries run, files written and resources used.
package drift

import (
	"fmt"
	"github.com/buildtrace/buildtrace/pkg/termsafe"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/trace"
)

// Step is the comparable summary of one step.
type Step struct {
	StepID       string
	Instruction  string
	Location     string
	Status       string
	Destinations map[string]bool // "tcp registry.example.com:443" (host name when known, else IP)
	Binaries     map[string]bool
	Files        map[string]bool // paths written, created, deleted (syscalls and diff)
	WallSeconds  float64
	CPUSeconds   float64
	PeakRSS      float64
}

// Steps summarises a predicate's steps with the trace's runs (b may be
// nil when the build was not monitored).
func Steps(p *attest.Predicate, b *trace.Build) []Step {
	runs := map[string][]trace.Step{}
	if b != nil {
		for _, s := range b.Steps {
			runs[s.StepID] = append(runs[s.StepID], s)
		}
	}
	var out []Step
	for _, si := range p.Buildtrace.Steps {
		s := Step{StepID: si.StepID, Instruction: si.Instruction, Status: si.Status,
			Destinations: map[string]bool{}, Binaries: map[string]bool{}, Files: map[string]bool{}}
		if len(si.Locations) > 0 {
			s.Location = fmt.Sprintf("%s:%d", si.Locations[0].File, si.Locations[0].StartLine)
		}
		for _, r := range runs[si.StepID] {
			names := map[string]string{}
			for _, q := range r.DNS {
				for _, a := range q.Answers {
					if names[a] == "" {
						names[a] = q.Name
					}
				}
			}
			for _, d := range r.Network {
				host := d.Hostname
				if host == "" {
					host = names[d.IP]
				}
				if host == "" {
					host = d.IP
				}
				if strings.Contains(host, ":") {
					host = "[" + host + "]"
				}
				s.Destinations[fmt.Sprintf("%s %s:%d", d.Protocol, host, d.Port)] = true
			}
			for _, pr := range r.Processes {
				if pr.Exec && pr.Binary != "" {
					s.Binaries[pr.Binary] = true
				}
				for _, e := range pr.Execs {
					s.Binaries[e.Binary] = true
				}
			}
			for _, f := range r.Files {
				s.Files[f.Path] = true
			}
			for _, c := range r.Diff.Changes {
				s.Files[c.Path] = true
			}
			s.WallSeconds += float64(r.Resources.WallNanos) / 1e9
			s.CPUSeconds += float64(r.Resources.CPUUserNanos+r.Resources.CPUSystemNanos) / 1e9
			s.PeakRSS = max(s.PeakRSS, float64(r.Resources.PeakRSSBytes))
		}
		out = append(out, s)
	}
	return out
}

// ResourceChange is a resource that moved by more than the threshold.
type ResourceChange struct {
	Name string  `json:"name"`
	Old  float64 `json:"old"`
	New  float64 `json:"new"`
}

// Change is what differs for one step.
type Change struct {
	StepID      string           `json:"stepID"`
	OldStepID   string           `json:"oldStepID,omitempty"`
	Instruction string           `json:"instruction"`
	Location    string           `json:"location,omitempty"`
	MatchedBy   string           `json:"matchedBy"` // "step ID", "instruction", "new step", "gone step"
	Added       Items            `json:"added"`
	Removed     Items            `json:"removed"`
	Resources   []ResourceChange `json:"resources,omitempty"`
}

// Items are sets of observations.
type Items struct {
	Destinations []string `json:"destinations,omitempty"`
	Binaries     []string `json:"binaries,omitempty"`
	Files        []string `json:"files,omitempty"`
}

func (i Items) empty() bool {
	return len(i.Destinations) == 0 && len(i.Binaries) == 0 && len(i.Files) == 0
}

// Result is the whole comparison.
type Result struct {
	Threshold float64  `json:"threshold"`
	Changes   []Change `json:"changes"`
}

// New reports whether anything new appeared: a step, a destination, a
// binary, a written file, or a resource grown beyond the threshold.
func (r *Result) New() bool {
	for _, c := range r.Changes {
		if c.MatchedBy == "new step" || !c.Added.empty() {
			return true
		}
		for _, rc := range c.Resources {
			if rc.New > rc.Old {
				return true
			}
		}
	}
	return false
}

// Compare matches new steps to old ones by step ID, else by instruction
// text, and reports what differs. A resource differs when it changed by
// more than threshold relative to the old value and is above a noise floor
// (1s wall or CPU, 64 MiB memory).
func Compare(old, cur []Step, threshold float64) *Result {
	res := &Result{Threshold: threshold, Changes: []Change{}}
	byID := map[string]int{}
	byInstr := map[string][]int{}
	for i, s := range old {
		byID[s.StepID] = i
		byInstr[s.Instruction] = append(byInstr[s.Instruction], i)
	}
	used := map[int]bool{}
	match := func(s Step) (int, string) {
		if i, ok := byID[s.StepID]; ok && !used[i] {
			return i, "step ID"
		}
		for _, i := range byInstr[s.Instruction] {
			if !used[i] {
				return i, "instruction"
			}
		}
		return -1, ""
	}
	// Match by ID first for every step, so an instruction match cannot
	// take an old step that a later step's ID names.
	matched := make([]int, len(cur))
	how := make([]string, len(cur))
	for j, s := range cur {
		matched[j] = -1
		if i, ok := byID[s.StepID]; ok {
			matched[j], how[j] = i, "step ID"
			used[i] = true
		}
	}
	for j, s := range cur {
		if matched[j] < 0 {
			matched[j], how[j] = match(s)
			if matched[j] >= 0 {
				used[matched[j]] = true
			}
		}
	}
	for j, s := range cur {
		c := Change{StepID: s.StepID, Instruction: s.Instruction, Location: s.Location}
		if matched[j] < 0 {
			c.MatchedBy = "new step"
			c.Added = Items{Destinations: keys(s.Destinations), Binaries: keys(s.Binaries), Files: keys(s.Files)}
			res.Changes = append(res.Changes, c)
			continue
		}
		o := old[matched[j]]
		c.MatchedBy = how[j]
		if o.StepID != s.StepID {
			c.OldStepID = o.StepID
		}
		// A cached step was not observed: comparing its empty sets would
		// report everything as gone or new.
		if s.Status != attest.StatusExecuted || o.Status != attest.StatusExecuted {
			continue
		}
		c.Added = Items{Destinations: minus(s.Destinations, o.Destinations), Binaries: minus(s.Binaries, o.Binaries), Files: minus(s.Files, o.Files)}
		c.Removed = Items{Destinations: minus(o.Destinations, s.Destinations), Binaries: minus(o.Binaries, s.Binaries), Files: minus(o.Files, s.Files)}
		for _, rc := range []ResourceChange{{"wallSeconds", o.WallSeconds, s.WallSeconds}, {"cpuSeconds", o.CPUSeconds, s.CPUSeconds}, {"peakRSSBytes", o.PeakRSS, s.PeakRSS}} {
			if beyond(rc.Name, rc.Old, rc.New, threshold) {
				c.Resources = append(c.Resources, rc)
			}
		}
		if !c.Added.empty() || !c.Removed.empty() || len(c.Resources) > 0 {
			res.Changes = append(res.Changes, c)
		}
	}
	for i, o := range old {
		if !used[i] {
			res.Changes = append(res.Changes, Change{StepID: o.StepID, Instruction: o.Instruction, Location: o.Location, MatchedBy: "gone step",
				Removed: Items{Destinations: keys(o.Destinations), Binaries: keys(o.Binaries), Files: keys(o.Files)}})
		}
	}
	return res
}

// Floors under which resource use is noise: a step taking 20ms instead of
// 8ms is not drift.
var floors = map[string]float64{"wallSeconds": 1, "cpuSeconds": 1, "peakRSSBytes": 64 << 20}

func beyond(name string, old, cur, threshold float64) bool {
	if max(old, cur) < floors[name] {
		return false
	}
	if old == 0 {
		return cur != 0
	}
	d := (cur - old) / old
	return d > threshold || -d > threshold
}

func keys(m map[string]bool) []string {
	return slices.Sorted(maps.Keys(m))
}

func minus(a, b map[string]bool) []string {
	var out []string
	for k := range a {
		if !b[k] {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// Text writes the comparison for a terminal.
func (r *Result) Text(w io.Writer) error {
	var b strings.Builder
	if len(r.Changes) == 0 {
		b.WriteString("no differences\n")
	}
	for _, c := range r.Changes {
		fmt.Fprintf(&b, "%s %s  [%s]\n", termsafe.String(c.Location), termsafe.String(c.Instruction), termsafe.String(c.MatchedBy))
		list := func(sign, label string, items []string) {
			for _, it := range items {
				fmt.Fprintf(&b, "  %s %s %s\n", sign, label, termsafe.String(it))
			}
		}
		list("+", "destination", c.Added.Destinations)
		list("-", "destination", c.Removed.Destinations)
		list("+", "binary", c.Added.Binaries)
		list("-", "binary", c.Removed.Binaries)
		list("+", "file", c.Added.Files)
		list("-", "file", c.Removed.Files)
		for _, rc := range c.Resources {
			fmt.Fprintf(&b, "  ~ %s %.3g → %.3g\n", termsafe.String(rc.Name), rc.Old, rc.New)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
