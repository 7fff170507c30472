// Package policy holds the rules `buildtrace verify` applies to what a build
// did: where it may connect, which binaries and file writes are forbidden,
// resource ceilings, whether cached or incompletely traced steps are
// acceptable, and free-form CEL rules over each step.
package policy

import (
	"errors"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

// Policy is the YAML document (docs/policy.md).
type Policy struct {
	Egress     Egress    `json:"egress,omitempty"`
	Binaries   Binaries  `json:"binaries,omitempty"`
	Files      Files     `json:"files,omitempty"`
	Resources  Resources `json:"resources,omitempty"`
	Cached     Toggle    `json:"cached,omitempty"`
	Incomplete Toggle    `json:"incomplete,omitempty"`
	Frontend   Frontend  `json:"frontend,omitempty"`
	CEL        []CELRule `json:"cel,omitempty"`
}

// Frontend restricts which frontend executables may have asked the tracer
// for the trace (trace.Requester.ExecutableDigest), e.g. this project's
// released frontend binaries.
type Frontend struct {
	// Digests, when non-empty, lists the allowed "sha256:<hex>" digests.
	Digests []string `json:"digests,omitempty"`
}

// Egress lists network destinations: CIDRs, IP addresses, host names and
// "*.suffix" wildcards, each optionally with ":port".
type Egress struct {
	// Flagged destinations must not be contacted.
	Flagged []string `json:"flagged,omitempty"`
	// Allowed, when present (even empty), is an allow-list: every
	// destination must match one entry.
	Allowed *[]string `json:"allowed,omitempty"`
}

// Binaries lists programs that must not run: absolute paths (globs
// allowed) or base names.
type Binaries struct {
	Denied []string `json:"denied,omitempty"`
}

// Files lists path globs ("*" within a segment, "**" across segments) that
// no step may create, write, truncate, delete, rename, chmod or chown.
type Files struct {
	DenyWrite []string `json:"denyWrite,omitempty"`
}

// Resources are per-step ceilings; zero means no limit.
type Resources struct {
	MaxWallSeconds     float64 `json:"maxWallSeconds,omitempty"`
	MaxCPUSeconds      float64 `json:"maxCPUSeconds,omitempty"`
	MaxPeakMemoryBytes uint64  `json:"maxPeakMemoryBytes,omitempty"`
}

// Toggle is a yes/no setting.
type Toggle struct {
	Allow bool `json:"allow"`
}

// CELRule is an expression over the variable step that must evaluate to
// true for every step.
type CELRule struct {
	Name string `json:"name"`
	Expr string `json:"expr"`
}

// Load reads and checks a policy file.
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading policy: %w", err)
	}
	p, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	return p, nil
}

// Parse decodes a policy, refusing unknown keys so a misspelt rule is
// not silently ignored.
func Parse(data []byte) (*Policy, error) {
	var p Policy
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		return nil, fmt.Errorf("decoding policy: %w", err)
	}
	if _, err := Compile(&p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Checker is a compiled policy.
type Checker struct {
	p         Policy
	flagged   []destMatcher
	allowed   []destMatcher
	allowList bool
	cel       []celProgram
}

// Compile checks every entry of p and prepares it for matching.
func Compile(p *Policy) (*Checker, error) {
	if p == nil {
		p = &Policy{}
	}
	c := &Checker{p: *p}
	var errs []error
	for _, s := range p.Egress.Flagged {
		m, err := parseDest(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("egress.flagged: %w", err))
			continue
		}
		c.flagged = append(c.flagged, m)
	}
	if p.Egress.Allowed != nil {
		c.allowList = true
		for _, s := range *p.Egress.Allowed {
			m, err := parseDest(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("egress.allowed: %w", err))
				continue
			}
			c.allowed = append(c.allowed, m)
		}
	}
	for _, s := range p.Binaries.Denied {
		if s == "" {
			errs = append(errs, errors.New("binaries.denied: empty entry"))
		} else if err := checkGlob(s); err != nil {
			errs = append(errs, fmt.Errorf("binaries.denied: %w", err))
		}
	}
	for _, s := range p.Files.DenyWrite {
		if err := checkGlob(s); err != nil {
			errs = append(errs, fmt.Errorf("files.denyWrite: %w", err))
		}
	}
	if p.Resources.MaxWallSeconds < 0 || p.Resources.MaxCPUSeconds < 0 {
		errs = append(errs, errors.New("resources: limits must not be negative"))
	}
	progs, err := compileCEL(p.CEL)
	if err != nil {
		errs = append(errs, err)
	}
	c.cel = progs
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// AllowCached reports whether cached steps are acceptable.
func (c *Checker) AllowCached() bool { return c.p.Cached.Allow }

// AllowFrontend reports whether a frontend executable digest is allowed.
func (c *Checker) AllowFrontend(digest string) bool {
	if len(c.p.Frontend.Digests) == 0 {
		return true
	}
	for _, d := range c.p.Frontend.Digests {
		if d == digest {
			return true
		}
	}
	return false
}

// AllowIncomplete reports whether incompletely traced steps are acceptable.
func (c *Checker) AllowIncomplete() bool { return c.p.Incomplete.Allow }
