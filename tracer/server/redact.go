package server

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/tracer/rootfs"
)

// A secret shorter than this is not redacted: replacing every "1" or "ab"
// would destroy the trace and hide nothing.
const minSecretLen = 4

// maxSecretBytes bounds what is read of a secret file.
const maxSecretBytes = 64 << 10

// noteSecrets reads, while the container runs, the values of the secrets
// its step mounts (the plan names them; the values are in the bundle's
// environment and in the files bound at the secret mounts), and keeps them
// in memory only, to redact them from the step before it is stored.
func (s *Server) noteSecrets(cgroupID uint64, path string, l rootfs.Layout, traceID string) {
	c, ok := steptag.ParseCgroup(path)
	if !ok {
		return
	}
	// A container whose build is unknown still names its step, which some
	// build planned: its record goes into that build's trace.
	env, files := s.plans.stepSecrets(traceID, c.StepID)
	if len(env) == 0 && len(files) == 0 {
		return
	}
	// Without the bundle the values cannot be known, so they cannot be
	// redacted: the step says so (redact) instead.
	vals := []string{unreadSecret}
	if l.Bundle != "" {
		vals = bundleSecrets(filepath.Join(l.Bundle, "config.json"), l.Root, env, files)
	}
	if len(vals) == 0 {
		return
	}
	s.mu.Lock()
	if s.secrets == nil {
		s.secrets = map[uint64][]string{}
	}
	s.secrets[cgroupID] = vals
	s.mu.Unlock()
}

// bundleSecrets returns the values of the named environment variables and
// the contents of the files mounted at the named paths; root opens the
// bundle's paths (its mount sources) in buildkitd's mount namespace.
func bundleSecrets(config, root string, env, files []string) []string {
	dt, err := os.ReadFile(config)
	if err != nil {
		return []string{unreadSecret}
	}
	var spec struct {
		Process struct {
			Env []string `json:"env"`
		} `json:"process"`
		Mounts []struct {
			Destination string `json:"destination"`
			Source      string `json:"source"`
		} `json:"mounts"`
	}
	if json.Unmarshal(dt, &spec) != nil {
		return []string{unreadSecret}
	}
	var out []string
	for _, kv := range spec.Process.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && slices.Contains(env, k) {
			out = append(out, v)
		}
	}
	for _, m := range spec.Mounts {
		if !slices.Contains(files, m.Destination) {
			continue
		}
		f, err := os.Open(root + m.Source)
		if err != nil {
			out = append(out, unreadSecret) // reported, never skipped silently
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(f, maxSecretBytes))
		f.Close()
		out = append(out, string(b))
		// A file's value is often used without its trailing newline.
		if t := strings.TrimRight(string(b), "\r\n"); t != string(b) {
			out = append(out, t)
		}
	}
	return secretForms(out)
}

// secretForms lists what to redact for secret values: each value and its
// encodings, longest first (a secret that contains another is replaced
// whole). A value shorter than minSecretLen cannot be replaced without
// mangling the record; it becomes a marker the step reports.
func secretForms(vals []string) []string {
	var all []string
	for _, v := range vals {
		if v == unreadSecret {
			all = append(all, v)
			continue
		}
		if len(v) < minSecretLen {
			all = append(all, shortSecret)
			continue
		}
		all = append(all, encodings(v)...)
	}
	slices.SortFunc(all, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(all)
}

// shortSecret stands for a secret too short to redact; unreadSecret for
// secrets the tracer could not read (a file it could not open, a bundle it
// could not read).
const (
	shortSecret  = "\x00short"
	unreadSecret = "\x00unread"
)

// encodings lists the forms a secret is commonly written in on a command
// line or in a URL. Derived values (substrings, other encodings, hashes)
// cannot be caught.
func encodings(v string) []string {
	b := []byte(v)
	out := []string{v,
		base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
		hex.EncodeToString(b), url.PathEscape(v), url.QueryEscape(v),
		// A URL's path as the trace keeps it: '/' stays, a space is %20.
		(&url.URL{Path: v}).EscapedPath(),
	}
	return slices.DeleteFunc(out, func(e string) bool { return len(e) < minSecretLen })
}

// takeSecrets returns and forgets a container's secret values.
func (s *Server) takeSecrets(cgroupID uint64) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.secrets[cgroupID]
	delete(s.secrets, cgroupID)
	return v
}

