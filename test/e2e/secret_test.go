package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/test/lab"
)

// TestSecretsNeverStored: a --secret (as a file and as an environment
// variable) used on a command line and in a URL appears nowhere in the
// attestation, the tracer's store or its log; the step says it was
// redacted.
func TestSecretsNeverStored(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	fileSecret := "filesecret-" + randHex(12)
	envSecret := "envsecret-" + randHex(12)
	dir := lab.WriteContext(t, map[string]string{
		"Dockerfile": "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\n" +
			"RUN --mount=type=secret,id=tok --mount=type=secret,id=envtok,env=API_TOKEN " +
			"sh -c 'echo $(cat /run/secrets/tok) >/dev/null; wget -q -O /dev/null \"http://127.0.0.1:5000/v2/?token=$API_TOKEN\" || true; " +
			"touch /tmp/$(cat /run/secrets/tok); echo " + randHex(8) + "'\n",
	})
	secretFile := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(secretFile, []byte(fileSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ref := l.Ref("secret")
	t.Setenv("BUILDTRACE_TEST_SECRET", envSecret)
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true, Args: []string{
		"--secret", "id=tok,src=" + secretFile,
		"--secret", "id=envtok,env=BUILDTRACE_TEST_SECRET",
	}})
	p := runtimeTrace(t, ctx, l, ref)
	img := l.Image(t, ctx, ref)
	att, _ := img.ForManifest(img.Manifests[0].Descriptor.Digest)
	for _, st := range att.Statements {
		for _, secret := range []string{fileSecret, envSecret} {
			if strings.Contains(string(st.Data), secret) {
				t.Errorf("the attestation (%s) holds a secret value", st.PredicateType)
			}
		}
	}
	// The signed payload is base64 in the statement: show decodes it.
	out, code := runCLI(t, l, "show", ref, "--key", l.TracerPub)
	expectCode(t, out, code, 0)
	for _, secret := range []string{fileSecret, envSecret} {
		if strings.Contains(out, secret) {
			t.Errorf("show prints a secret value:\n%s", out)
		}
	}
	if !strings.Contains(out, "[REDACTED-SECRET]") {
		t.Errorf("show does not show where the secret was redacted:\n%s", out)
	}
	for _, s := range p.Buildtrace.Steps {
		if len(s.Runs) == 0 {
			t.Fatalf("step %s did not run", s.Instruction)
		}
	}
	for _, f := range append([]string{filepath.Join(l.Dir, "logs", "buildtraced.log")}, tracerStoreFiles(t, l)...) {
		dt, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{fileSecret, envSecret} {
			if strings.Contains(string(dt), secret) {
				t.Errorf("%s holds a secret value", f)
			}
		}
	}
}
