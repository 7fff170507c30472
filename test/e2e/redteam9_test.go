package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/test/lab"
)

// TestRedTeam9DNSAnswerFromTheStep: a RUN step (default capabilities, no raw
// socket, one thread) asks a trusted resolver for deb.debian.org, which
// honestly answers 192.0.2.10, and then makes the tracer take an answer of
// its own, "deb.debian.org A 127.0.0.1", for the resolver's
// (testdata/redteam9/dnsforge.c):
//
//   - addrlen0: the step sends its answer to its own socket and receives it
//     with recvfrom(…, &from, &len) with len 0 and from already holding the
//     resolver's address: the kernel writes no byte of the source address,
//     the probe reads the step's bytes as the sender;
//   - pktinfo: the step asks on a socket connected to the resolver (as
//     glibc does); a second socket, bound to port 53 on another loopback
//     address, sends the answer with an IP_PKTINFO control message naming
//     the resolver's address as the source (no privilege needed for a local
//     address; IP_TRANSPARENT, which CAP_NET_RAW allows, lifts even that).
//
// The step then fetches from the lab registry (127.0.0.1:5000). Under an
// allow-list of the resolver and deb.debian.org verify must refuse, and the
// signed trace must not call 127.0.0.1 "deb.debian.org" (confirmed).
//
// "race": the step asks on a connected socket while a second thread keeps
// writing its own answer into the receive buffer, which the probe reads
// after the kernel copied the resolver's.
//
// "own resolver": the step asks, on a connected socket, a server of its own
// choosing instead, which calls itself and 127.0.0.1 deb.debian.org. Its
// answers are real (the trace may confirm them), but the allow-list, which
// names the trusted resolver by address, must not admit the step's server,
// nor the registry, through the name that server gave. The
// honest twin asks, on a connected socket, a resolver that does answer
// 127.0.0.1: its name stays confirmed and verify accepts it.
func TestRedTeam9DNSAnswerFromTheStep(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	// The resolver the forging steps ask answers 192.0.2.10; the honest
	// twin's answers 127.0.0.1, the registry's address, for real.
	// ownResolver stands for a server of the step's choosing (on the
	// internet, the attacker's): it calls itself and the registry
	// deb.debian.org.
	const resolver, honestResolver, ownResolver = "127.0.0.159", "127.0.0.160", "127.0.0.162"
	rt7Resolver(t, resolver)
	dnsResponder(t, honestResolver, [][4]byte{{127, 0, 0, 1}})
	dnsResponder(t, ownResolver, [][4]byte{{127, 0, 0, 162}, {127, 0, 0, 1}})
	forge := staticTestdataC(t, "redteam9", "dnsforge")
	for _, tc := range []struct {
		name, mode string
		ask, trust string // the resolver the step asks, the one the policy allows
		honest     bool
	}{
		{"honest", "honest", honestResolver, honestResolver, true},
		{"addrlen0", "addrlen0", resolver, resolver, false},
		{"pktinfo", "pktinfo", resolver, resolver, false},
		{"own resolver", "honest", ownResolver, resolver, false},
		{"race", "race", resolver, resolver, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resolver := tc.ask
			policyYAML := "egress:\n  allowed: [deb.debian.org, \"" + tc.trust + ":53\"]\n"
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			df := dockerfile(l, "FROM BASE\n"+
				"COPY --chmod=0755 dnsforge /usr/local/bin/dnsforge\n"+
				"RUN /usr/local/bin/dnsforge "+tc.mode+" "+resolver+" deb.debian.org && wget -q -O /dev/null http://127.0.0.1:5000/v2/ && echo "+randHex(8)+" > /fetched\n")
			dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "dnsforge": forge})
			ref := l.Ref("redteam9-dnsforge-" + strings.ReplaceAll(tc.name, " ", "-"))
			res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
			for _, ln := range strings.Split(res.Output, "\n") {
				if strings.Contains(ln, "RT9") {
					t.Logf("build: %s", strings.TrimSpace(ln))
				}
			}
			if tc.mode != "honest" && !strings.Contains(res.Output, "the step's own answer: yes") {
				t.Fatalf("the step did not receive its own answer:\n%s", res.Output)
			}
			b := rtSignedBuild(t, ctx, l, ref)
			for _, st := range b.Steps {
				for _, q := range st.DNS {
					t.Logf("signed DNS entry of step %s (complete %v): %+v", st.StepID, st.Completeness.Complete, q)
				}
				for _, d := range st.Network {
					t.Logf("signed destination of step %s: %s %s %s:%d hostname %q unconfirmed %q", st.StepID, d.Protocol, d.Op, d.IP, d.Port, d.Hostname, d.HostnameUnconfirmed)
					if tc.honest && d.IP == "127.0.0.1" && d.Port == 5000 && d.Hostname != "deb.debian.org" {
						t.Errorf("the honest step's destination 127.0.0.1:5000 lost its confirmed name deb.debian.org")
					}
					if tc.mode != "honest" && d.IP == "127.0.0.1" && d.Hostname == "deb.debian.org" {
						t.Errorf("the signed trace names 127.0.0.1:%d \"deb.debian.org\" (confirmed), from an answer the resolver never sent (it said 192.0.2.10)", d.Port)
					}
				}
			}
			policy := writePolicy(t, policyYAML)
			out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub, "--policy", policy)
			t.Logf("verify --policy %q: exit %d\n%s", policyYAML, code, out)
			if tc.honest && code != 0 {
				t.Errorf("verify refused an honest step that asked the allowed resolver and fetched from the address it answered")
			}
			if !tc.honest && code == 0 {
				t.Errorf("verify accepted a step that fetched from the lab registry (127.0.0.1:5000) under an allow-list of deb.debian.org and the trusted resolver: a DNS answer the trusted resolver never gave made 127.0.0.1 \"deb.debian.org\"")
			}
		})
	}
}

