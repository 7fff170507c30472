package assemble

import (
	"cmp"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/buildtrace/buildtrace/pkg/trace"
)

// maxRenameDepth bounds how many renames (or links) materials follows back
// from a file of the diff to the file its content was written to.
const maxRenameDepth = 8

// fileWrite is a process writing a file: a create, an open for writing or
// a truncate, at ops[index].
type fileWrite struct {
	pid   uint32
	time  time.Time
	index int
}

// materials finds a sealed step's downloaded artifacts (trace.Material):
// every regular file of the diff that a process wrote no earlier than it
// first reached a remote endpoint (TCP or UDP, not port 53) that sent it
// data or accepted its TCP connection. execTime holds, by index into
// st.Processes, the time of each process's last exec.
func materials(st *trace.Step, execTime map[int]time.Time) ([]trace.Material, bool) {
	// The endpoints each process reached.
	byPID := map[uint32][]int{}
	for i, d := range st.Network {
		if d.Protocol != "tcp" && d.Protocol != "udp" || d.Port == 53 {
			continue
		}
		if d.BytesReceived == 0 && (d.Protocol != "tcp" || d.Count <= d.Failed) {
			continue
		}
		for _, pid := range d.PIDs {
			byPID[pid] = append(byPID[pid], i)
		}
	}
	if len(byPID) == 0 || len(st.Diff.Changes) == 0 || len(st.Files) == 0 {
		return nil, false
	}
	ix := indexFiles(st.Files)
	names := dnsNames(st)
	var out []trace.Material
	type key struct {
		path string
		pid  uint32
		dest int
	}
	seen := map[key]bool{}
	for _, c := range st.Diff.Changes {
		if c.Change == trace.ChangeDeleted || c.Type != "file" {
			continue
		}
		for _, w := range ix.writers(c.Path, len(st.Files), 0) {
			for _, di := range byPID[w.pid] {
				d := st.Network[di]
				if !d.First.IsZero() && !w.time.IsZero() && d.First.After(w.time) {
					continue // written before the process reached the endpoint
				}
				k := key{c.Path, w.pid, di}
				if seen[k] {
					continue
				}
				seen[k] = true
				m := trace.Material{
					Path: c.Path, SHA256: c.SHA256, Size: c.Size, PID: w.pid,
					Endpoint: trace.MaterialEndpoint{Protocol: d.Protocol, IP: d.IP, Port: d.Port, Hostname: d.Hostname},
				}
				var argv []string
				m.Binary, argv, m.ArgvTruncated = imageAt(st.Processes, execTime, w.pid, w.time)
				if len(argv) > trace.MaxMaterialArgv {
					argv, m.ArgvTruncated = argv[:trace.MaxMaterialArgv], true
				}
				m.Argv = slices.Clone(argv)
				m.URL = argvURL(m.Binary, argv, c.Path, d, names[d.IP])
				out = append(out, m)
			}
		}
	}
	slices.SortFunc(out, func(a, b trace.Material) int {
		return cmp.Or(strings.Compare(a.Path, b.Path), cmp.Compare(a.PID, b.PID),
			strings.Compare(a.Endpoint.Protocol, b.Endpoint.Protocol), strings.Compare(a.Endpoint.IP, b.Endpoint.IP),
			cmp.Compare(a.Endpoint.Port, b.Endpoint.Port))
	})
	if len(out) > trace.MaxMaterials {
		return out[:trace.MaxMaterials], true
	}
	return out, false
}

// fileIndex finds the operations on a path: by Path (writes, unlinks,
// renames away) and by Target (renames and links onto it), in log order.
type fileIndex struct {
	ops              []trace.FileOp
	byPath, byTarget map[string][]int
}

func indexFiles(ops []trace.FileOp) *fileIndex {
	ix := &fileIndex{ops: ops, byPath: map[string][]int{}, byTarget: map[string][]int{}}
	for i, f := range ops {
		switch f.Op {
		case trace.OpCreate, trace.OpWrite, trace.OpTruncate, trace.OpUnlink, trace.OpRename:
			ix.byPath[f.Path] = append(ix.byPath[f.Path], i)
		}
		switch f.Op {
		case trace.OpRename, trace.OpLink:
			if f.Target != "" {
				ix.byTarget[f.Target] = append(ix.byTarget[f.Target], i)
			}
		}
	}
	return ix
}

