package probe

import "sync"

// The kernel sends an exec's argv in pieces when it is longer than one
// blob: continuation records (kindArgvCont, argvChunk bytes each at most,
// argvMax in all) are written before the exec record by the same program
// run, so they reach Run before it, in order; records of other processes
// (other CPUs) may come between them. A continuation carries the exec's
// pid and tid, a token (b[0]) the exec record repeats, and its sequence
// number (a[0], from 1). The exec record says how many continuations were
// written (a[2]) and how many argv bytes they hold (b[1]).
const (
	argvFirst = 4096      // BLOB_MAX: argv bytes in the exec record
	argvChunk = 16384     // DATA_SZ: argv bytes in a continuation record at most
	argvMax   = 128 << 10 // ARGV_MAX: argv bytes kept per exec
	// maxPendingArgv bounds the processes with continuations waiting for
	// their exec record. Only a lost exec record (ring full, counted as
	// dropped) leaves them waiting; past the bound they are forgotten.
	maxPendingArgv = 4096
)

// argvParts are the continuations seen so far for one process's exec.
type argvParts struct {
	token  uint64
	next   uint32 // sequence number expected next
	data   []byte
	broken bool // a continuation was missing or out of order
}

// argvJoiner joins continuation records to their exec. An exec whose
// continuations do not all arrive in order gets the argv that is known to
// be right (its record's first chunk and the continuations in order up to
// the first gap), is marked ArgvTruncated, and is counted as a truncated
// event of its cgroup (lost), added to the kernel's count by Stats.
type argvJoiner struct {
	pending map[uint32]*argvParts // by pid

	mu   sync.Mutex
	lost map[uint64]uint64 // cgroup ID → execs whose argv could not be joined
}

// cont takes a continuation record.
func (j *argvJoiner) cont(h header, data []byte) {
	if j.pending == nil {
		j.pending = make(map[uint32]*argvParts)
	}
	seq, token := h.a[0], h.b[0]
	p := j.pending[h.pid]
	if p == nil || p.token != token {
		if p == nil && len(j.pending) >= maxPendingArgv {
			clear(j.pending)
		}
		p = &argvParts{token: token, next: 1}
		j.pending[h.pid] = p
	}
	if p.broken {
		return
	}
	if seq != p.next || len(p.data)+len(data) > argvMax-argvFirst {
		p.broken = true
		return
	}
	p.data = append(p.data, data...)
	p.next++
}

// exec completes x's argv from the continuations of its process; first is
// the exec record's argv blob.
func (j *argvJoiner) exec(h header, cgroupID uint64, first []byte, x *ExecInfo) {
	want, wantBytes := h.a[2], h.b[1]
	p := j.pending[h.pid]
	if p != nil {
		delete(j.pending, h.pid)
	}
	if want == 0 {
		return // a short argv: all in the exec record (p, if any, was an orphan)
	}
	ok := p != nil && p.token == h.b[0] && !p.broken && p.next-1 == want &&
		uint64(len(p.data)) == wantBytes && len(first) == argvFirst
	if ok {
		argv := make([]byte, 0, len(first)+len(p.data))
		argv = append(append(argv, first...), p.data...)
		x.Argv = splitArgv(argv)
		return
	}
	// Keep what is known to be right: the first chunk and, when it is
	// whole, the continuations that came in order.
	if p != nil && p.token == h.b[0] && len(first) == argvFirst && len(p.data) > 0 {
		argv := make([]byte, 0, len(first)+len(p.data))
		argv = append(append(argv, first...), p.data...)
		x.Argv = splitArgv(argv)
	}
	x.ArgvTruncated = true
	if h.flags&flagTruncated == 0 { // else the kernel counted it
		j.mu.Lock()
		if j.lost == nil {
			j.lost = make(map[uint64]uint64)
		}
		j.lost[cgroupID]++
		j.mu.Unlock()
	}
}

// truncated returns the execs of a cgroup whose argv could not be joined.
func (j *argvJoiner) truncated(cgroupID uint64) uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.lost[cgroupID]
}

func (j *argvJoiner) forget(cgroupID uint64) {
	j.mu.Lock()
	delete(j.lost, cgroupID)
	j.mu.Unlock()
}

// record decodes one ring buffer record, joining argv continuations: ok is
// false for a record that is not an event of its own (a continuation).
func (j *argvJoiner) record(rec []byte, bootWall int64) (ev Event, ok bool, err error) {
	h, blobs, err := parseHeader(rec)
	if err != nil {
		return Event{}, false, err
	}
	if Kind(h.kind) == kindArgvCont {
		j.cont(h, blobs[0])
		return Event{}, false, nil
	}
	ev, err = decodeParsed(h, blobs, bootWall)
	if err != nil {
		return Event{}, false, err
	}
	if ev.Kind == KindExec {
		j.exec(h, ev.CgroupID, blobs[1], ev.Exec)
	}
	return ev, true, nil
}
