package policy

import (
	"fmt"
	"net"
	"path"
	"strconv"
	"strings"
)

// destMatcher matches one egress entry.
type destMatcher struct {
	entry string
	cidr  *net.IPNet // for CIDRs and single addresses
	host  string     // lower case; "*.example.com" matches below example.com
	port  uint16     // 0: any
}

func parseDest(s string) (destMatcher, error) {
	m := destMatcher{entry: s}
	hostPart := strings.TrimSpace(s)
	if hostPart == "" {
		return m, fmt.Errorf("empty destination")
	}
	// A bare IPv6 address or CIDR has colons but no port.
	if m.cidr = addrNet(hostPart); m.cidr != nil {
		return m, nil
	}
	if h, p, err := net.SplitHostPort(hostPart); err == nil {
		port, err := strconv.ParseUint(p, 10, 16)
		if err != nil || port == 0 {
			return m, fmt.Errorf("destination %q: bad port %q", s, p)
		}
		m.port = uint16(port)
		hostPart = h
		if m.cidr = addrNet(hostPart); m.cidr != nil {
			return m, nil
		}
	}
	h := strings.ToLower(strings.TrimSuffix(hostPart, "."))
	rest := strings.TrimPrefix(h, "*.")
	if rest == "" || strings.ContainsAny(rest, "*/ []") {
		return m, fmt.Errorf("destination %q: want a CIDR, an IP address, a host name or *.domain, optionally with :port", s)
	}
	m.host = h
	return m, nil
}

// addrNet returns the network s names as a CIDR or a single address, or
// nil when s is neither.
func addrNet(s string) *net.IPNet {
	if _, n, err := net.ParseCIDR(s); err == nil {
		return n
	}
	if ip := net.ParseIP(s); ip != nil {
		return hostNet(ip)
	}
	return nil
}

func hostNet(ip net.IP) *net.IPNet {
	if v4 := ip.To4(); v4 != nil {
		return &net.IPNet{IP: v4, Mask: net.CIDRMask(32, 32)}
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(128, 128)}
}

// matchHost reports whether a host-name pattern matches name: exactly, or
// for "*.example.com" any name below example.com (not example.com itself).
func matchHost(pattern, name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name == "" {
		return false
	}
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(name, suffix) && len(name) > len(suffix)
	}
	return pattern == name
}

// match reports whether the destination ip:port, reached under any of the
// given host names, matches.
func (m destMatcher) match(ip string, port uint16, hostnames []string) bool {
	if m.port != 0 && m.port != port {
		return false
	}
	if m.cidr != nil {
		a := net.ParseIP(ip)
		return a != nil && m.cidr.Contains(a)
	}
	for _, h := range hostnames {
		if matchHost(m.host, h) {
			return true
		}
	}
	return false
}

// matchName reports whether a host-name entry matches a DNS question's name
// (port-less entries only: a question has no destination port).
func (m destMatcher) matchName(name string) bool {
	return m.host != "" && m.port == 0 && matchHost(m.host, name)
}

// checkGlob reports a malformed glob.
func checkGlob(pattern string) error {
	for _, seg := range strings.Split(pattern, "/") {
		if seg == "**" {
			continue
		}
		if _, err := path.Match(seg, ""); err != nil {
			return fmt.Errorf("bad glob %q: %w", pattern, err)
		}
	}
	return nil
}

// MatchPath matches a slash-separated path against a glob where "*", "?"
// and "[...]" work within one segment and a "**" segment matches any
// number of segments (including none). A pattern without a leading "/"
// matches at any depth, so "*.pem" matches /etc/ssl/x.pem.
func MatchPath(pattern, p string) bool {
	p = path.Clean("/" + p)
	if !strings.HasPrefix(pattern, "/") {
		pattern = "/**/" + pattern
	}
	return matchSegs(strings.Split(strings.Trim(pattern, "/"), "/"), strings.Split(strings.Trim(p, "/"), "/"))
}

func matchSegs(pat, segs []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(segs); i++ {
				if matchSegs(pat[1:], segs[i:]) {
					return true
				}
			}
			return false
		}
		if len(segs) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], segs[0]); !ok {
			return false
		}
		pat, segs = pat[1:], segs[1:]
	}
	return len(segs) == 0
}

// matchBinary matches a binaries.denied entry: an entry with a "/" is a
// path glob against the executed path, otherwise a base-name glob against
// every name the process may run as (runNames).
func matchBinary(entry, binary string, argv []string) bool {
	if strings.Contains(entry, "/") {
		return binary != "" && MatchPath(entry, binary)
	}
	for _, s := range runNames(binary, argv) {
		if ok, _ := path.Match(entry, s); ok {
			return true
		}
	}
	return false
}

// runNames returns the base names a process may run as: its binary's,
// argv[0]'s, and those a multi-call binary dispatches on. busybox takes the
// applet from argv[0]'s base name without one leading "-" (a login
// shell's "-wget" runs wget) and, while that name starts with "busybox",
// from the next argument's ("busybox wget", "busybox busybox wget",
// argv[0] "busybox-x"): each is listed, so an applet it runs is named
// whichever way it was called (redteam13). A name that is not busybox's
// may be listed too (a program's own first argument after an argv[0] of
// "busybox…"); that can only add a match.
func runNames(binary string, argv []string) []string {
	var names []string
	if binary != "" {
		names = append(names, path.Base(binary))
	}
	if len(argv) == 0 || argv[0] == "" {
		return names
	}
	names = append(names, path.Base(argv[0]))
	name := path.Base(strings.TrimPrefix(argv[0], "-"))
	names = append(names, name)
	for _, a := range argv[1:] {
		if !strings.HasPrefix(name, "busybox") || a == "" {
			break
		}
		name = path.Base(a)
		names = append(names, name)
	}
	return names
}
