package bpf

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// The syscall tables in syscalls.h are checked against golang.org/x/sys/unix,
// whose zsysnum_linux_<GOARCH>.go files are generated from each
// architecture's kernel headers. Reading them as source (not importing
// them) checks every ABI from any build host.

// abiGoarch names the x/sys architecture whose numbers each table uses.
var abiGoarch = map[string]string{
	"X86_64": "amd64",
	"I386":   "386",
	"ARM64":  "arm64",
	"ARM32":  "arm", // EABI: arm64's compat table
}

// compat32 are the ABIs whose chown, lchown and fchown take 16-bit IDs.
var compat32 = map[string]bool{"I386": true, "ARM32": true}

// aliases are calls traced as another call (same arguments, wider types).
var aliases = map[string]string{
	"lsetxattr":       "SC_SETXATTR",
	"lremovexattr":    "SC_REMOVEXATTR",
	"truncate64":      "SC_TRUNCATE",
	"ftruncate64":     "SC_FTRUNCATE",
	"chown32":         "SC_CHOWN",
	"lchown32":        "SC_LCHOWN",
	"fchown32":        "SC_FCHOWN",
	"recvmmsg_time64": "SC_RECVMMSG",
	"sendfile64":      "SC_SENDFILE",
	"setuid32":        "SC_SETUID",
	"setgid32":        "SC_SETGID",
	"setreuid32":      "SC_SETREUID",
	"setregid32":      "SC_SETREGID",
	"setresuid32":     "SC_SETRESUID",
	"setresgid32":     "SC_SETRESGID",
	"setfsuid32":      "SC_SETFSUID",
	"setfsgid32":      "SC_SETFSGID",
}

type scEntry struct {
	nr   int64
	name string
	code string
	line int
}

var (
	tableStart = regexp.MustCompile(`^#define (SYSCALLS_\w+|SOCKETCALLS)\(X\)\s*\\$`)
	tableEntry = regexp.MustCompile(`^\s*X\((\d+), (\w+), (SC_\w+)\)\s*(\\?)$`)
	enumEntry  = regexp.MustCompile(`\bSC_[A-Z0-9_]+\b`)
)

// parseTables reads the X(...) tables and the codes of enum sc.
func parseTables(src string) (map[string][]scEntry, map[string]bool, error) {
	tables := map[string][]scEntry{}
	codes := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(src))
	cur, inEnum := "", false
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "enum sc {"):
			inEnum = true
		case inEnum:
			if strings.HasPrefix(line, "};") {
				inEnum = false
				break
			}
			code, _, _ := strings.Cut(line, "/*")
			for _, c := range enumEntry.FindAllString(code, -1) {
				codes[c] = true
			}
		case cur != "":
			m := tableEntry.FindStringSubmatch(line)
			if m == nil {
				return nil, nil, fmt.Errorf("syscalls.h:%d: in %s, not an X(number, name, code) line: %q", n, cur, line)
			}
			nr, err := strconv.ParseInt(m[1], 10, 64)
			if err != nil {
				return nil, nil, fmt.Errorf("syscalls.h:%d: %w", n, err)
			}
			tables[cur] = append(tables[cur], scEntry{nr: nr, name: m[2], code: m[3], line: n})
			if m[4] == "" {
				cur = ""
			}
		default:
			if m := tableStart.FindStringSubmatch(line); m != nil {
				cur = strings.TrimPrefix(m[1], "SYSCALLS_")
			}
		}
	}
	return tables, codes, sc.Err()
}

// sysnums reads SYS_* constants from x/sys/unix's zsysnum_linux_<goarch>.go.
func sysnums(dir, goarch string) (map[string]int64, error) {
	path := filepath.Join(dir, "unix", "zsysnum_linux_"+goarch+".go")
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		return nil, fmt.Errorf("reading x/sys syscall numbers: %w", err)
	}
	nums := map[string]int64{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, id := range vs.Names {
				if i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.INT {
					continue
				}
				v, err := strconv.ParseInt(lit.Value, 0, 64)
				if err != nil {
					return nil, fmt.Errorf("%s: %s: %w", path, id.Name, err)
				}
				nums[id.Name] = v
			}
		}
	}
	if len(nums) < 100 {
		return nil, fmt.Errorf("%s: only %d SYS_ constants; not a syscall number file", path, len(nums))
	}
	return nums, nil
}

// wantCode is the code a call's name says it has in an ABI.
func wantCode(abi, name string) string {
	if c, ok := aliases[name]; ok {
		return c
	}
	if compat32[abi] && (name == "chown" || name == "lchown" || name == "fchown") {
		return "SC_" + strings.ToUpper(name) + "16"
	}
	return "SC_" + strings.ToUpper(name)
}