// TestRedTeam9UDPLitePortUnrecorded: a RUN step sends two UDP-Lite datagrams
// with one sendmmsg, the first to 127.0.0.1:5000, the second to
// 127.0.0.161:8080, where the test listens (testdata/redteam9/udplite.c).
// The syscall hook reads the first message's address only; the second is
// seen by the packet counters, which must keep its port: a policy flagging
// 127.0.0.161:8080 must refuse the step, and the signed trace must name the
// port.
func TestRedTeam9UDPLitePortUnrecorded(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const target = "127.0.0.161:8080"
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 136 /* IPPROTO_UDPLITE */)
	if err != nil {
		t.Skipf("no UDP-Lite on this kernel: %v", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: 8080, Addr: [4]byte{127, 0, 0, 161}}); err != nil {
		syscall.Close(fd)
		t.Fatalf("listening on udplite %s: %v", target, err)
	}
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 256)
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err == nil {
			got <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { syscall.Close(fd) })

	df := dockerfile(l, "FROM BASE\n"+
		"COPY --chmod=0755 udplite /usr/local/bin/udplite\n"+
		"RUN /usr/local/bin/udplite 127.0.0.1:5000 "+target+" && echo "+randHex(8)+" > /sent\n")
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "udplite": staticTestdataC(t, "redteam9", "udplite")})
	ref := l.Ref("redteam9-udplite")
	res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
	if !strings.Contains(res.Output, "RT9 UDPLITE sent 2") {
		t.Fatalf("the step did not send:\n%s", res.Output)
	}
	select {
	case m := <-got:
		t.Logf("the listener on udplite %s received %q", target, m)
	case <-time.After(10 * time.Second):
		t.Fatalf("the listener on udplite %s received nothing", target)
	}
	b := rtSignedBuild(t, ctx, l, ref)
	named := false
	for _, st := range b.Steps {
		for _, d := range st.Network {
			t.Logf("signed destination of step %s: %s %s %s:%d sent %d", st.StepID, d.Protocol, d.Op, d.IP, d.Port, d.BytesSent)
			if d.IP == "127.0.0.161" && d.Port == 8080 {
				named = true
			}
		}
	}
	if !named {
		t.Errorf("the signed trace has no destination %s, which the step reached", target)
	}
	policy := writePolicy(t, "egress:\n  flagged: [\""+target+"\"]\n")
	rtPolicyRefuses(t, l, ref, policy, fmt.Sprintf("a step that sent to %s under a policy flagging it", target))
}

