package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/trace"
)

func TestDestMatch(t *testing.T) {
	for _, tc := range []struct {
		entry, ip string
		port      uint16
		hosts     []string
		want      bool
	}{
		{"127.0.0.0/8", "127.0.0.1", 7390, nil, true},
		{"127.0.0.0/8", "10.0.0.1", 80, nil, false},
		{"10.1.2.3", "10.1.2.3", 443, nil, true},
		{"10.1.2.3:443", "10.1.2.3", 80, nil, false},
		{"10.0.0.0/8:443", "10.9.9.9", 443, nil, true},
		{"::1", "::1", 53, nil, true},
		{"[::1]:53", "::1", 53, nil, true},
		{"fd00::/8", "fd12::1", 53, nil, true},
		{"example.com", "1.2.3.4", 443, []string{"EXAMPLE.com."}, true},
		{"example.com", "1.2.3.4", 443, []string{"a.example.com"}, false},
		{"*.example.com", "1.2.3.4", 443, []string{"a.b.example.com"}, true},
		{"*.example.com", "1.2.3.4", 443, []string{"example.com"}, false},
		{"*.example.com", "1.2.3.4", 443, []string{"badexample.com"}, false},
		{"*.example.com:443", "1.2.3.4", 80, []string{"a.example.com"}, false},
		{"deb.debian.org", "1.2.3.4", 80, nil, false},
	} {
		m, err := parseDest(tc.entry)
		if err != nil {
			t.Fatalf("%s: %v", tc.entry, err)
		}
		if got := m.match(tc.ip, tc.port, tc.hosts); got != tc.want {
			t.Errorf("%s vs %s:%d %v = %v, want %v", tc.entry, tc.ip, tc.port, tc.hosts, got, tc.want)
		}
	}
	for _, bad := range []string{"", "*.", "a*b.com", "1.2.3.4:0", "host:x"} {
		if _, err := parseDest(bad); err == nil {
			t.Errorf("parseDest(%q) accepted", bad)
		}
	}
}

func TestMatchPath(t *testing.T) {
	for _, tc := range []struct {
		pattern, path string
		want          bool
	}{
		{"/etc/passwd", "/etc/passwd", true},
		{"/etc/*", "/etc/passwd", true},
		{"/etc/*", "/etc/ssl/certs", false},
		{"/etc/**", "/etc/ssl/certs/x.pem", true},
		{"/etc/**", "/etc", true},
		{"/usr/**/bin/*", "/usr/local/bin/go", true},
		{"/usr/**/bin/*", "/usr/bin/go", true},
		{"*.pem", "/etc/ssl/x.pem", true},
		{"*.pem", "/etc/ssl/x.pem.bak", false},
		{"/root/.ssh/**", "/root/.sshx/a", false},
	} {
		if got := MatchPath(tc.pattern, tc.path); got != tc.want {
			t.Errorf("MatchPath(%q, %q) = %v, want %v", tc.pattern, tc.path, got, tc.want)
		}
	}
}

func testStep() Step {
	exit := 0
	now := time.Unix(1700000000, 0).UTC()
	return Step{
		Info: attest.Step{StepID: "s1", Status: attest.StatusExecuted, Instruction: "RUN wget http://127.0.0.1:5000/v2/",
			Locations: []attest.Location{{File: "Dockerfile", StartLine: 3, EndLine: 3}}},
		Run: &trace.Step{
			StepID: "s1",
			Processes: []trace.Process{
				{PID: 10, Exec: true, Binary: "/bin/sh", Argv: []string{"/bin/sh", "-c", "wget ..."}, ExitCode: &exit, Start: now},
				{PID: 11, PPID: 10, Exec: true, Binary: "/bin/wget", Argv: []string{"wget", "-q", "http://127.0.0.1:5000/v2/"}, Start: now},
			},
			Files:   []trace.FileOp{{Op: trace.OpCreate, Path: "/app/registry.json", PID: 11}, {Op: trace.OpWrite, Path: "/etc/hosts", PID: 10}},
			Network: []trace.Destination{{Protocol: "tcp", IP: "127.0.0.1", Port: 5000, Op: "connect", PIDs: []uint32{11}, Count: 1}},
			DNS:     []trace.DNSQuery{{PID: 11, Server: "127.0.0.53:53", Name: "registry.example.com", Type: "A", Answers: []string{"127.0.0.1"}}},
			Diff: trace.Diff{Digest: "sha256:00", Changes: []trace.FileChange{
				{Change: trace.ChangeCreated, Path: "/app/registry.json", Type: "file"},
				{Change: trace.ChangeModified, Path: "/usr/lib/secret.so", Type: "file"},
			}},
			Resources:    trace.Resources{WallNanos: 3e9, CPUUserNanos: 1e9, CPUSystemNanos: 5e8, PeakRSSBytes: 64 << 20, Processes: 2},
			Completeness: trace.Completeness{Complete: true, FollowedFromStart: true},
		},
	}
}

