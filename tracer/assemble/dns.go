package assemble

import (
	"net/netip"
	"strings"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/tracer/probe"
)

// maxDNSQueries bounds the DNS questions kept per step; a resolver loop
// must not grow a step without limit.
const maxDNSQueries = 10000

type dnsKey struct {
	peer netip.AddrPort
	id   uint16
	name string
	typ  dnsmessage.Type
}

// dnsLog follows the DNS questions of one step and the addresses their
// answers named.
type dnsLog struct {
	queries []trace.DNSQuery
	index   map[dnsKey]int        // questions the step sent
	stray   map[dnsKey]int        // unconfirmed answers, by their own key
	hosts   map[netip.Addr]string // answered address → name that was asked
	// strayHosts: the same from unconfirmed answers, never trusted.
	strayHosts map[netip.Addr]string
	// strayAddrs: the addresses each unconfirmed answer's key named, for
	// a question that arrives after its answer.
	strayAddrs map[dnsKey][]netip.Addr
	dropped    int
}

// parseDNS parses a DNS message. A message over TCP carries a two-byte
// length prefix; the probe passes it as sent, so try without it too.
func parseDNS(b []byte) (dnsmessage.Header, []dnsmessage.Question, []dnsmessage.Resource, bool) {
	try := func(b []byte) (dnsmessage.Header, []dnsmessage.Question, []dnsmessage.Resource, bool) {
		var p dnsmessage.Parser
		h, err := p.Start(b)
		if err != nil {
			return h, nil, nil, false
		}
		qs, err := p.AllQuestions()
		if err != nil || len(qs) == 0 {
			return h, nil, nil, false
		}
		// A truncated answer section (the probe copies at most 4 KiB)
		// still yields the records before the cut.
		var rs []dnsmessage.Resource
		for {
			r, err := resource(&p)
			if err != nil {
				break
			}
			rs = append(rs, r)
		}
		return h, qs, rs, true
	}
	if h, qs, rs, ok := try(b); ok {
		return h, qs, rs, true
	}
	if len(b) > 2 {
		return try(b[2:])
	}
	return dnsmessage.Header{}, nil, nil, false
}

func resource(p *dnsmessage.Parser) (dnsmessage.Resource, error) {
	h, err := p.AnswerHeader()
	if err != nil {
		return dnsmessage.Resource{}, err
	}
	r := dnsmessage.Resource{Header: h}
	switch h.Type {
	case dnsmessage.TypeA:
		a, err := p.AResource()
		if err != nil {
			return r, err
		}
		r.Body = &a
	case dnsmessage.TypeAAAA:
		a, err := p.AAAAResource()
		if err != nil {
			return r, err
		}
		r.Body = &a
	case dnsmessage.TypeCNAME:
		c, err := p.CNAMEResource()
		if err != nil {
			return r, err
		}
		r.Body = &c
	default:
		if err := p.SkipAnswer(); err != nil {
			return r, err
		}
	}
	return r, nil
}

func dnsName(n dnsmessage.Name) string {
	return strings.TrimSuffix(strings.ToLower(n.String()), ".")
}

func dnsType(t dnsmessage.Type) string {
	return strings.TrimPrefix(t.String(), "Type")
}

