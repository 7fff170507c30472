package assemble

import (
	"fmt"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/tracer/probe"
)

// BenchmarkHandleFile feeds an open step the file events of untarring and
// deleting small files (create, chown, chmod, unlink per file).
func BenchmarkHandleFile(b *testing.B) {
	a := New(Options{})
	cg := "/buildtrace/0123456789abcdef0123456789abcdef/buildkit/c1"
	a.Handle(probe.Event{Kind: probe.KindCgroupMkdir, CgroupID: 1, Cgroup: &probe.CgroupInfo{Path: cg}, Time: time.Unix(1, 0)})
	a.Handle(probe.Event{Kind: probe.KindExec, CgroupID: 1, PID: 10, Exec: &probe.ExecInfo{Binary: "/bin/sh", TraceID: "0af7651916cd43dd8448eb211c80319c", FirstInCgroup: true}, Time: time.Unix(1, 0)})
	paths := make([]string, 1000)
	for i := range paths {
		paths[i] = fmt.Sprintf("/x/d%03d/f%05d.txt", i/200, i)
	}
	mode := uint32(0o644)
	uid := int64(0)
	ops := []string{"create", "chown", "chmod", "unlink"}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		f := &probe.FileInfo{Op: ops[i%4], Path: paths[(i/4)%len(paths)], Mode: &mode, UID: &uid, GID: &uid}
		a.Handle(probe.Event{Kind: probe.KindFile, CgroupID: 1, PID: 11, Time: time.Unix(2, int64(i)), File: f})
		i++
		if i%400_000 == 0 { // a step of 100,000 files ends; start a new one
			a = New(Options{})
			a.Handle(probe.Event{Kind: probe.KindCgroupMkdir, CgroupID: 1, Cgroup: &probe.CgroupInfo{Path: cg}, Time: time.Unix(1, 0)})
			a.Handle(probe.Event{Kind: probe.KindExec, CgroupID: 1, PID: 10, Exec: &probe.ExecInfo{Binary: "/bin/sh", TraceID: "0af7651916cd43dd8448eb211c80319c", FirstInCgroup: true}, Time: time.Unix(1, 0)})
		}
	}
}