func rules(vs []Violation) string {
	var s []string
	for _, v := range vs {
		s = append(s, v.Rule)
	}
	return strings.Join(s, ",")
}

func mustCheck(t *testing.T, yaml string) []Violation {
	t.Helper()
	p, err := Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("parse %q: %v", yaml, err)
	}
	c, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	return c.Check(testStep())
}

func TestCheckRules(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"empty", ``, ""},
		{"flagged cidr", "egress:\n  flagged: [127.0.0.0/8]\n", "egress.flagged"},
		{"flagged by DNS answer name", "egress:\n  flagged: ['*.example.com']\n", "egress.flagged,egress.flagged"},
		{"flagged other", "egress:\n  flagged: [10.0.0.0/8, evil.test]\n", ""},
		{"allow-list hit", "egress:\n  allowed: ['registry.example.com:5000', '127.0.0.53:53']\n", ""},
		{"allow-list hit, resolver by CIDR", "egress:\n  allowed: ['registry.example.com:5000', '127.0.0.0/24']\n", ""},
		// The name came from a server the list admits by no address: the
		// step's own choice, which can call anything registry.example.com.
		{"allow-list name from a server not allowed", "egress:\n  allowed: ['registry.example.com:5000', '127.0.0.54:53']\n", "egress.allowed"},
		{"allow-list name from a server allowed by name", "egress:\n  allowed: ['registry.example.com:5000', 'registry.example.com']\n", "egress.allowed"},
		{"allow-list miss", "egress:\n  allowed: [deb.debian.org]\n", "egress.allowed"},
		{"empty allow-list", "egress:\n  allowed: []\n", "egress.allowed"},
		{"denied basename", "binaries:\n  denied: [wget]\n", "binaries.denied"},
		{"denied path", "binaries:\n  denied: [/usr/bin/curl, /bin/w*]\n", "binaries.denied"},
		{"deny write syscall", "files:\n  denyWrite: [/etc/**]\n", "files.denyWrite"},
		{"deny write diff", "files:\n  denyWrite: ['*.so']\n", "files.denyWrite"},
		{"wall", "resources:\n  maxWallSeconds: 2\n", "resources.maxWallSeconds"},
		{"cpu ok", "resources:\n  maxCPUSeconds: 2\n  maxPeakMemoryBytes: 1073741824\n", ""},
		{"mem", "resources:\n  maxPeakMemoryBytes: 1000\n", "resources.maxPeakMemoryBytes"},
		{"cel pass", "cel:\n- name: few-procs\n  expr: step.resources.processes < 10 && step.status == 'executed'\n", ""},
		{"cel fail", "cel:\n- name: no-wget\n  expr: '!step.binaries.exists(b, b.endsWith(\"/wget\"))'\n", "cel:no-wget"},
		{"cel net", "cel:\n- name: no-5000\n  expr: step.network.all(n, n.port != 5000)\n", "cel:no-5000"},
		{"cel location", "cel:\n- name: loc\n  expr: step.locations[0].startLine == 3 && step.instruction.startsWith('RUN')\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vs := mustCheck(t, tc.yaml)
			if got := rules(vs); got != tc.want {
				t.Fatalf("violations %q, want %q: %+v", got, tc.want, vs)
			}
			for _, v := range vs {
				if v.Event == "" {
					t.Errorf("violation %s has no event", v.Rule)
				}
			}
		})
	}
}

func TestViolationNamesProcess(t *testing.T) {
	vs := mustCheck(t, "egress:\n  flagged: [127.0.0.0/8]\n")
	if len(vs) != 1 || vs[0].PID != 11 || strings.Join(vs[0].Argv, " ") != "wget -q http://127.0.0.1:5000/v2/" || !strings.Contains(vs[0].Event, "127.0.0.1:5000") {
		t.Fatalf("got %+v", vs)
	}
}

func TestParseRejects(t *testing.T) {
	for _, y := range []string{
		"egress:\n  flaged: [1.2.3.4]\n",
		"egress:\n  flagged: ['*.']\n",
		"cel:\n- name: x\n  expr: step.\n",
		"cel:\n- name: x\n  expr: '1 + 1'\n",
		"cel:\n- expr: 'true'\n",
		"files:\n  denyWrite: ['/etc/[']\n",
	} {
		if _, err := Parse([]byte(y)); err == nil {
			t.Errorf("Parse(%q) accepted", y)
		}
	}
}

func TestCachedStepCEL(t *testing.T) {
	p, err := Parse([]byte("cel:\n- name: none\n  expr: step.network.size() == 0 && step.status == 'cached'\n"))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := Compile(p)
	if vs := c.Check(Step{Info: attest.Step{StepID: "x", Status: attest.StatusCached}}); len(vs) != 0 {
		t.Fatalf("cached step: %+v", vs)
	}
}

