package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
)

// TestSignedRequests: on the frontend's own connection, a request is taken
// only with a MAC of the frontend's key over its method, path, body and a
// fresh counter. test/e2e TestRedTeam4InjectIntoFrontendConnection writes
// such requests into a real frontend's connection.
func TestSignedRequests(t *testing.T) {
	f := newFixture(t, t.TempDir(), time.Second)
	f.frontendOf.Store(buildA)
	ctx := context.Background()
	part := trace.PlanPart{ID: "sha256:p", Platform: "linux/amd64", Layers: []trace.LayerOp{},
		Steps: []trace.PlanStep{{StepID: steptag.NewID([]byte("s")), Nonce: "chosen-by-the-sender"}}}
	body, _ := json.Marshal(part)
	url := "http://" + f.addr + tracerapi.TracePath + buildA + tracerapi.PlanSuffix
	send := func(key []byte, counter uint64, signed, sent []byte) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(sent))
		if key != nil {
			sum := sha256.Sum256(signed)
			signAs(req, key, counter, hex.EncodeToString(sum[:]))
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var e tracerapi.ErrorResponse
		json.NewDecoder(res.Body).Decode(&e)
		return res.StatusCode, e.Error
	}
	other := bytes.Repeat([]byte{9}, tracerapi.KeyLen)
	for _, c := range []struct {
		name         string
		key          []byte
		counter      uint64
		signed, sent []byte
		want         string
	}{
		{"unsigned", nil, 0, nil, body, "no valid Buildtrace-Auth"},
		{"another key", other, 1, body, body, "not signed with the frontend's key"},
		{"another body", f.key, 2, body, append(bytes.Clone(body), ' '), "not the one the frontend signed"},
	} {
		if code, msg := send(c.key, c.counter, c.signed, c.sent); code != http.StatusForbidden || !strings.Contains(msg, c.want) {
			t.Errorf("%s: %d %q, want 403 %q", c.name, code, msg, c.want)
		}
	}
	if code, msg := send(f.key, 5, body, body); code != http.StatusNoContent {
		t.Fatalf("signed: %d %q", code, msg)
	}
	if code, msg := send(f.key, 5, body, body); code != http.StatusForbidden || !strings.Contains(msg, "replay") {
		t.Errorf("the same counter again: %d %q, want 403 replay", code, msg)
	}
	// The step's nonce is the one the key gives, not the one sent.
	nonce, ok := f.srv.plans.stepNonce(buildA, part.Steps[0].StepID)
	if want := steptag.StepNonce(tracerapi.NonceRoot(f.key), part.Steps[0].StepID); !ok || nonce != want {
		t.Errorf("step nonce %q, want %q (derived from the key)", nonce, want)
	}
	// A step of a part not registered yet (another platform's, say) has
	// its nonce too: a container under the build's TRACEPARENT that lacks
	// it stays out, however early it starts (redteam5).
	later := "step-of-a-later-part"
	nonce, ok = f.srv.plans.stepNonce(buildA, later)
	if want := steptag.StepNonce(tracerapi.NonceRoot(f.key), later); !ok || nonce != want {
		t.Errorf("nonce of a step of no registered part %q, want %q", nonce, want)
	}
}

func TestCounterWindow(t *testing.T) {
	var cs counters
	now := time.Now()
	for _, n := range []uint64{3, 1, 2, 2000} {
		if !cs.use("fe", n, now) {
			t.Errorf("counter %d refused", n)
		}
	}
	for _, n := range []uint64{0, 1, 2, 3, 2000, 2000 - counterWindow} {
		if cs.use("fe", n, now) {
			t.Errorf("counter %d taken again, or too old to tell", n)
		}
	}
	if !cs.use("fe", 1999, now) || !cs.use("other", 1, now) {
		t.Error("a fresh counter in the window, or another frontend's, was refused")
	}
}

// signAs signs req with key as a frontend would, naming bodySum.
func signAs(req *http.Request, key []byte, counter uint64, bodySum string) {
	req.Header.Set(tracerapi.BodyHeader, bodySum)
	req.Header.Set(tracerapi.AuthHeader, strconv.FormatUint(counter, 10)+" "+hex.EncodeToString(tracerapi.RequestMAC(key, req.Method, req.URL.Path, bodySum, counter)))
}

// steppedSource is a probe whose clock of event times is behind the wall
// clock: the wall clock was stepped forward after the probe loaded.
type steppedSource struct {
	quietSource
	behind time.Duration
}

func (s steppedSource) Now() time.Time { return time.Now().Add(-s.behind) }

// TestPlanOnTheEventClock: a plan's arrival is stamped on the clock of
// event times, not the wall clock. With the wall clock an hour ahead of
// the event clock, a step that starts after the plan would otherwise have
// seemed to start before it, and been dropped from the build (and its step
// shown as cached).
func TestPlanOnTheEventClock(t *testing.T) {
	f := newFixture(t, t.TempDir(), time.Second)
	src := steppedSource{behind: time.Hour}
	f.srv.cfg.Source = src
	f.frontendOf.Store(buildA)
	ctx := context.Background()
	part := trace.PlanPart{ID: "sha256:p", Platform: "linux/amd64", Layers: []trace.LayerOp{},
		Steps: []trace.PlanStep{{StepID: steptag.NewID([]byte("s"))}}}
	c := f.client()
	before := src.Now()
	if err := c.PutPlan(ctx, buildA, part); err != nil {
		t.Fatal(err)
	}
	after := src.Now()
	_, parts, _ := f.srv.plans.get(buildA)
	if len(parts) != 1 || parts[0].Received.Before(before) || parts[0].Received.After(after) {
		t.Fatalf("plan received at %v, want between %v and %v (the event clock)", parts, before, after)
	}
	env, err := c.Seal(ctx, buildA, 0, map[string]string{"linux/amd64": "sha256:p"})
	if err != nil {
		t.Fatal(err)
	}
	if b := f.verify(env); b.GeneratedAt.Before(after) || b.GeneratedAt.After(src.Now()) {
		t.Errorf("trace generated at %v, not on the event clock (%v)", b.GeneratedAt, after)
	}
}
