package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/tracer/server"
)

// scan finds the container cgroups that exist at start-up (a restart while
// a build runs) and has the server follow them, as not complete.
func scan(root string, srv *server.Server, log *slog.Logger) error {
	// At the root, or below a buildkitd container's cgroup (up to
	// maxPrefixDepth levels down, e.g. /docker/buildx/<id>).
	var dirs []string
	for depth := 0; depth <= maxPrefixDepth; depth++ {
		parts := []string{root}
		for i := 0; i < depth; i++ {
			parts = append(parts, "*")
		}
		pattern := filepath.Join(append(parts, steptag.Root, "*", "buildkit", "*")...)
		d, err := filepath.Glob(pattern)
		if err != nil {
			return fmt.Errorf("listing %s: %w", pattern, err)
		}
		dirs = append(dirs, d...)
	}
	boot, err := bootTime()
	if err != nil {
		log.Warn("reading the boot time; adopted processes get no start time", "err", err)
	}
	n := 0
	for _, dir := range dirs {
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			continue
		}
		path := "/" + filepath.ToSlash(rel)
		if _, ok := steptag.ParseCgroup(path); !ok {
			continue
		}
		fi, err := os.Stat(dir)
		if err != nil {
			continue // gone meanwhile
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || !fi.IsDir() {
			continue
		}
		pids := cgroupPIDs(dir)
		if len(pids) == 0 {
			// Left behind by a runtime that died (a killed buildkitd):
			// nothing runs there and nothing will.
			continue
		}
		// The build is decided from the container's OCI bundle, never from
		// a process's environment, which it can rewrite.
		var procs []trace.Process
		for _, p := range pids {
			if pr, err := readProcess(p, boot); err == nil {
				procs = append(procs, pr)
			}
		}
		srv.Track(st.Ino, path, procs)
		n++
	}
	log.Debug("start-up scan done", "containers", n)
	return nil
}

// maxPrefixDepth is how deep below the root the start-up scan looks for a
// buildkitd container's step cgroups.
const maxPrefixDepth = 4

func cgroupPIDs(dir string) []uint32 {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []uint32
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.ParseUint(f, 10, 32); err == nil {
			out = append(out, uint32(n))
		}
	}
	return out
}

// userHZ is the unit of /proc/<pid>/stat's start time (USER_HZ, 100 on
// every Linux architecture buildtrace runs on).
const userHZ = 100

// bootTime reads when the machine booted, from /proc/stat's btime.
func bootTime() (time.Time, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			secs, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("parsing btime %q: %w", v, err)
			}
			return time.Unix(secs, 0), nil
		}
	}
	return time.Time{}, fmt.Errorf("no btime in /proc/stat")
}

// readProcess describes a running process from /proc: its argv (cmdline,
// never its environment), parent, real uid/gid and start time.
func readProcess(pid uint32, boot time.Time) (trace.Process, error) {
	dir := fmt.Sprintf("/proc/%d", pid)
	p := trace.Process{PID: pid}
	cmdline, err := os.ReadFile(dir + "/cmdline")
	if err != nil {
		return p, err
	}
	if c := strings.TrimRight(string(cmdline), "\x00"); c != "" {
		p.Argv = strings.Split(c, "\x00")
	}
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return p, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseUint(f[0], 10, 32)
		switch k {
		case "PPid":
			p.PPID = uint32(n)
		case "Uid", "Gid":
			// real, effective, saved, file system: the effective ID is
			// who the process runs as; the real one is kept when it differs.
			var eff uint64
			if len(f) > 1 {
				eff, _ = strconv.ParseUint(f[1], 10, 32)
			} else {
				eff = n
			}
			real := uint32(n)
			if k == "Uid" {
				p.UID = uint32(eff)
				if real != p.UID {
					p.RealUID = &real
				}
			} else {
				p.GID = uint32(eff)
				if real != p.GID {
					p.RealGID = &real
				}
			}
		}
	}
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return p, err
	}
	// Fields after the command name (which may hold spaces) start at ")".
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && !boot.IsZero() {
		f := strings.Fields(string(stat)[i+1:])
		if len(f) > 19 {
			if ticks, err := strconv.ParseUint(f[19], 10, 64); err == nil {
				p.Start = boot.Add(time.Duration(ticks) * time.Second / userHZ)
			}
		}
	}
	return p, nil
}