func TestExamplePolicies(t *testing.T) {
	for _, name := range []string{"flagged-egress.yaml", "allowlist.yaml"} {
		p, err := Load("../../examples/policies/" + name)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Compile(p)
		if err != nil {
			t.Fatal(err)
		}
		// Both must reject examples/hello's fetch from 127.0.0.1:5000.
		vs := c.Check(testStep())
		if !strings.Contains(rules(vs), "egress.") {
			t.Errorf("%s: violations %q, want an egress one", name, rules(vs))
		}
	}
}

// TestDeniedAppletHowEverCalled: busybox runs an applet named by argv[0]
// (a leading "-" stripped) or, after an argv[0] starting with "busybox",
// by the next argument; a base-name entry catches each (redteam13).
func TestDeniedAppletHowEverCalled(t *testing.T) {
	for _, c := range []struct {
		binary string
		argv   []string
		want   bool
	}{
		{"/bin/busybox", []string{"wget", "-q"}, true},
		{"/bin/busybox", []string{"busybox", "wget", "-q"}, true},
		{"/bin/busybox", []string{"/bin/busybox", "/usr/bin/wget"}, true},
		{"/bin/busybox", []string{"busybox", "busybox", "wget"}, true},
		{"/tmp/x", []string{"busybox-x", "wget"}, true},
		{"/bin/busybox", []string{"-wget", "-q"}, true},
		{"/usr/bin/wget", []string{"fetch"}, true},
		{"/bin/busybox", []string{"sh", "-c", "wget"}, false},
		{"/bin/busybox", []string{"busybox", "sh", "wget"}, false},
		{"/usr/bin/curl", []string{"curl", "wget"}, false},
		{"/bin/busybox", nil, false},
	} {
		if got := matchBinary("wget", c.binary, c.argv); got != c.want {
			t.Errorf("matchBinary(wget, %q, %q) = %v, want %v", c.binary, c.argv, got, c.want)
		}
	}
}

// TestDenyWriteEveryRecordedChange: files.denyWrite applies to every
// file-changing operation the tracer records, on its path and, where it
// is a file, its target; in a cache mount nothing else shows the change
// (redteam13).
func TestDenyWriteEveryRecordedChange(t *testing.T) {
	p, err := Parse([]byte("files:\n  denyWrite: [\"/cache/**\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		op           trace.FileOp
		wantViolated bool
	}{
		{trace.FileOp{Op: trace.OpCreate, Path: "/cache/x"}, true},
		{trace.FileOp{Op: trace.OpWrite, Path: "/cache/x"}, true},
		{trace.FileOp{Op: trace.OpTruncate, Path: "/cache/x"}, true},
		{trace.FileOp{Op: trace.OpUnlink, Path: "/cache/x"}, true},
		{trace.FileOp{Op: trace.OpRename, Path: "/tmp/x", Target: "/cache/x"}, true},
		{trace.FileOp{Op: trace.OpChmod, Path: "/cache/x"}, true},
		{trace.FileOp{Op: trace.OpChown, Path: "/cache/x"}, true},
		{trace.FileOp{Op: trace.OpLink, Path: "/tmp/x", Target: "/cache/x"}, true},
		{trace.FileOp{Op: trace.OpSymlink, Path: "/cache/x", Target: "/etc"}, true},
		{trace.FileOp{Op: trace.OpMkdir, Path: "/cache/x"}, true},
		{trace.FileOp{Op: trace.OpRmdir, Path: "/cache/x"}, true},
		{trace.FileOp{Op: trace.OpExchange, Path: "/cache/x.old", Target: "/cache/x"}, true},
		{trace.FileOp{Op: trace.OpExchange, Path: "/tmp/x", Target: "/cache/x"}, true},
		{trace.FileOp{Op: trace.OpMknod, Path: "/cache/x"}, true},
		{trace.FileOp{Op: trace.OpSetxattr, Path: "/cache/x", Target: "user.a"}, true},
		{trace.FileOp{Op: trace.OpRemovexattr, Path: "/cache/x", Target: "user.a"}, true},
		// A symlink's contents and an attribute's name are no file.
		{trace.FileOp{Op: trace.OpSymlink, Path: "/tmp/l", Target: "/cache/x"}, false},
		{trace.FileOp{Op: trace.OpSetxattr, Path: "/tmp/x", Target: "/cache/x"}, false},
	} {
		s := Step{Run: &trace.Step{Files: []trace.FileOp{tc.op}}}
		if got := rules(c.Check(s)) == "files.denyWrite"; got != tc.wantViolated {
			t.Errorf("%+v: violated %v, want %v", tc.op, got, tc.wantViolated)
		}
	}
}