// writers returns the writes that made the content p held just before
// ops[before]: the writes to p since it was last unlinked or renamed away,
// and, when a rename or link put another file at p since, that file's
// writes up to then. It walks back from before, so each call costs the
// operations since the last such event, whatever came earlier.
func (ix *fileIndex) writers(p string, before, depth int) []fileWrite {
	if depth > maxRenameDepth {
		return nil
	}
	a, b := ix.byPath[p], ix.byTarget[p]
	ai, bi := sort.SearchInts(a, before)-1, sort.SearchInts(b, before)-1
	var out []fileWrite
	for ai >= 0 || bi >= 0 {
		if bi >= 0 && (ai < 0 || b[bi] >= a[ai]) {
			i := b[bi]
			bi--
			if ai >= 0 && a[ai] == i {
				ai-- // p renamed onto itself
				continue
			}
			// A rename or link put another file's content at p.
			slices.Reverse(out)
			return append(ix.writers(ix.ops[i].Path, i, depth+1), out...)
		}
		i := a[ai]
		ai--
		f := ix.ops[i]
		if f.Op == trace.OpUnlink || f.Op == trace.OpRename {
			break // the content before was removed or moved away
		}
		out = append(out, fileWrite{pid: f.PID, time: f.Time, index: i})
	}
	slices.Reverse(out)
	return out
}

// imageAt returns the binary and argv process pid had at t: the image it
// had exec'd last by then.
func imageAt(procs []trace.Process, execTime map[int]time.Time, pid uint32, t time.Time) (string, []string, bool) {
	pi := -1
	for i, p := range procs {
		if p.PID != pid {
			continue
		}
		if pi < 0 || t.IsZero() || !p.Start.After(t) {
			pi = i // PIDs can be reused: the latest process started by t
		}
	}
	if pi < 0 {
		return "", nil, false
	}
	p := procs[pi]
	if last := execTime[pi]; t.IsZero() || last.IsZero() || !t.Before(last) || len(p.Execs) == 0 {
		return p.Binary, p.Argv, p.ArgvTruncated
	}
	for i := len(p.Execs) - 1; i >= 0; i-- {
		if x := p.Execs[i]; !x.Time.After(t) || i == 0 {
			return x.Binary, x.Argv, x.ArgvTruncated
		}
	}
	return p.Binary, p.Argv, p.ArgvTruncated
}

// dnsNames maps an address to the names confirmed DNS answers of the step
// gave for it, lower case.
func dnsNames(st *trace.Step) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	add := func(ip, name string) {
		name = strings.ToLower(strings.TrimSuffix(name, "."))
		if name == "" {
			return
		}
		if out[ip] == nil {
			out[ip] = map[string]bool{}
		}
		out[ip][name] = true
	}
	for _, q := range st.DNS {
		for _, a := range q.Answers {
			if ad, err := netip.ParseAddr(a); err == nil {
				add(ad.Unmap().String(), q.Name)
			}
		}
	}
	for _, d := range st.Network {
		if d.Hostname != "" {
			add(d.IP, d.Hostname)
		}
	}
	return out
}

// Options of wget and curl that take a value (not a URL to fetch), and
// those that send data or set the method (then the method is not known
// to be GET).
var (
	curlShortValue = "AbcCdDeEFHKmoPQrTtuUwxXyYz"
	curlShortData  = "dFXTI"
	curlLongValue  = setOf("--referer", "--proxy", "--preproxy", "--proxy1.0", "--doh-url", "--header", "--proxy-header",
		"--user-agent", "--data", "--data-raw", "--data-binary", "--data-urlencode", "--data-ascii", "--json", "--form",
		"--form-string", "--output", "--config", "--cookie", "--cookie-jar", "--dump-header", "--write-out", "--user",
		"--proxy-user", "--upload-file", "--request", "--resolve", "--connect-to", "--range", "--max-time",
		"--continue-at", "--cert", "--cacert", "--key", "--output-dir", "--retry", "--connect-timeout", "--limit-rate")
	curlLongData   = setOf("--data", "--data-raw", "--data-binary", "--data-urlencode", "--data-ascii", "--json", "--form", "--form-string", "--request", "--upload-file", "--head")
	wgetShortValue = "OoaeiBtTwPUQlARDXIn"
	wgetShortData  = ""
	wgetLongValue  = setOf("--output-document", "--output-file", "--append-output", "--execute", "--input-file", "--base",
		"--user-agent", "--referer", "--header", "--post-data", "--post-file", "--body-data", "--body-file", "--method",
		"--directory-prefix", "--tries", "--timeout", "--wait", "--quota", "--level", "--load-cookies", "--save-cookies",
		"--proxy-user", "--proxy-password", "--user", "--password", "--ca-certificate", "--certificate", "--private-key")
	wgetLongData = setOf("--post-data", "--post-file", "--method", "--body-data", "--body-file", "--spider")
)

