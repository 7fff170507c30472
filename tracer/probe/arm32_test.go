//go:build linux

package probe

import (
	"os"
	"strings"
	"testing"
)

// TestArm32Calls runs a 32-bit arm binary (testdata/arm32) in a tracked
// cgroup on an arm64 kernel: its calls go through the arm32 EABI table. No
// such kernel is here; hack/arm64-vm.sh runs this test in an emulated arm64
// machine and sets BUILDTRACE_ARM32_HELPER.
func TestArm32Calls(t *testing.T) {
	bin := os.Getenv("BUILDTRACE_ARM32_HELPER")
	if bin == "" {
		t.Skip("SKIP: needs an arm64 kernel with 32-bit support and BUILDTRACE_ARM32_HELPER (hack/arm64-vm.sh)")
	}
	requireRoot(t)
	p, c := startProbe(t)
	srv := tcpServer(t)
	cg := mkCgroup(t, randHex(t, 16), "arm32")
	cgID := inode(t, cg)
	dir := t.TempDir()
	if out, err := inCgroup(cg, dir, []string{"PATH=/bin"}, bin+" "+dir+" "+srv.String()).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", bin, err, out)
	}
	syncProbe(t, p)
	var got []string
	for _, ev := range c.all() {
		switch {
		case ev.CgroupID != cgID:
		case ev.File != nil:
			got = append(got, strings.TrimSpace(ev.File.Op+" "+strings.TrimPrefix(ev.File.Path, dir)+" "+strings.TrimPrefix(ev.File.Target, dir)))
		case ev.Net != nil:
			got = append(got, "connect "+ev.Net.Protocol+" "+ev.Net.Addr.String())
		}
	}
	all := "\n" + strings.Join(got, "\n") + "\n"
	for _, want := range []string{"create /a32.txt", "mkdir /d32", "rename /a32.txt /d32/b32.txt", "chmod /d32/b32.txt",
		"symlink /l32 tgt32", "unlink /l32", "unlink /d32/b32.txt", "connect tcp " + srv.String()} {
		if !strings.Contains(all, "\n"+want+"\n") {
			t.Errorf("no %q among the arm32 binary's events:%s", want, all)
		}
	}
}
