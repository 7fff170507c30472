package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/buildtrace/buildtrace/pkg/trace"
)

// dnsOnLoopback answers every A question on 127.0.0.1:53/udp with addr.
func dnsOnLoopback(t *testing.T, addr [4]byte) {
	t.Helper()
	dnsResponder(t, "127.0.0.1", [][4]byte{addr})
}

// dnsResponder answers every A question on host:53/udp with addrs.
func dnsResponder(t *testing.T, host string, addrs [][4]byte) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", net.JoinHostPort(host, "53"))
	if err != nil {
		t.Fatalf("DNS responder on %s:53: %v", host, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var m dnsmessage.Message
			if m.Unpack(buf[:n]) != nil || len(m.Questions) != 1 {
				continue
			}
			q := m.Questions[0]
			m.Header.Response, m.Header.Authoritative = true, true
			m.Answers = nil
			if q.Type == dnsmessage.TypeA {
				for _, a := range addrs {
					m.Answers = append(m.Answers, dnsmessage.Resource{
						Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
						Body:   &dnsmessage.AResource{A: a},
					})
				}
			}
			if out, err := m.Pack(); err == nil {
				_, _ = pc.WriteTo(out, from)
			}
		}
	}()
}

// TestTracerNamesDestinations: a RUN resolves a name (on a DNS responder
// the test runs on 127.0.0.1:53) and fetches from the address it got; the
// step's destination carries the name, and the question and answer are in
// the trace.
func TestTracerNamesDestinations(t *testing.T) {
	l := tracerLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dnsOnLoopback(t, [4]byte{127, 0, 0, 3})
	ln, err := net.Listen("tcp4", "127.0.0.3:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "dependency") })}
	go srv.Serve(ln)
	defer srv.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	name := "dep-" + randHex(4) + ".buildtrace.test"

	b := newTracedBuild(t, l, fmt.Sprintf("nslookup %s 127.0.0.1 && wget -q -O /dep http://127.0.0.3:%d/", name, port))
	if res := b.run(ctx, l); res.Err != nil {
		t.Fatalf("%v\n%s", res.Err, res.Output)
	}
	bt := fetchSignedTrace(t, ctx, l, b.traceID)
	if len(bt.Steps) != 1 {
		t.Fatalf("want 1 step, got %d", len(bt.Steps))
	}
	s := bt.Steps[0]
	var dest *trace.Destination
	for i, d := range s.Network {
		if d.IP == "127.0.0.3" && int(d.Port) == port {
			dest = &s.Network[i]
		}
	}
	if dest == nil {
		t.Fatalf("no destination 127.0.0.3:%d in %+v", port, s.Network)
	}
	if dest.Hostname != name || dest.Protocol != "tcp" || dest.BytesReceived == 0 {
		t.Errorf("destination %+v: want hostname %s, tcp, bytes received", dest, name)
	}
	var asked bool
	for _, q := range s.DNS {
		if (q.Name == name+"." || q.Name == name) && q.Type == "A" && len(q.Answers) == 1 && q.Answers[0] == "127.0.0.3" {
			asked = true
		}
	}
	if !asked {
		t.Errorf("the question for %s and its answer are not in the trace: %+v", name, s.DNS)
	}
}
