// Command hostload makes the system calls the performance benchmarks
// (test/e2e/*bench*_test.go) time: on the host, untraced, to measure what
// buildtraced costs every other process, and inside RUN steps (it is
// static) to make exec and file events. Every mode prints
//
//	ELAPSED <start> <end>
//
// in seconds of CLOCK_BOOTTIME, the clock of /proc/uptime, which the host
// and every container share, so the benchmark can line up steps that run
// side by side.
//
//	hostload syscalls [-reads 3000000] [-opens 300000] [-file /etc/hostname]
//	hostload exec [-n 10000] [-bin /bin/true]
//	hostload storm [-duration 30s] [-rate 0] [-dir /x] [-exec-every 2000] [-max-changes 400000]
//	hostload busy [-duration 10s] [-dir /x]
//	hostload run CMD [ARG...]   (times CMD, e.g. a compile)
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// atFDCWD is AT_FDCWD as the system call's int argument.
var atFDCWD = unix.AT_FDCWD

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: hostload syscalls|exec|storm|busy [flags]"))
	}
	var err error
	switch mode, args := os.Args[1], os.Args[2:]; mode {
	case "syscalls":
		err = syscalls(args)
	case "exec":
		err = execs(args)
	case "storm":
		err = storm(args)
	case "busy":
		err = busy(args)
	case "run":
		err = timed(args)
	default:
		err = fmt.Errorf("unknown mode %q: want syscalls, exec, storm, busy or run", mode)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "hostload:", err)
	os.Exit(1)
}

// boottime is CLOCK_BOOTTIME in seconds (/proc/uptime's clock).
func boottime() float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		fail(fmt.Errorf("clock_gettime(CLOCK_BOOTTIME): %w", err))
	}
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

func elapsed(start float64) {
	fmt.Printf("ELAPSED %.6f %.6f\n", start, boottime())
}

// syscalls is the host-cost workload: reads of one byte from /dev/zero and
// open+close of a file, none of which any tracer hook reports for an
// untracked process; every one of them passes the syscall tracepoints.
func syscalls(args []string) error {
	fs := flag.NewFlagSet("syscalls", flag.ExitOnError)
	reads := fs.Int("reads", 3_000_000, "read(2) calls of one byte from /dev/zero")
	opens := fs.Int("opens", 300_000, "open(2)+close(2) pairs")
	file := fs.String("file", "/etc/hostname", "file to open read-only")
	_ = fs.Parse(args)
	zero, err := unix.Open("/dev/zero", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening /dev/zero: %w", err)
	}
	defer unix.Close(zero)
	buf := make([]byte, 1)
	start := boottime()
	for range *reads {
		if _, err := unix.Read(zero, buf); err != nil {
			return fmt.Errorf("reading /dev/zero: %w", err)
		}
	}
	for range *opens {
		fd, err := unix.Open(*file, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening %s: %w", *file, err)
		}
		unix.Close(fd)
	}
	elapsed(start)
	return nil
}