func setOf(ss ...string) map[string]bool {
	m := make(map[string]bool, len(ss))
	for _, s := range ss {
		m[s] = true
	}
	return m
}

// fetcher names the tool a process ran when it is wget or curl (by its
// binary or argv[0], as busybox applets run), else "".
func fetcher(binary string, argv []string) string {
	for _, n := range []string{first(argv), binary} {
		switch path.Base(n) {
		case "wget", "curl":
			return path.Base(n)
		}
	}
	return ""
}

func first(ss []string) string {
	if len(ss) == 0 {
		return ""
	}
	return ss[0]
}

// argvURL returns the URL in argv that names endpoint d, or nil: the
// http:// and https:// arguments (for wget and curl, not the values of
// options such as --referer or --proxy) whose host is d's IP or one of
// names (the step's DNS answers for it) and whose port is d's. When more
// than one does, the one whose last path segment is the file's name, if
// exactly one is.
func argvURL(binary string, argv []string, file string, d trace.Destination, names map[string]bool) *trace.MaterialURL {
	tool := fetcher(binary, argv)
	var shortValue, shortData string
	var longValue, longData map[string]bool
	switch tool {
	case "curl":
		shortValue, shortData, longValue, longData = curlShortValue, curlShortData, curlLongValue, curlLongData
	case "wget":
		shortValue, shortData, longValue, longData = wgetShortValue, wgetShortData, wgetLongValue, wgetLongData
	}
	var cands []trace.MaterialURL
	sendsData := false
	operands := false
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		if tool != "" && !operands && strings.HasPrefix(a, "-") && len(a) > 1 {
			if a == "--" {
				operands = true
				continue
			}
			if strings.HasPrefix(a, "--") {
				name, _, inline := strings.Cut(a, "=")
				if longData[name] {
					sendsData = true
				}
				if longValue[name] && !inline {
					i++
				}
				continue
			}
			for j := 1; j < len(a); j++ {
				if strings.IndexByte(shortData, a[j]) >= 0 {
					sendsData = true
				}
				if strings.IndexByte(shortValue, a[j]) >= 0 {
					if j == len(a)-1 {
						i++
					}
					break
				}
			}
			continue
		}
		u, ok := parseURL(a)
		if !ok || u.Port != d.Port || !hostIs(u.Host, d.IP, names) {
			continue
		}
		if !slices.Contains(cands, u) {
			cands = append(cands, u)
		}
	}
	if len(cands) > 1 {
		var named []trace.MaterialURL
		for _, u := range cands {
			if path.Base(u.Path) == path.Base(file) {
				named = append(named, u)
			}
		}
		cands = named
	}
	if len(cands) != 1 {
		return nil
	}
	u := cands[0]
	if tool != "" && !sendsData {
		u.Method = "GET"
	}
	return &u
}

// parseURL parses an http:// or https:// argument.
func parseURL(s string) (trace.MaterialURL, bool) {
	l := strings.ToLower(s)
	if !strings.HasPrefix(l, "http://") && !strings.HasPrefix(l, "https://") {
		return trace.MaterialURL{}, false
	}
	u, err := url.Parse(s)
	if err != nil || u.Hostname() == "" {
		return trace.MaterialURL{}, false
	}
	out := trace.MaterialURL{Scheme: strings.ToLower(u.Scheme), Host: u.Hostname(), Path: u.EscapedPath()}
	if out.Path == "" {
		out.Path = "/"
	}
	switch p := u.Port(); {
	case p != "":
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			return trace.MaterialURL{}, false
		}
		out.Port = uint16(n)
	case out.Scheme == "https":
		out.Port = 443
	default:
		out.Port = 80
	}
	return out, true
}

// hostIs reports whether a URL's host names ip: the address itself or a
// name DNS answered with it.
func hostIs(host, ip string, names map[string]bool) bool {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().String() == ip
	}
	return names[strings.ToLower(strings.TrimSuffix(host, "."))]
}
