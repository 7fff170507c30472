package probe

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// argvRecords builds what the kernel writes for an exec of pid with argv:
// the continuation records, then the exec record.
func argvRecords(pid uint32, cg, token uint64, argv []string) (conts [][]byte, exec []byte) {
	b := []byte(strings.Join(argv, "\x00") + "\x00")
	first := b[:min(len(b), argvFirst)]
	rest := b[len(first):]
	var sent uint64
	for seq := uint32(1); len(rest) > 0; seq++ {
		n := min(len(rest), argvChunk)
		conts = append(conts, rawRecord(kindArgvCont, pid, cg, 0, [5]uint32{seq}, [5]uint64{token}, rest[:n]))
		sent += uint64(n)
		rest = rest[n:]
	}
	exec = rawRecord(KindExec, pid, cg, 0, [5]uint32{0, 0, uint32(len(conts))}, [5]uint64{token, sent}, []byte("/bin/true"), first, []byte("/"), []byte("/bin/true"))
	return conts, exec
}

func rawRecord(kind Kind, pid uint32, cg uint64, flags uint16, a [5]uint32, bs [5]uint64, blobs ...[]byte) []byte {
	rec := make([]byte, headerSize)
	le := binary.LittleEndian
	le.PutUint64(rec[8:], cg)
	for i, v := range bs {
		le.PutUint64(rec[16+8*i:], v)
	}
	le.PutUint32(rec[56:], pid)
	le.PutUint32(rec[60:], pid)
	for i, v := range a {
		le.PutUint32(rec[68+4*i:], v)
	}
	le.PutUint16(rec[88:], uint16(kind))
	le.PutUint16(rec[90:], flags)
	for i, b := range blobs {
		le.PutUint16(rec[96+2*i:], uint16(len(b)))
		rec = append(rec, b...)
	}
	return rec
}

func longArgv(n int) []string {
	argv := []string{"/bin/true"}
	for i := 1; i <= n; i++ {
		argv = append(argv, fmt.Sprint(i))
	}
	return argv
}

// feed passes records through a joiner and returns the events it delivers.
func feed(t *testing.T, j *argvJoiner, recs ...[]byte) []Event {
	t.Helper()
	var out []Event
	for _, r := range recs {
		ev, ok, err := j.record(r, 0)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			out = append(out, ev)
		}
	}
	return out
}

func TestArgvContinuationDecode(t *testing.T) {
	conts, _ := argvRecords(7, 42, 99, longArgv(8000))
	if len(conts) != 3 { // 38,894 bytes: 4,096 in the exec record, then 16,384 + 16,384 + 2,030
		t.Fatalf("%d continuation records", len(conts))
	}
	h, blobs, err := parseHeader(conts[1])
	if err != nil {
		t.Fatal(err)
	}
	if Kind(h.kind) != kindArgvCont || h.pid != 7 || h.a[0] != 2 || h.b[0] != 99 || len(blobs[0]) != argvChunk {
		t.Fatalf("continuation header %+v, %d bytes", h, len(blobs[0]))
	}
	// decode alone (no joiner) accepts it as a record of no interest.
	if _, err := decode(conts[0], 0); err != nil {
		t.Fatal(err)
	}
}