// checkTables returns every disagreement of the syscall tables in src
// with the kernel's numbers (nums: per ABI, x/sys's SYS_* constants).
func checkTables(src string, nums map[string]map[string]int64) []string {
	tables, codes, err := parseTables(src)
	if err != nil {
		return []string{err.Error()}
	}
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	traced := map[string]bool{} // names any ABI's table traces
	for abi := range abiGoarch {
		if len(tables[abi]) == 0 {
			bad("syscalls.h: no SYSCALLS_%s table", abi)
		}
		for _, e := range tables[abi] {
			traced[e.name] = true
		}
	}
	for abi, goarch := range abiGoarch {
		byNr := map[int64]string{}
		have := map[string]bool{}
		for _, e := range tables[abi] {
			have[e.name] = true
			if prev, dup := byNr[e.nr]; dup {
				bad("syscalls.h:%d: %s: %d is both %s and %s", e.line, abi, e.nr, prev, e.name)
			}
			byNr[e.nr] = e.name
			got, ok := nums[abi]["SYS_"+strings.ToUpper(e.name)]
			switch {
			case !ok:
				bad("syscalls.h:%d: %s: %s is no %s system call (x/sys/unix has no SYS_%s)", e.line, abi, e.name, goarch, strings.ToUpper(e.name))
			case got != e.nr:
				bad("syscalls.h:%d: %s: %s is %d here, %d in x/sys/unix (%s)", e.line, abi, e.name, e.nr, got, goarch)
			}
			if want := wantCode(abi, e.name); e.code != want {
				bad("syscalls.h:%d: %s: %s is traced as %s, want %s", e.line, abi, e.name, e.code, want)
			}
			if !codes[e.code] {
				bad("syscalls.h:%d: %s: %s is not in enum sc", e.line, abi, e.code)
			}
		}
		// A call one ABI traces must be traced in every ABI that has it,
		// or a step could make it unseen by switching ABI.
		for name := range traced {
			if nr, ok := nums[abi]["SYS_"+strings.ToUpper(name)]; ok && !have[name] {
				bad("syscalls.h: %s: %s (%d on %s) is missing; another ABI's table traces it", abi, name, nr, goarch)
			}
		}
	}
	return errs
}

func xsysDir(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(gobin, "list", "-m", "-f", "{{.Dir}}", "golang.org/x/sys").Output()
	if err != nil {
		t.Fatalf("locating golang.org/x/sys (go list -m): %v", err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		t.Fatal("go list -m golang.org/x/sys: module not downloaded (run go mod download)")
	}
	return dir
}

func loadNums(t *testing.T) map[string]map[string]int64 {
	t.Helper()
	dir := xsysDir(t)
	nums := map[string]map[string]int64{}
	for abi, goarch := range abiGoarch {
		n, err := sysnums(dir, goarch)
		if err != nil {
			t.Fatal(err)
		}
		nums[abi] = n
	}
	return nums
}

func readHeader(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("syscalls.h")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSyscallTables checks the x86_64, i386, arm64 and arm32 tables.
func TestSyscallTables(t *testing.T) {
	src := readHeader(t)
	tables, _, err := parseTables(src)
	if err != nil {
		t.Fatal(err)
	}
	for abi := range abiGoarch {
		t.Logf("%s: %d calls", abi, len(tables[abi]))
	}
	for _, e := range checkTables(src, loadNums(t)) {
		t.Error(e)
	}
}

// TestSyscallTablesCatchMistakes shows the check fails on the mistakes it
// is for: a wrong arm64 number, an x86-only call in the arm64 table, a
// call missing from one ABI, a wrong code.
func TestSyscallTablesCatchMistakes(t *testing.T) {
	src := readHeader(t)
	nums := loadNums(t)
	for _, c := range []struct{ what, old, new, want string }{
		{"wrong number", "X(56, openat, SC_OPENAT)", "X(57, openat, SC_OPENAT)", "openat is 57 here, 56 in x/sys/unix"},
		{"not an arm64 call", "X(56, openat, SC_OPENAT)", "X(56, openat, SC_OPENAT) \\\n\tX(2, open, SC_OPEN)", "open is no arm64 system call"},
		{"missing", "\tX(276, renameat2, SC_RENAMEAT2) \\\n", "", "ARM64: renameat2 (276 on arm64) is missing"},
		{"wrong code", "X(374, sendmmsg, SC_SENDMMSG)", "X(374, sendmmsg, SC_SENDMSG)", "sendmmsg is traced as SC_SENDMSG"},
		{"16-bit IDs", "X(95, fchown, SC_FCHOWN16) \\\n\tX(102", "X(95, fchown, SC_FCHOWN) \\\n\tX(102", "fchown is traced as SC_FCHOWN, want SC_FCHOWN16"},
	} {
		if !strings.Contains(src, c.old) {
			t.Fatalf("%s: syscalls.h no longer has %q; update this test", c.what, c.old)
		}
		errs := checkTables(strings.Replace(src, c.old, c.new, 1), nums)
		if !strings.Contains(strings.Join(errs, "\n"), c.want) {
			t.Errorf("%s: check did not report %q; got %q", c.what, c.want, errs)
		}
	}
}

// TestSocketcallTable checks socketcall's call numbers against the
// kernel's uapi header when it is installed (Debian: linux-libc-dev).
func TestSocketcallTable(t *testing.T) {
	const hdr = "/usr/include/linux/net.h"
	b, err := os.ReadFile(hdr)
	if os.IsNotExist(err) {
		t.Skipf("SKIP: %s not installed (linux-libc-dev): socketcall numbers not checked", hdr)
	}
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	for _, m := range regexp.MustCompile(`(?m)^#define SYS_(\w+)\s+(\d+)`).FindAllStringSubmatch(string(b), -1) {
		v, _ := strconv.ParseInt(m[2], 10, 64)
		want[strings.ToLower(m[1])] = v
	}
	tables, _, err := parseTables(readHeader(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(tables["SOCKETCALLS"]) == 0 {
		t.Fatal("syscalls.h: no SOCKETCALLS table")
	}
	for _, e := range tables["SOCKETCALLS"] {
		if got, ok := want[e.name]; !ok || got != e.nr {
			t.Errorf("syscalls.h:%d: socketcall %s is %d here, %s has %d (found: %v)", e.line, e.name, e.nr, hdr, got, ok)
		}
		if w := wantCode("I386", e.name); e.code != w {
			t.Errorf("syscalls.h:%d: socketcall %s is traced as %s, want %s", e.line, e.name, e.code, w)
		}
	}
}
