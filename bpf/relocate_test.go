package bpf

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// Each object is compiled against x86's vmlinux.h and relocated (CO-RE) at
// load against the running kernel's BTF. These tests do that relocation
// without loading anything, so an object can be checked against a kernel
// this machine does not run: every field it reads must exist there, and
// every tracepoint it attaches to.

// arm64KernelEnv names a Debian arm64 kernel image (vmlinuz: a raw or
// gzipped Image), a vmlinux ELF or raw BTF; `make check-arm64` fetches one.
const arm64KernelEnv = "BUILDTRACE_ARM64_KERNEL"

// relocate applies the CO-RE relocations of every program in the object
// against target and returns what could not be resolved, and the
// tracepoints the programs attach to that target lacks.
func relocate(t *testing.T, object string, target *btf.Spec) (bad, missing []string) {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(object)
	if err != nil {
		t.Fatalf("reading %s: %v", object, err)
	}
	for name, p := range spec.Programs {
		var relos []*btf.CORERelocation
		var at []int
		for i, ins := range p.Instructions {
			if r := btf.CORERelocationMetadata(&ins); r != nil {
				relos = append(relos, r)
				at = append(at, i)
			}
		}
		if len(relos) > 0 {
			fix, err := btf.CORERelocate(relos, []*btf.Spec{target}, binary.LittleEndian, func(btf.Type) (btf.TypeID, error) { return 1, nil })
			if err != nil {
				bad = append(bad, fmt.Sprintf("%s: %v", name, err))
				continue
			}
			// A struct read through alternatives (kernfs_node's parent
			// and its flavour kernfs_node___old, behind
			// bpf_core_field_exists) leaves the other alternative
			// poisoned in a dead branch: that is fine while one resolves.
			names := map[string]map[string]bool{}
			resolved := map[string]bool{}
			for i, f := range fix {
				n := relos[i].String()
				base := flavourBase(relocType(n))
				if names[base] == nil {
					names[base] = map[string]bool{}
				}
				names[base][relocType(n)] = true
				if !strings.Contains(f.String(), "poison") {
					resolved[base] = true
				}
			}
			for i, f := range fix {
				base := flavourBase(relocType(relos[i].String()))
				if strings.Contains(f.String(), "poison") && !(len(names[base]) > 1 && resolved[base]) {
					bad = append(bad, fmt.Sprintf("%s: %s at %v", name, relos[i], p.Instructions[at[i]]))
				}
			}
		}
		// A program with no attach point (sync_marker) is only test-run.
		if (p.Type == ebpf.Tracing || p.Type == ebpf.RawTracepoint) && p.AttachTo != "" {
			var td *btf.Typedef
			if err := target.TypeByName("btf_trace_"+p.AttachTo, &td); err != nil {
				missing = append(missing, p.AttachTo)
			}
		}
	}
	return bad, missing
}