// run forks and execs bin and waits for it.
func run(bin string) error {
	pid, err := syscall.ForkExec(bin, []string{bin}, &syscall.ProcAttr{Env: []string{}})
	if err != nil {
		return fmt.Errorf("exec %s: %w", bin, err)
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
		return fmt.Errorf("waiting for %s: %w", bin, err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		return fmt.Errorf("%s ended with status %v", bin, ws)
	}
	return nil
}

// execs is the exec storm: n fork+exec+wait of a static binary.
func execs(args []string) error {
	fs := flag.NewFlagSet("exec", flag.ExitOnError)
	n := fs.Int("n", 10_000, "fork+exec+wait count")
	bin := fs.String("bin", "/bin/true", "static binary to run")
	_ = fs.Parse(args)
	start := boottime()
	for range *n {
		if err := run(*bin); err != nil {
			return err
		}
	}
	elapsed(start)
	return nil
}

// storm makes events the tracer reports as fast as allowed: read-only
// opens of 64 files (each one file event; the tracer keeps distinct read
// paths, so these do not grow the trace; closed 256 at a time), a chmod every 16th event until
// max-changes (file changes, which the trace lists one by one), and an
// exec of /bin/true every exec-every events (fork, exec and exit events).
// With rate > 0 it paces itself to that many calls per second.
func storm(args []string) error {
	fs := flag.NewFlagSet("storm", flag.ExitOnError)
	duration := fs.Duration("duration", 30*time.Second, "how long to run")
	rate := fs.Float64("rate", 0, "file calls per second (0: as fast as possible)")
	dir := fs.String("dir", "/x", "directory for the files (a tmpfs)")
	execEvery := fs.Int("exec-every", 2000, "one exec per this many file calls (0: none)")
	maxChanges := fs.Int("max-changes", 400_000, "chmod calls at most (the tracer lists each)")
	_ = fs.Parse(args)
	// The paths as C strings, made once: unix.Open and unix.Chmod would
	// allocate one per call, and the garbage collector's work would be
	// the generator's, not the tracer's.
	paths := make([]*byte, 64)
	for i := range paths {
		p := filepath.Join(*dir, "f"+strconv.Itoa(i))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			return err
		}
		b, err := unix.BytePtrFromString(p)
		if err != nil {
			return err
		}
		paths[i] = b
	}
	var opens, chmods, execs int
	held := make([]int, 0, 256)
	time.Sleep(time.Millisecond) // the runtime's poller opens its descriptors now, not amid ours
	begin := time.Now()
	start := boottime()
	for n := 0; ; n++ {
		if n&255 == 0 {
			since := time.Since(begin)
			if since >= *duration {
				break
			}
			if *rate > 0 {
				if ahead := time.Duration(float64(n)/(*rate)*1e9) - since; ahead > 0 {
					time.Sleep(ahead)
				}
			}
		}
		p := paths[n&63]
		switch {
		case *execEvery > 0 && n%*execEvery == *execEvery-1:
			if err := run("/bin/true"); err != nil {
				return err
			}
			execs++
		case n&15 == 15 && chmods < *maxChanges:
			if _, _, errno := unix.Syscall6(unix.SYS_FCHMODAT, uintptr(atFDCWD), uintptr(unsafe.Pointer(p)), 0o644, 0, 0, 0); errno != 0 {
				return fmt.Errorf("chmod %s: %w", unix.BytePtrToString(p), errno)
			}
			chmods++
		default:
			r, _, errno := unix.Syscall6(unix.SYS_OPENAT, uintptr(atFDCWD), uintptr(unsafe.Pointer(p)), unix.O_RDONLY|unix.O_CLOEXEC, 0, 0, 0)
			if errno != 0 {
				return fmt.Errorf("opening %s: %w", unix.BytePtrToString(p), errno)
			}
			fd := int(r)
			// Keep up to 256 open and close them with close_range: nearly
			// one system call per event.
			held = append(held, fd)
			if len(held) == cap(held) {
				if err := closeAll(held); err != nil {
					return err
				}
				held = held[:0]
			}
			opens++
		}
	}
	fmt.Printf("STORM opens %d chmods %d execs %d\n", opens, chmods, execs)
	elapsed(start)
	return nil
}

// busy keeps a build step doing steady, modest work (a file create, write
// and unlink and an exec every few milliseconds) while the host workload
// is measured beside it.
func busy(args []string) error {
	fs := flag.NewFlagSet("busy", flag.ExitOnError)
	duration := fs.Duration("duration", 10*time.Second, "how long to run")
	dir := fs.String("dir", "/x", "directory for the files")
	_ = fs.Parse(args)
	start := boottime()
	for i := 0; time.Duration((boottime()-start)*1e9) < *duration; i++ {
		p := filepath.Join(*dir, "b"+strconv.Itoa(i%100))
		if err := os.WriteFile(p, []byte("busy"), 0o644); err != nil {
			return err
		}
		if err := os.Remove(p); err != nil {
			return err
		}
		if i%10 == 0 {
			if err := run("/bin/true"); err != nil {
				return err
			}
		}
		time.Sleep(time.Millisecond)
	}
	elapsed(start)
	return nil
}

// timed runs a command (looked up in PATH) and times it, so a step's time
// is measured the same way whatever tools its image has.
func timed(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("run: no command")
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	start := boottime()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%v: %w", args, err)
	}
	elapsed(start)
	return nil
}

// closeAll closes fds with one close_range per run of consecutive
// numbers (the runtime's own descriptors sit between them).
func closeAll(fds []int) error {
	slices.Sort(fds)
	for i := 0; i < len(fds); {
		j := i + 1
		for j < len(fds) && fds[j] == fds[j-1]+1 {
			j++
		}
		if err := unix.CloseRange(uint(fds[i]), uint(fds[j-1]), 0); err != nil {
			return fmt.Errorf("close_range: %w", err)
		}
		i = j
	}
	return nil
}
