package daemon

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
	"github.com/buildtrace/buildtrace/tracer/server"
)

// scan finds the container cgroups that exist at start-up (a restart while
// a build runs) and has the server follow them, as not complete.
func scan(root string, srv *server.Server, log *slog.Logger) error {
	pattern := filepath.Join(root, steptag.Root, "*", "buildkit", "*")
	dirs, err := filepath.Glob(pattern)
	if err != nil {
		return fmt.Errorf("listing %s: %w", pattern, err)
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
		var traceID string
		var pid uint32
		for _, p := range pids {
			if id := traceIDOf(p); id != "" {
				traceID, pid = id, p
				break
			}
		}
		if pid == 0 && len(pids) > 0 {
			pid = pids[0]
		}
		srv.Track(st.Ino, path, traceID, pid)
		n++
	}
	log.Debug("start-up scan done", "containers", n)
	return nil
}

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

// traceIDOf reads the build trace ID from process pid's TRACEPARENT, the
// way the probe does on a first exec. Nothing else of the environment is
// kept.
func traceIDOf(pid uint32) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return "" // the process ended, or is not ours to read
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		v, ok := bytes.CutPrefix(kv, []byte("TRACEPARENT="))
		if !ok {
			continue
		}
		parts := strings.Split(string(v), "-")
		if len(parts) == 4 && tracerapi.ValidTraceID(parts[1]) {
			return parts[1]
		}
		return ""
	}
	return ""
}