// add takes one DNS message. A question the step sends is recorded; an
// answer counts only when it matches one: same message ID, question and
// type, from the server the question was sent to (the answer is read from
// the packet the kernel delivered, its source from the IP header). An answer
// that arrives before its question's event is confirmed by the question. Any other answer is
// recorded as unconfirmed, and the names it gives are never put on a
// destination's Hostname.
func (l *dnsLog) add(pid uint32, info *probe.DNSInfo) {
	h, qs, rs, ok := parseDNS(info.Payload)
	if !ok {
		return
	}
	if l.index == nil {
		l.index = make(map[dnsKey]int)
		l.stray = make(map[dnsKey]int)
		l.hosts = make(map[netip.Addr]string)
		l.strayHosts = make(map[netip.Addr]string)
		l.strayAddrs = make(map[dnsKey][]netip.Addr)
	}
	if info.Outgoing {
		if h.Response {
			return // the step answering someone (a DNS server it runs): not its question
		}
		for _, q := range qs {
			k := dnsKey{peer: info.Peer, id: h.ID, name: dnsName(q.Name), typ: q.Type}
			if _, ok := l.index[k]; ok {
				continue
			}
			if i, ok := l.stray[k]; ok {
				// Its answer came first: the packet hook that reads
				// answers can run before the system call that sent the
				// question returns. The answer is what the server sent
				// (read from the packet), to this question.
				q := &l.queries[i]
				q.PID, q.Unconfirmed = pid, false
				q.Answers, q.UnconfirmedAnswers = q.UnconfirmedAnswers, nil
				delete(l.stray, k)
				l.index[k] = i
				for _, a := range l.strayAddrs[k] {
					l.hosts[a] = k.name
				}
				delete(l.strayAddrs, k)
				continue
			}
			if len(l.queries) >= maxDNSQueries {
				l.dropped++
				continue
			}
			l.queries = append(l.queries, trace.DNSQuery{PID: pid, Server: info.Peer.String(), Name: k.name, Type: dnsType(q.Type)})
			l.index[k] = len(l.queries) - 1
		}
		return
	}
	if !h.Response {
		return // a question someone sent to a server the step runs
	}
	// alias maps a CNAME target back to the name that pointed at it.
	alias := make(map[string]string)
	for _, r := range rs {
		if c, ok := r.Body.(*dnsmessage.CNAMEResource); ok {
			alias[dnsName(c.CNAME)] = dnsName(r.Header.Name)
		}
	}
	asked := func(name string) string {
		for range 16 { // CNAME chains are short; a loop must not hang us
			prev, ok := alias[name]
			if !ok {
				break
			}
			name = prev
		}
		return name
	}
	for _, q := range qs {
		k := dnsKey{peer: info.Peer, id: h.ID, name: dnsName(q.Name), typ: q.Type}
		i, confirmed := l.index[k]
		if !confirmed {
			var ok bool
			if i, ok = l.stray[k]; !ok {
				if len(l.queries) >= maxDNSQueries {
					l.dropped++
					i = -1
				} else {
					l.queries = append(l.queries, trace.DNSQuery{PID: pid, Server: info.Peer.String(), Name: k.name, Type: dnsType(q.Type), Unconfirmed: true})
					i = len(l.queries) - 1
					l.stray[k] = i
				}
			}
		}
		hosts := l.hosts
		if !confirmed {
			hosts = l.strayHosts
		}
		for _, r := range rs {
			var ans string
			var addr netip.Addr
			switch b := r.Body.(type) {
			case *dnsmessage.AResource:
				addr = netip.AddrFrom4(b.A)
				ans = addr.String()
			case *dnsmessage.AAAAResource:
				addr = netip.AddrFrom16(b.AAAA)
				ans = addr.String()
			case *dnsmessage.CNAMEResource:
				ans = dnsName(b.CNAME)
			default:
				continue
			}
			if addr.IsValid() {
				name := asked(dnsName(r.Header.Name))
				if name != k.name {
					continue // an answer to another question of the message
				}
				hosts[addr] = name
				if !confirmed && i >= 0 {
					l.strayAddrs[k] = append(l.strayAddrs[k], addr)
				}
			}
			if i < 0 {
				continue
			}
			if confirmed {
				if !contains(l.queries[i].Answers, ans) {
					l.queries[i].Answers = append(l.queries[i].Answers, ans)
				}
			} else if !contains(l.queries[i].UnconfirmedAnswers, ans) {
				l.queries[i].UnconfirmedAnswers = append(l.queries[i].UnconfirmedAnswers, ans)
			}
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
