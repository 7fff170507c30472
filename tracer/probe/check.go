//go:build linux

package probe

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// Check reports which kernel feature the probe needs is missing, naming it.
// cgroupRoot is the cgroup2 mount the probe follows ("" for the default).
func Check(cgroupRoot string) error {
	if cgroupRoot == "" {
		cgroupRoot = DefaultCgroupRoot
	}
	var errs []error
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		errs = append(errs, fmt.Errorf("kernel BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF): %w", err))
	} else if spec, err := btf.LoadKernelSpec(); err != nil {
		errs = append(errs, fmt.Errorf("kernel BTF: %w", err))
	} else {
		for _, tp := range []string{"sched_process_exec", "sched_process_fork", "sched_process_exit",
			"cgroup_mkdir", "cgroup_rmdir", "sys_exit", "io_uring_submit_req"} {
			var td *btf.Typedef
			if err := spec.TypeByName("btf_trace_"+tp, &td); err != nil {
				errs = append(errs, fmt.Errorf("tracepoint %s: %w", tp, err))
			}
		}
		// Dentries, mounts and files are read with plain loads through it
		// (Linux 6.2).
		var fn *btf.Func
		if err := spec.TypeByName("bpf_rdonly_cast", &fn); err != nil {
			errs = append(errs, fmt.Errorf("kfunc bpf_rdonly_cast: %w", err))
		}
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(cgroupRoot, &fs); err != nil {
		errs = append(errs, fmt.Errorf("cgroup2 mount at %s: %w", cgroupRoot, err))
	} else if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		errs = append(errs, fmt.Errorf("cgroup2 mount at %s: file system type %#x is not cgroup2", cgroupRoot, fs.Type))
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		errs = append(errs, fmt.Errorf("BPF ring buffer map: %w", err))
	}
	// features' probe for Tracing uses a trampoline, refused on kernels that
	// still allow tp_btf; load a real, empty tp_btf program instead.
	if err := loadTPBTF("sched_process_exec"); err != nil {
		errs = append(errs, fmt.Errorf("BPF tp_btf programs: %w", err))
	}
	for _, pt := range []ebpf.ProgramType{ebpf.RawTracepoint, ebpf.CGroupSKB} {
		if err := features.HaveProgramType(pt); err != nil {
			errs = append(errs, fmt.Errorf("BPF program type %s: %w", pt, err))
		}
	}
	if err := features.HaveProgramHelper(ebpf.RawTracepoint, asm.FnLoop); err != nil {
		errs = append(errs, fmt.Errorf("BPF helper bpf_loop: %w", err))
	}
	return errors.Join(errs...)
}

func loadTPBTF(tp string) error {
	prog, err := emptyTPBTF(tp)
	if err != nil {
		return err
	}
	return prog.Close()
}

// emptyTPBTF loads a tp_btf program for tracepoint tp that only returns.
func emptyTPBTF(tp string) (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:       ebpf.Tracing,
		AttachType: ebpf.AttachTraceRawTp,
		AttachTo:   tp,
		License:    "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	})
}