// TestRedTeam9OtherWaysOut: a RUN step reaches 127.0.0.163:8081 (a TCP and
// UDP listener of the test) without a plain connect to it
// (testdata/redteam9/netmix.c): TCP Fast Open with sendto(MSG_FASTOPEN), no
// connect; TCP_FASTOPEN_CONNECT; an AF_INET6 socket to ::ffff:127.0.0.163;
// sendto with another address on a UDP socket connected to 127.0.0.1:5000;
// connect(AF_UNSPEC) and a new connect, then write(2). Each time the signed
// trace must name 127.0.0.163:8081 and an allow-list of 127.0.0.1:5000 must
// refuse the step.
func TestRedTeam9OtherWaysOut(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	const target = "127.0.0.163:8081"
	got := make(chan string, 16)
	ln, err := net.Listen("tcp4", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 64)
				n, _ := c.Read(b)
				got <- "tcp " + string(b[:n])
			}()
		}
	}()
	pc, err := net.ListenPacket("udp4", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		b := make([]byte, 64)
		for {
			n, _, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			got <- "udp " + string(b[:n])
		}
	}()
	netmix := staticTestdataC(t, "redteam9", "netmix")
	for _, mode := range []string{"fastopen", "foconnect", "mapped", "udpother", "unspec"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			df := dockerfile(l, "FROM BASE\n"+
				"COPY --chmod=0755 netmix /usr/local/bin/netmix\n"+
				"RUN /usr/local/bin/netmix "+mode+" "+target+" && echo "+randHex(8)+" > /sent\n")
			dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "netmix": netmix})
			ref := l.Ref("redteam9-netmix-" + mode)
			res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
			if !strings.Contains(res.Output, "RT9 NETMIX "+mode+" sent") {
				t.Fatalf("the step did not send:\n%s", res.Output)
			}
			select {
			case m := <-got:
				t.Logf("the listener on %s received %q", target, strings.TrimSpace(m))
			case <-time.After(10 * time.Second):
				t.Fatalf("the listener on %s received nothing", target)
			}
			b := rtSignedBuild(t, ctx, l, ref)
			named := false
			for _, st := range b.Steps {
				for _, d := range st.Network {
					t.Logf("signed destination: %s %s %s:%d sent %d", d.Protocol, d.Op, d.IP, d.Port, d.BytesSent)
					if d.IP == "127.0.0.163" && d.Port == 8081 {
						named = true
					}
				}
			}
			if !named {
				t.Errorf("the signed trace has no destination %s, which the step reached", target)
			}
			policy := writePolicy(t, "egress:\n  allowed: [\"127.0.0.1:5000\"]\n")
			rtPolicyRefuses(t, l, ref, policy, fmt.Sprintf("a step that reached %s under an allow-list of 127.0.0.1:5000", target))
		})
	}
}

// TestRedTeam9PassedSocket: another local user (uid 65534, no privilege)
// connects a TCP socket to 127.0.0.164:8082 (a listener of the test) and
// hands it over an abstract unix socket; a RUN step (host network) takes it
// and writes to it (testdata/redteam9/sockfd.c), with write(2) or, in the
// second build, writev(2) (musl's stdio). The socket belongs to the
// helper's cgroup, so the packet counters charge the helper, and write on a
// socket is no network event: verify accepted the step under a deny-all
// allow-list, its trace showing nothing. The probe records I/O on a socket
// made outside the step's cgroup (foreign_sock, bpf/net.bpf.c): the signed
// trace must name the destination (foreignSocket) and call the step
// incomplete, and verify must refuse.
func TestRedTeam9PassedSocket(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	if os.Geteuid() != 0 {
		t.Skip("SKIP LOUDLY: running the helper as another user needs root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	const target = "127.0.0.164:8082"
	got := make(chan string, 4)
	ln, err := net.Listen("tcp4", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 64)
				n, _ := c.Read(b)
				got <- string(b[:n])
			}()
		}
	}()
	hdir, err := os.MkdirTemp("", "rt9-sockfd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(hdir) })
	if err := os.Chmod(hdir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := staticTestdataC(t, "redteam9", "sockfd")
	helper := filepath.Join(hdir, "sockfd")
	if err := os.WriteFile(helper, []byte(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	name := "rt9fd-" + randHex(8)
	cmd := exec.CommandContext(ctx, helper, name, target)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.Contains(line, "RT9 SOCKFD ready uid 65534") {
		t.Fatalf("the other user's helper did not start: %q %v", line, err)
	}
	for _, how := range []string{"write", "writev"} {
		t.Run(how, func(t *testing.T) {
			df := dockerfile(l, "FROM BASE\n"+
				"COPY --chmod=0755 sockfd /usr/local/bin/sockfd\n"+
				"RUN /usr/local/bin/sockfd take "+name+" "+how+" && echo "+randHex(8)+" > /done\n")
			dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "sockfd": bin})
			ref := l.Ref("redteam9-sockfd-" + how)
			res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
			if !strings.Contains(res.Output, "RT9 SOCKFD wrote to the passed socket with "+how) {
				t.Fatalf("the step did not write:\n%s", res.Output)
			}
			select {
			case m := <-got:
				t.Logf("the listener on %s received %q", target, strings.TrimSpace(m))
			case <-time.After(10 * time.Second):
				t.Fatalf("the listener on %s received nothing", target)
			}
			b := rtSignedBuild(t, ctx, l, ref)
			named, incomplete := false, false
			for _, st := range b.Steps {
				for _, d := range st.Network {
					t.Logf("signed destination: %s %s %s:%d sent %d foreignSocket %v", d.Protocol, d.Op, d.IP, d.Port, d.BytesSent, d.ForeignSocket)
					if d.IP == "127.0.0.164" && d.Port == 8082 && d.Protocol == "tcp" && d.ForeignSocket {
						named = true
					}
				}
				t.Logf("step %s: complete %v, reasons %q, unobserved %v", st.StepID, st.Completeness.Complete, st.Completeness.Reasons, st.Completeness.Unobserved)
				if !st.Completeness.Complete && st.Completeness.Unobserved["foreign_socket"] > 0 {
					incomplete = true
				}
			}
			if !named {
				t.Errorf("the signed trace has no destination %s (foreignSocket), which the step wrote to", target)
			}
			if !incomplete {
				t.Errorf("no signed step is incomplete for a socket made outside it (unobserved.foreign_socket)")
			}
			policy := writePolicy(t, "egress:\n  allowed: []\n")
			out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub, "--policy", policy)
			t.Logf("verify --policy (egress.allowed: []): exit %d\n%s", code, out)
			if code == 0 {
				t.Errorf("verify accepted, under a deny-all allow-list, a step that wrote to %s on a socket another local user passed it", target)
			}
			if !strings.Contains(out, "127.0.0.164:8082") {
				t.Errorf("verify's refusal does not name %s", target)
			}
		})
	}
}