// kernelBTF reads BTF from a vmlinux ELF, raw BTF, or a kernel Image (raw
// or gzipped), where it lies in the .BTF section's bytes with no ELF
// header to find it by: the first BTF header that parses is taken.
func kernelBTF(path string) (*btf.Spec, error) {
	if s, err := btf.LoadSpec(path); err == nil {
		return s, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
		z, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if b, err = io.ReadAll(z); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	// struct btf_header: magic 0xeB9F, version 1, flags 0, hdr_len 24,
	// type_off, type_len, str_off, str_len.
	magic := []byte{0x9f, 0xeb, 1, 0, 24, 0, 0, 0}
	for off := 0; ; off++ {
		i := bytes.Index(b[off:], magic)
		if i < 0 {
			return nil, fmt.Errorf("%s: no BTF found (a kernel built with CONFIG_DEBUG_INFO_BTF?)", path)
		}
		off += i
		if off+24 > len(b) {
			continue
		}
		h := b[off+8 : off+24]
		strOff, strLen := binary.LittleEndian.Uint32(h[8:]), binary.LittleEndian.Uint32(h[12:])
		end := off + 24 + int(strOff) + int(strLen)
		if strLen < 1<<20 || end > len(b) {
			continue // too small for a kernel's: a module's or a false match
		}
		if s, err := btf.LoadSpecFromReader(bytes.NewReader(b[off:end])); err == nil {
			return s, nil
		}
	}
}

// TestObjectRelocatesOnThisKernel checks this architecture's object
// against the running kernel, as the tracer loads it.
func TestObjectRelocatesOnThisKernel(t *testing.T) {
	objects := map[string]string{"amd64": "buildtrace_x86_bpfel.o", "arm64": "buildtrace_arm64_bpfel.o"}
	obj, ok := objects[runtime.GOARCH]
	if !ok {
		t.Skipf("SKIP: no object for %s", runtime.GOARCH)
	}
	kernel, err := btf.LoadKernelSpec()
	if errors.Is(err, btf.ErrNotSupported) || errors.Is(err, os.ErrNotExist) {
		t.Skipf("SKIP: this kernel has no BTF: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	bad, missing := relocate(t, obj, kernel)
	for _, b := range bad {
		t.Error(b)
	}
	for _, m := range missing {
		t.Errorf("this kernel has no tracepoint %s", m)
	}
}

// renamed are tracepoints the programs attach to by a name older kernels
// gave them another: such a kernel cannot load the object on any
// architecture, which is no matter of the arm64 port; it is logged.
var renamed = map[string]string{"io_uring_submit_req": "io_uring_submit_sqe"}

// TestArm64ObjectRelocates checks the arm64 object against a real arm64
// kernel's BTF ($BUILDTRACE_ARM64_KERNEL), and, to show the check can
// fail, that the x86 object does not relocate there.
func TestArm64ObjectRelocates(t *testing.T) {
	path := os.Getenv(arm64KernelEnv)
	if path == "" {
		t.Skipf("SKIP: set %s to an arm64 kernel image or BTF (make check-arm64 does)", arm64KernelEnv)
	}
	kernel, err := kernelBTF(path)
	if err != nil {
		t.Fatal(err)
	}
	var regs *btf.Struct
	if err := kernel.TypeByName("pt_regs", &regs); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if !hasMember(regs, "syscallno") {
		t.Fatalf("%s: struct pt_regs has no syscallno: not an arm64 kernel", path)
	}
	bad, missing := relocate(t, "buildtrace_arm64_bpfel.o", kernel)
	for _, b := range bad {
		t.Error(b)
	}
	for _, m := range missing {
		var td *btf.Typedef
		if old, ok := renamed[m]; ok && kernel.TypeByName("btf_trace_"+old, &td) == nil {
			t.Logf("NOTE: this kernel names tracepoint %s %s: the tracer does not load on it yet, on any architecture", m, old)
			continue
		}
		t.Errorf("this kernel has no tracepoint %s", m)
	}
	x86, _ := relocate(t, "buildtrace_x86_bpfel.o", kernel)
	if !strings.Contains(strings.Join(x86, "\n"), `sys_exit: CORERelocation(byte_off, Struct:"pt_regs"`) {
		t.Errorf("the x86 object relocated against an arm64 kernel (the check cannot fail?): %q", x86)
	}
	t.Logf("the x86 object does not: %d unresolved relocations (as it should)", len(x86))
}

func hasMember(s *btf.Struct, name string) bool {
	for _, m := range s.Members {
		if m.Name == name {
			return true
		}
		if inner, ok := m.Type.(*btf.Struct); ok && m.Name == "" && hasMember(inner, name) {
			return true
		}
	}
	return false
}

// relocType is the quoted type name in a relocation's description.
func relocType(desc string) string {
	_, rest, ok := strings.Cut(desc, `"`)
	if !ok {
		return desc
	}
	name, _, _ := strings.Cut(rest, `"`)
	return name
}

// flavourBase strips a CO-RE flavour suffix ("___old").
func flavourBase(name string) string {
	base, _, _ := strings.Cut(name, "___")
	return base
}
