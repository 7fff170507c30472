package server

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/buildtrace/buildtrace/pkg/trace"
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
