package daemon

import (
	"os"
	"testing"
	"time"
)

// TestReadProcess reads this test process from /proc as the start-up scan
// reads a container's running processes.
func TestReadProcess(t *testing.T) {
	boot, err := bootTime()
	if err != nil {
		t.Fatal(err)
	}
	p, err := readProcess(uint32(os.Getpid()), boot)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Argv) == 0 || p.Argv[0] != os.Args[0] {
		t.Errorf("argv = %q, want it to start with %q", p.Argv, os.Args[0])
	}
	if p.PPID != uint32(os.Getppid()) || p.UID != uint32(os.Getuid()) || p.GID != uint32(os.Getgid()) {
		t.Errorf("ppid/uid/gid = %d/%d/%d, want %d/%d/%d", p.PPID, p.UID, p.GID, os.Getppid(), os.Getuid(), os.Getgid())
	}
	if p.Start.Before(boot) || p.Start.After(time.Now()) {
		t.Errorf("start %s is not between boot %s and now", p.Start, boot)
	}
}