func TestArgvJoin(t *testing.T) {
	argv := longArgv(8000)
	conts, exec := argvRecords(7, 42, 99, argv)
	// Another process's records may come between them (other CPUs).
	oc, oe := argvRecords(8, 42, 100, longArgv(5000))
	other := rawRecord(KindFork, 9, 42, 0, [5]uint32{}, [5]uint64{})
	var j argvJoiner
	evs := feed(t, &j, conts[0], oc[0], other, conts[1], oc[1], conts[2], oe, exec)
	if len(evs) != 3 || evs[0].Kind != KindFork || evs[1].PID != 8 || evs[2].PID != 7 {
		t.Fatalf("events %+v", evs)
	}
	x := evs[2].Exec
	if x.ArgvTruncated || !slices.Equal(x.Argv, argv) {
		t.Fatalf("argv truncated=%v, %d args (want %d)", x.ArgvTruncated, len(x.Argv), len(argv))
	}
	if y := evs[1].Exec; y.ArgvTruncated || !slices.Equal(y.Argv, longArgv(5000)) {
		t.Fatalf("other argv truncated=%v, %d args", y.ArgvTruncated, len(y.Argv))
	}
	if n := j.truncated(42); n != 0 || len(j.pending) != 0 {
		t.Fatalf("truncated %d, pending %d", n, len(j.pending))
	}
	// A short argv has no continuation.
	c, e := argvRecords(7, 42, 101, []string{"/bin/true", "x"})
	if len(c) != 0 {
		t.Fatal("continuation for a short argv")
	}
	if evs := feed(t, &j, e); !slices.Equal(evs[0].Exec.Argv, []string{"/bin/true", "x"}) || evs[0].Exec.ArgvTruncated {
		t.Fatalf("short argv %+v", evs[0].Exec)
	}
}

// TestArgvMissingContinuation: a continuation that does not arrive, comes
// out of order, or belongs to another exec makes the argv truncated (a
// correct prefix) and counts the exec as truncated; never a wrong argv.
func TestArgvMissingContinuation(t *testing.T) {
	argv := longArgv(8000)
	whole := strings.Join(argv, "\x00")
	for name, order := range map[string][]int{
		"missing middle": {0, 2},
		"missing last":   {0, 1},
		"missing first":  {1, 2},
		"out of order":   {0, 2, 1},
		"duplicate":      {0, 1, 1, 2},
	} {
		t.Run(name, func(t *testing.T) {
			conts, exec := argvRecords(7, 42, 99, argv)
			var recs [][]byte
			for _, i := range order {
				recs = append(recs, conts[i])
			}
			var j argvJoiner
			evs := feed(t, &j, append(recs, exec)...)
			x := evs[0].Exec
			if !x.ArgvTruncated {
				t.Fatalf("argv not marked truncated (%d args)", len(x.Argv))
			}
			if got := strings.Join(x.Argv, "\x00"); !strings.HasPrefix(whole, got) {
				t.Fatalf("argv is not a prefix of the real one: %d args", len(x.Argv))
			}
			if n := j.truncated(42); n != 1 {
				t.Fatalf("truncated count %d, want 1", n)
			}
			j.forget(42)
			if n := j.truncated(42); n != 0 {
				t.Fatalf("after forget: %d", n)
			}
		})
	}
	// Continuations of an exec whose record was lost (another token) are
	// not joined to the next exec of the same pid.
	t.Run("orphan", func(t *testing.T) {
		old, _ := argvRecords(7, 42, 1, argv)
		conts, exec := argvRecords(7, 42, 2, argv)
		var j argvJoiner
		evs := feed(t, &j, old[0], old[1], conts[1], conts[2], exec)
		if x := evs[0].Exec; !x.ArgvTruncated || len(x.Argv) >= len(argv) {
			t.Fatalf("joined another exec's continuation: truncated=%v, %d args", x.ArgvTruncated, len(x.Argv))
		}
		_, short := argvRecords(7, 42, 3, []string{"sh"})
		evs = feed(t, &j, old[0], short)
		if x := evs[0].Exec; x.ArgvTruncated || !slices.Equal(x.Argv, []string{"sh"}) || len(j.pending) != 0 {
			t.Fatalf("short exec after an orphan: %+v", x)
		}
	})
	// The kernel flagged it (past 128 KiB): counted there, not again.
	t.Run("kernel flagged", func(t *testing.T) {
		conts, exec := argvRecords(7, 42, 99, argv)
		binary.LittleEndian.PutUint16(exec[90:], flagTruncated|flagArgvTruncated)
		var j argvJoiner
		evs := feed(t, &j, append(conts, exec)...)
		if x := evs[0].Exec; !x.ArgvTruncated || !slices.Equal(x.Argv, argv) || j.truncated(42) != 0 {
			t.Fatalf("truncated=%v args=%d count=%d", x.ArgvTruncated, len(x.Argv), j.truncated(42))
		}
	})
}