// TestRedTeam9IPv6ExtensionHeader: a RUN step sends two UDP datagrams over
// IPv6 with one sendmmsg, on a socket with a destination-options header
// (IPV6_DSTOPTS; CAP_NET_RAW is a default capability): the first to
// [::1]:9, the second to [::1]:8083, where the test listens
// (testdata/redteam9/v6opts.c). The probe reads the first message's address
// only; the packet counters must find the UDP header behind the extension
// header, or the second is "ip60 ::1:0": a policy flagging [::1]:8083 must
// refuse the step.
func TestRedTeam9IPv6ExtensionHeader(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const target = "[::1]:8083"
	pc, err := net.ListenPacket("udp6", target)
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	t.Cleanup(func() { pc.Close() })
	got := make(chan string, 4)
	go func() {
		b := make([]byte, 64)
		for {
			n, _, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			got <- string(b[:n])
		}
	}()
	df := dockerfile(l, "FROM BASE\n"+
		"COPY --chmod=0755 v6opts /usr/local/bin/v6opts\n"+
		"RUN /usr/local/bin/v6opts 9 8083 && echo "+randHex(8)+" > /sent\n")
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "v6opts": staticTestdataC(t, "redteam9", "v6opts")})
	ref := l.Ref("redteam9-v6opts")
	res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
	if !strings.Contains(res.Output, "RT9 V6OPTS sent 2") {
		t.Fatalf("the step did not send:\n%s", res.Output)
	}
	select {
	case m := <-got:
		t.Logf("the listener on %s received %q", target, m)
	case <-time.After(10 * time.Second):
		t.Fatalf("the listener on %s received nothing", target)
	}
	b := rtSignedBuild(t, ctx, l, ref)
	named := false
	for _, st := range b.Steps {
		for _, d := range st.Network {
			t.Logf("signed destination: %s %s %s:%d sent %d", d.Protocol, d.Op, d.IP, d.Port, d.BytesSent)
			if d.IP == "::1" && d.Port == 8083 && d.Protocol == "udp" {
				named = true
			}
		}
	}
	if !named {
		t.Errorf("the signed trace has no destination udp %s, which the step reached", target)
	}
	policy := writePolicy(t, "egress:\n  flagged: [\"[::1]:8083\"]\n")
	rtPolicyRefuses(t, l, ref, policy, fmt.Sprintf("a step that sent to %s under a policy flagging it", target))
}
