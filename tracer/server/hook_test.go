package server

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/tracer/probe"
)

// holdSource records the syscall-hook holds the server takes (the probe's
// own attach and detach are tested in tracer/probe and test/e2e).
type holdSource struct {
	quietSource
	mu    sync.Mutex
	holds map[string]bool
}

func (h *holdSource) HoldSyscalls(key string, d time.Duration, alive func() bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.holds[key] = true
	return nil
}

func (h *holdSource) ReleaseSyscalls(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.holds, key)
}

func (h *holdSource) SyscallHook() probe.HookState {
	h.mu.Lock()
	defer h.mu.Unlock()
	return probe.HookState{Attached: len(h.holds) > 0, OnDemand: true, Holds: len(h.holds)}
}

func (h *holdSource) Ring() (uint64, uint64) { return 16 << 20, 4096 }

// TestPlanHoldsSyscallHook: a registered plan holds the syscall hook
// until its frontend gets the sealed trace; health reports the hook and
// the ring.
func TestPlanHoldsSyscallHook(t *testing.T) {
	f := newFixture(t, t.TempDir(), time.Second)
	hs := &holdSource{holds: map[string]bool{}}
	f.srv.cfg.Source = hs
	ctx := context.Background()
	c := f.client()
	f.frontendOf.Store(buildA)
	part := trace.PlanPart{ID: "sha256:p", Platform: "linux/amd64", Layers: []trace.LayerOp{}, Steps: []trace.PlanStep{}}
	if err := c.PutPlan(ctx, buildA, part); err != nil {
		t.Fatal(err)
	}
	h, err := c.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.SyscallHook == nil || !h.SyscallHook.Attached || h.SyscallHook.Holds != 1 || h.Ringbuf == nil || h.Ringbuf.Size != 16<<20 || h.Ringbuf.HighWater != 4096 {
		t.Fatalf("health after a plan: hook %+v, ring %+v", h.SyscallHook, h.Ringbuf)
	}
	if _, err := c.Seal(ctx, buildA, 0, map[string]string{"linux/amd64": "sha256:p"}); err != nil {
		t.Fatal(err)
	}
	if h := hs.SyscallHook(); h.Holds != 0 {
		t.Errorf("the sealed build still holds the hook: %+v", h)
	}
}
