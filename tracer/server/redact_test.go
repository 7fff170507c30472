package server

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/tracer/rootfs"
)

func TestRedactForms(t *testing.T) {
	secret := "Tok3n-Value/x"
	secrets := secretForms([]string{secret, "ab"})
	st := trace.Step{
		Processes: []trace.Process{{Argv: []string{"echo", base64.StdEncoding.EncodeToString([]byte(secret)), strings.ToUpper(hex.EncodeToString([]byte(secret)))}}},
		DNS:       []trace.DNSQuery{{Name: strings.ToLower(secret) + ".example"}},
		Files:     []trace.FileOp{{Path: "/tmp/Tok3n-Value%2Fx"}},
	}
	redact(&st, secrets)
	dt := strings.Join(append(st.Processes[0].Argv, st.DNS[0].Name, st.Files[0].Path), " ")
	if strings.Contains(strings.ToLower(dt), "tok3n") || strings.Contains(dt, base64.StdEncoding.EncodeToString([]byte(secret))) {
		t.Fatalf("a form of the secret survived: %s", dt)
	}
	if st.Redactions != 4 {
		t.Errorf("redactions %d, want 4", st.Redactions)
	}
	if st.Completeness.Complete || !strings.Contains(strings.Join(st.Completeness.Reasons, ";"), "shorter than") {
		t.Errorf("a short secret is not reported: %+v", st.Completeness)
	}
}

// TestRedactEscapedURLPath: a secret with both a '/' and a character a URL
// path escapes is redacted in the form a material URL's path keeps
// (redteam7's note).
func TestRedactEscapedURLPath(t *testing.T) {
	secret := "Tok3n Value/x"
	st := trace.Step{Files: []trace.FileOp{{Path: "/srv/Tok3n%20Value/x/file"}}}
	redact(&st, secretForms([]string{secret}))
	if strings.Contains(st.Files[0].Path, "Tok3n") || st.Redactions != 1 {
		t.Fatalf("escaped path form survived: %q (%d redactions)", st.Files[0].Path, st.Redactions)
	}
}

// TestUnreadSecretIsReported: a secret file the tracer cannot open cannot
// be redacted; the step says so instead of being sealed as if it were
// (redteam7's note).
func TestUnreadSecretIsReported(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tok"), []byte("s3cr3t-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.json")
	spec := `{"process":{"env":["A=1"]},"mounts":[` +
		`{"destination":"/run/secrets/tok","source":"` + filepath.Join(dir, "tok") + `"},` +
		`{"destination":"/run/secrets/gone","source":"` + filepath.Join(dir, "gone") + `"}]}`
	if err := os.WriteFile(cfg, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	vals := bundleSecrets(cfg, "", nil, []string{"/run/secrets/tok", "/run/secrets/gone"})
	st := trace.Step{Completeness: trace.Completeness{Complete: true}, Processes: []trace.Process{{Argv: []string{"echo", "s3cr3t-value"}}}}
	redact(&st, vals)
	if st.Processes[0].Argv[1] == "s3cr3t-value" {
		t.Errorf("the readable secret was not redacted")
	}
	if st.Completeness.Complete || !strings.Contains(strings.Join(st.Completeness.Reasons, ";"), "could not read") {
		t.Errorf("an unreadable secret file is not reported: %+v", st.Completeness)
	}
}

// TestSecretsWithoutBundle: a step whose plan names secrets but whose
// bundle could not be read gets the unread-secret mark, not nothing.
func TestSecretsWithoutBundle(t *testing.T) {
	f := newFixture(t, t.TempDir(), time.Second)
	step := steptag.NewID([]byte("secret-step"))
	part := trace.PlanPart{ID: "p", Platform: "linux/amd64", Steps: []trace.PlanStep{{StepID: step, SecretFiles: []string{"/run/secrets/tok"}}}}
	if err := f.srv.plans.add(buildA, trace.Requester{Kind: trace.RequesterFrontend, ContainerID: "fe"}, "root", part); err != nil {
		t.Fatal(err)
	}
	path := "/" + steptag.CgroupParent(step) + "/buildkit/c1"
	f.srv.noteSecrets(99, path, rootfs.Layout{}, buildA)
	if got := f.srv.takeSecrets(99); len(got) != 1 || got[0] != unreadSecret {
		t.Fatalf("secrets noted without a bundle: %q, want the unread mark", got)
	}
	// Nor when the build is unknown too: the step's record goes into the
	// trace of every build that planned the step.
	f.srv.noteSecrets(100, path, rootfs.Layout{}, "")
	got := f.srv.takeSecrets(100)
	if len(got) != 1 || got[0] != unreadSecret {
		t.Fatalf("secrets noted for an unattributed container: %q, want the unread mark", got)
	}

	// What such a step recorded is withheld: the values are unknown.
	st := trace.Step{
		Completeness: trace.Completeness{Complete: true, Reasons: []string{trace.ReasonNoDiff + "reading /tmp/s3cr3t: denied", "1 io_uring submissions were made"}},
		Processes:    []trace.Process{{Binary: "/bin/echo", Argv: []string{"echo", "s3cr3t"}, Cwd: "/"}},
		Files:        []trace.FileOp{{Path: "/tmp/s3cr3t"}},
		DNS:          []trace.DNSQuery{{Name: "s3cr3t.example"}},
		Diff:         trace.Diff{Changes: []trace.FileChange{{Path: "/tmp/s3cr3t"}}},
	}
	redact(&st, got)
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "s3cr3t") || st.Completeness.Complete || st.Redactions == 0 {
		t.Errorf("a step with an unread secret keeps what it recorded: %s", b)
	}
	if !slices.Contains(st.Completeness.Reasons, "1 io_uring submissions were made") {
		t.Errorf("the tracer's own reasons were lost: %q", st.Completeness.Reasons)
	}
}