// redact replaces every secret value (and its common encodings, in any
// letter case) in every string of a sealed step.
func redact(st *trace.Step, secrets []string) {
	if len(secrets) == 0 {
		return
	}
	if slices.Contains(secrets, shortSecret) {
		st.Completeness.Complete = false
		st.Completeness.Reasons = append(st.Completeness.Reasons, fmt.Sprintf("the step mounted a secret shorter than %d bytes, which cannot be redacted from what it recorded", minSecretLen))
		secrets = slices.DeleteFunc(slices.Clone(secrets), func(v string) bool { return v == shortSecret })
	}
	withhold := slices.Contains(secrets, unreadSecret)
	if withhold {
		// A value the tracer does not know can be anywhere the step
		// wrote a string, so every string it recorded is withheld.
		st.Completeness.Complete = false
		st.Completeness.Reasons = append(st.Completeness.Reasons, "the step mounted a secret the tracer could not read, so every name, argument and path it recorded is withheld")
		secrets = slices.DeleteFunc(slices.Clone(secrets), func(v string) bool { return v == unreadSecret })
	}
	n := 0
	r := func(p *string) {
		if withhold {
			if *p != "" && *p != trace.RedactedSecret {
				*p = trace.RedactedSecret
				n++
			}
			return
		}
		for _, v := range secrets {
			var c int
			*p, c = replaceFold(*p, v, trace.RedactedSecret)
			n += c
		}
	}
	rs := func(ss []string) {
		for i := range ss {
			r(&ss[i])
		}
	}
	for i := range st.Processes {
		p := &st.Processes[i]
		r(&p.Binary)
		r(&p.Filename)
		r(&p.Cwd)
		rs(p.Argv)
		for j := range p.Execs {
			r(&p.Execs[j].Binary)
			r(&p.Execs[j].Filename)
			rs(p.Execs[j].Argv)
		}
	}
	for i := range st.Files {
		r(&st.Files[i].Path)
		r(&st.Files[i].Target)
	}
	rs(st.Reads.Paths)
	for i := range st.Network {
		r(&st.Network[i].Hostname)
		r(&st.Network[i].HostnameUnconfirmed)
	}
	for i := range st.DNS {
		r(&st.DNS[i].Name)
		rs(st.DNS[i].Answers)
		rs(st.DNS[i].UnconfirmedAnswers)
	}
	r(&st.Diff.Error)
	for i := range st.Diff.Changes {
		r(&st.Diff.Changes[i].Path)
		r(&st.Diff.Changes[i].LinkTarget)
	}
	for i := range st.Materials {
		m := &st.Materials[i]
		r(&m.Path)
		r(&m.Binary)
		rs(m.Argv)
		r(&m.Endpoint.Hostname)
		if m.URL != nil {
			r(&m.URL.Host)
			r(&m.URL.Path)
		}
	}
	if withhold {
		// The reasons are the tracer's own words, but for the diff's
		// error, which quotes the step's paths.
		for i, why := range st.Completeness.Reasons {
			if strings.HasPrefix(why, trace.ReasonNoDiff) {
				st.Completeness.Reasons[i] = trace.ReasonNoDiff + trace.RedactedSecret
			}
		}
	} else {
		rs(st.Completeness.Reasons)
	}
	st.Redactions += n
}

// replaceFold replaces every occurrence of old in s, compared without
// regard to ASCII letter case (DNS names are lowercased, hex may be
// either), and counts them.
func replaceFold(s, old, repl string) (string, int) {
	if len(old) == 0 || len(s) < len(old) {
		return s, 0
	}
	ls, lo := strings.ToLower(s), strings.ToLower(old)
	if len(ls) != len(s) || !strings.Contains(ls, lo) {
		if strings.Contains(s, old) {
			return strings.ReplaceAll(s, old, repl), strings.Count(s, old)
		}
		return s, 0
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(s); {
		j := strings.Index(ls[i:], lo)
		if j < 0 {
			b.WriteString(s[i:])
			break
		}
		b.WriteString(s[i : i+j])
		b.WriteString(repl)
		i += j + len(lo)
		n++
	}
	return b.String(), n
}
