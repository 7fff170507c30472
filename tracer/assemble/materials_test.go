package assemble

import (
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/tracer/probe"
)

func fileChange(path string, n byte) trace.FileChange {
	return trace.FileChange{Change: trace.ChangeCreated, Path: path, Type: "file", Mode: 0o644, Size: int64(n), SHA256: "sha256:" + strings.Repeat(string(rune('a'+n%6)), 64)}
}

// TestMaterials: wget fetches into /app/x; curl downloads to a temp file
// that mv renames to /app/y; a shell writes /app/local without network;
// a process that only asked DNS writes /app/dnsonly; wget wrote
// /app/early before it connected. Only /app/x and /app/y are materials.
func TestMaterials(t *testing.T) {
	a := New(Options{})
	f := newFeed(a, 9, steptag.NewID([]byte("materials")), "c")
	f.mkdir(0)
	f.exec(1, 10, 1, traceA, "/bin/sh", "-c", "…")
	f.fork(2, 11, 10)
	f.exec(3, 11, 10, "", "/usr/bin/wget", "-q", "-O", "/app/x", "--referer", "http://127.0.0.1:5000/ref", "http://127.0.0.1:5000/v2/")
	f.file(4, 11, trace.OpCreate, "/app/early")
	registry := netip.MustParseAddrPort("127.0.0.1:5000")
	f.send(probe.Event{Kind: probe.KindNet, Time: at(5), PID: 11, Net: &probe.NetInfo{Op: "connect", Protocol: "tcp", Addr: registry}})
	f.file(6, 11, trace.OpCreate, "/app/x")
	f.exit(7, 11, 0, 0, 0)

	// curl, after a DNS answer for example.test.
	f.fork(10, 12, 10)
	f.exec(11, 12, 10, "", "/usr/bin/curl", "-fsSLo", "/tmp/dl.tmp", "-H", "Accept: */*", "https://example.test/pkg/y.tar.gz")
	server := netip.MustParseAddrPort("127.0.0.53:53")
	f.send(probe.Event{Kind: probe.KindNet, Time: at(12), PID: 12, Net: &probe.NetInfo{Op: "sendto", Protocol: "udp", Addr: server}})
	f.send(probe.Event{Kind: probe.KindDNS, Time: at(12), PID: 12, DNS: &probe.DNSInfo{Outgoing: true, Peer: server, Payload: dnsPayload(t, 7, false, "example.test.")}})
	hdr := dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("example.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60}
	f.send(probe.Event{Kind: probe.KindDNS, Time: at(13), PID: 12, DNS: &probe.DNSInfo{Peer: server, Payload: dnsPayload(t, 7, true, "example.test.",
		dnsmessage.Resource{Header: hdr, Body: &dnsmessage.AResource{A: [4]byte{10, 0, 0, 2}}})}})
	web := netip.MustParseAddrPort("10.0.0.2:443")
	f.send(probe.Event{Kind: probe.KindNet, Time: at(14), PID: 12, Net: &probe.NetInfo{Op: "connect", Protocol: "tcp", Addr: web}})
	f.file(15, 12, trace.OpCreate, "/tmp/dl.tmp")
	f.exit(16, 12, 0, 0, 0)
	f.fork(17, 13, 10)
	f.exec(18, 13, 10, "", "/bin/mv", "/tmp/dl.tmp", "/app/y")
	f.send(probe.Event{Kind: probe.KindFile, Time: at(19), PID: 13, File: &probe.FileInfo{Op: trace.OpRename, Path: "/tmp/dl.tmp", Target: "/app/y"}})
	f.exit(20, 13, 0, 0, 0)

	// A local file, and a process that only resolved a name.
	f.file(21, 10, trace.OpCreate, "/app/local")
	f.fork(22, 14, 10)
	f.exec(23, 14, 10, "", "/usr/bin/nslookup", "example.test")
	f.send(probe.Event{Kind: probe.KindNet, Time: at(24), PID: 14, Net: &probe.NetInfo{Op: "sendto", Protocol: "udp", Addr: server}})
	f.file(25, 14, trace.OpCreate, "/app/dnsonly")
	f.exit(26, 14, 0, 0, 0)
	f.exit(30, 10, 0, 0, 0)

	diff := goodDiff
	diff.Changes = []trace.FileChange{fileChange("/app/dnsonly", 1), fileChange("/app/early", 2), fileChange("/app/local", 3),
		fileChange("/app/x", 4), fileChange("/app/y", 5), {Change: trace.ChangeCreated, Path: "/app", Type: "dir"}}
	s := f.rmdir(40).Ended.Seal(SealInput{Diff: diff, Traffic: []probe.Traffic{
		{Protocol: "tcp", Addr: registry, BytesSent: 100, BytesReceived: 700},
		{Protocol: "tcp", Addr: web, BytesSent: 100, BytesReceived: 9000},
		{Protocol: "udp", Addr: server, BytesSent: 60, BytesReceived: 90},
	}})
	want := []trace.Material{
		{Path: "/app/x", SHA256: diff.Changes[3].SHA256, Size: 4, PID: 11, Binary: "/usr/bin/wget",
			Argv:     []string{"/usr/bin/wget", "-q", "-O", "/app/x", "--referer", "http://127.0.0.1:5000/ref", "http://127.0.0.1:5000/v2/"},
			Endpoint: trace.MaterialEndpoint{Protocol: "tcp", IP: "127.0.0.1", Port: 5000},
			URL:      &trace.MaterialURL{Scheme: "http", Host: "127.0.0.1", Port: 5000, Path: "/v2/", Method: "GET"}},
		{Path: "/app/y", SHA256: diff.Changes[4].SHA256, Size: 5, PID: 12, Binary: "/usr/bin/curl",
			Argv:     []string{"/usr/bin/curl", "-fsSLo", "/tmp/dl.tmp", "-H", "Accept: */*", "https://example.test/pkg/y.tar.gz"},
			Endpoint: trace.MaterialEndpoint{Protocol: "tcp", IP: "10.0.0.2", Port: 443, Hostname: "example.test"},
			URL:      &trace.MaterialURL{Scheme: "https", Host: "example.test", Port: 443, Path: "/pkg/y.tar.gz", Method: "GET"}},
	}
	if !reflect.DeepEqual(s.Materials, want) || s.MaterialsTruncated {
		t.Errorf("materials:\n got %+v\nwant %+v", s.Materials, want)
	}
	if got := s.Materials[0].URL.String(); got != "http://127.0.0.1:5000/v2/" {
		t.Errorf("URL = %s", got)
	}
	if got := s.Materials[1].URL.String(); got != "https://example.test/pkg/y.tar.gz" {
		t.Errorf("URL = %s", got)
	}
	if !s.Completeness.Complete {
		t.Errorf("materials must not make the step incomplete: %v", s.Completeness.Reasons)
	}
}

func TestArgvURL(t *testing.T) {
	d := trace.Destination{Protocol: "tcp", IP: "192.0.2.1", Port: 80}
	names := map[string]bool{"dl.example": true}
	for _, c := range []struct {
		argv []string
		file string
		want string // URL and method, "" for none
	}{
		{[]string{"wget", "http://192.0.2.1/a"}, "/a", "GET http://192.0.2.1/a"},
		{[]string{"wget", "--post-data=x", "http://192.0.2.1/a"}, "/a", " http://192.0.2.1/a"},
		{[]string{"curl", "-sXPOST", "http://dl.example/a?token=s3cret#frag"}, "/a", " http://dl.example/a"},
		{[]string{"curl", "-d", "x", "http://dl.example/a"}, "/a", " http://dl.example/a"},
		{[]string{"curl", "-o", "http://192.0.2.1/not-a-url", "http://user:pw@DL.example:80/b"}, "/b", "GET http://DL.example/b"},
		{[]string{"curl", "-x", "http://192.0.2.1:80", "http://elsewhere.example/"}, "/x", ""},
		{[]string{"python3", "fetch.py", "http://192.0.2.1/a"}, "/a", " http://192.0.2.1/a"},
		{[]string{"wget", "http://192.0.2.1:8080/a"}, "/a", ""},
		{[]string{"wget", "https://192.0.2.1/a"}, "/a", ""}, // port 443
		{[]string{"wget", "http://192.0.2.1/a", "http://192.0.2.1/b"}, "/dir/b", "GET http://192.0.2.1/b"},
		{[]string{"wget", "http://192.0.2.1/a", "http://192.0.2.1/b"}, "/dir/c", ""},
		{[]string{"wget", "ftp://192.0.2.1/a"}, "/a", ""},
	} {
		u := argvURL("/bin/busybox", c.argv, c.file, d, names)
		got := ""
		if u != nil {
			got = u.Method + " " + u.String()
		}
		if got != c.want {
			t.Errorf("argvURL(%q) = %q, want %q", c.argv, got, c.want)
		}
	}
}

func TestMaterialsRenameAwayAndCap(t *testing.T) {
	// The downloaded file was renamed away and /app/z written anew
	// locally: /app/z is no material.
	procs := []trace.Process{{PID: 5, Exec: true, Binary: "/usr/bin/wget", Argv: []string{"wget"}}, {PID: 6, Exec: true, Binary: "/bin/sh"}}
	st := &trace.Step{
		Processes: procs,
		Network:   []trace.Destination{{Protocol: "tcp", IP: "192.0.2.1", Port: 80, PIDs: []uint32{5}, Count: 1, BytesReceived: 10, First: at(1)}},
		Files: []trace.FileOp{{Op: trace.OpCreate, Path: "/app/z", PID: 5, Time: at(2)}, {Op: trace.OpRename, Path: "/app/z", Target: "/app/old", PID: 6, Time: at(3)},
			{Op: trace.OpCreate, Path: "/app/z", PID: 6, Time: at(4)}},
		Diff: trace.Diff{Changes: []trace.FileChange{fileChange("/app/z", 1), fileChange("/app/old", 2)}},
	}
	ms, _ := materials(st, nil)
	if len(ms) != 1 || ms[0].Path != "/app/old" || ms[0].PID != 5 {
		t.Errorf("materials = %+v", ms)
	}
	// A failed connect that received nothing is no source.
	st.Network[0].BytesReceived, st.Network[0].Failed = 0, 1
	if ms, _ := materials(st, nil); len(ms) != 0 {
		t.Errorf("failed connect gave materials %+v", ms)
	}
	st.Network[0].Failed = 0
	st.Diff.Changes = nil
	st.Files = nil
	for i := range trace.MaxMaterials + 1 {
		p := "/app/f" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + "/" + strconv.Itoa(i)
		st.Files = append(st.Files, trace.FileOp{Op: trace.OpWrite, Path: p, PID: 5, Time: at(2)})
		st.Diff.Changes = append(st.Diff.Changes, fileChange(p, 1))
	}
	ms, capped := materials(st, nil)
	if len(ms) != trace.MaxMaterials || !capped {
		t.Errorf("got %d materials (capped %v), want %d capped", len(ms), capped, trace.MaxMaterials)
	}
}

// TestMaterialsRenameChains: content followed through a rename chain and
// a hard link; a temp file reused for many downloads gives each target its
// own writer, in time linear in the operations.
func TestMaterialsRenameChains(t *testing.T) {
	procs := []trace.Process{{PID: 5, Exec: true, Binary: "/usr/bin/curl", Argv: []string{"curl"}}, {PID: 6, Exec: true, Binary: "/bin/mv"}, {PID: 7, Exec: true, Binary: "/usr/bin/curl"}}
	st := &trace.Step{
		Processes: procs,
		Network: []trace.Destination{{Protocol: "tcp", IP: "192.0.2.1", Port: 80, PIDs: []uint32{5}, Count: 1, BytesReceived: 10, First: at(1)},
			{Protocol: "tcp", IP: "192.0.2.2", Port: 80, PIDs: []uint32{7}, Count: 1, BytesReceived: 10, First: at(1)}},
		Files: []trace.FileOp{
			{Op: trace.OpCreate, Path: "/t/a", PID: 5, Time: at(2)},
			{Op: trace.OpRename, Path: "/t/a", Target: "/t/b", PID: 6, Time: at(3)},
			{Op: trace.OpRename, Path: "/t/b", Target: "/app/c", PID: 6, Time: at(4)},
			{Op: trace.OpLink, Path: "/app/c", Target: "/app/hard", PID: 6, Time: at(5)},
			{Op: trace.OpCreate, Path: "/t/a", PID: 7, Time: at(6)}, // a new /t/a, by another downloader
		},
		Diff: trace.Diff{Changes: []trace.FileChange{fileChange("/app/c", 1), fileChange("/app/hard", 2), fileChange("/t/a", 3)}},
	}
	ms, _ := materials(st, nil)
	var got []string
	for _, m := range ms {
		got = append(got, m.Path+" "+strconv.Itoa(int(m.PID))+" "+m.Endpoint.IP)
	}
	want := []string{"/app/c 5 192.0.2.1", "/app/hard 5 192.0.2.1", "/t/a 7 192.0.2.2"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("materials = %q, want %q", got, want)
	}

	const n = 20000
	st.Files, st.Diff.Changes = nil, nil
	for i := range n {
		target := "/app/" + strconv.Itoa(i)
		pid := uint32(5 + 2*(i%2))
		st.Files = append(st.Files, trace.FileOp{Op: trace.OpCreate, Path: "/tmp/dl", PID: pid, Time: at(2)},
			trace.FileOp{Op: trace.OpRename, Path: "/tmp/dl", Target: target, PID: 6, Time: at(2)})
		st.Diff.Changes = append(st.Diff.Changes, fileChange(target, 1))
	}
	ms, capped := materials(st, nil)
	if len(ms) != trace.MaxMaterials || !capped {
		t.Fatalf("got %d materials (capped %v)", len(ms), capped)
	}
	for _, m := range ms {
		i, _ := strconv.Atoi(strings.TrimPrefix(m.Path, "/app/"))
		if m.PID != uint32(5+2*(i%2)) {
			t.Fatalf("%s attributed to pid %d", m.Path, m.PID)
		}
	}
}
